"""Spin's *locked app* JSON (crates/locked-app) read into, and written from, an ``AppManifest``.

A locked app is what ``spin registry push`` stores in an OCI artifact and what Spin runs: the manifest
with every variable, trigger and component resolved, and content referenced by digest (``sha256:…``),
by ``file://`` URL, or inline (base64). Where the content lives is the caller's business: the reader
asks a :class:`ContentResolver` for local paths, so the same code serves OCI layouts (by digest) and
lock files written by ``spin`` itself (by file URL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from .errors import ManifestError
from .manifest import (
    AppManifest,
    ComponentSpec,
    FieldReader,
    FileMount,
    HttpTrigger,
    VariableDecl,
    guest_files,
    id_problem,
    outbound_hosts_problem,
    sha256_file,
    template_problem,
)

WASM_CONTENT_TYPE = "application/wasm"
INLINE_MAX_SIZE = 128  # Spin's DEFAULT_CONTENT_REF_INLINE_MAX_SIZE: smaller files travel inline
# Host requirements this shim meets; Spin refuses an app that needs others (locked.rs SUPPORTED_HOST_REQS).
SUPPORTED_HOST_REQUIREMENTS = ("local_service_chaining",)
_MUST_UNDERSTAND = ("host_requirements", "component_host_requirements")
_TRIGGER_CONFIG_KEYS = ("component", "route", "executor", "static_response")


class ContentResolver(Protocol):
    """Turns locked-app content references into files on this machine."""

    def wasm(self, component_id: str, ref: Mapping[str, Any], key: str) -> Path:
        """Local path of a component's Wasm source (``ref`` is the ``source`` object)."""
        ...

    def files(self, component_id: str, files: list[Mapping[str, Any]], key: str) -> tuple[FileMount, ...]:
        """Mounts for a component's ``files`` entries (each a content ref plus ``path``)."""
        ...


def decode_inline(ref: Mapping[str, Any]) -> bytes | None:
    """The bytes of an inline content ref (base64, with or without padding), or None."""
    text = ref.get("inline")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("`inline` must be a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as e:
        raise ValueError(f"`inline` is not valid base64: {e}") from None


def safe_relative_path(text: str) -> str | None:
    """A files[].path as a relative POSIX path with only normal parts, or None if it could escape."""
    rel = text.lstrip("/")
    parts = rel.split("/")
    if not rel or any(part in ("", ".", "..") for part in parts) or "\\" in rel:
        return None
    return rel


def file_url_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL, or None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


# ---------------------------------------------------------------------------------------------
# Reading


def app_from_locked(
    locked: Any, *, file: str | Path, origin: str, base_dir: Path, content: ContentResolver
) -> AppManifest:
    """Validate a parsed locked app and build the AppManifest, fetching content through ``content``."""
    return _LockedReader(file, content).read(locked, origin=origin, base_dir=base_dir)


def load_locked_app_file(path: Path) -> AppManifest:
    """Load a lock file written by ``spin`` (content by ``file://`` URL or inline is not needed)."""
    path = Path(path).absolute()
    try:
        locked = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ManifestError(path, "", f"cannot read locked app JSON: {e}") from None
    return app_from_locked(locked, file=path, origin=str(path), base_dir=path.parent, content=_FileUrlContent(path))


class _LockedReader(FieldReader):
    def __init__(self, file: str | Path, content: ContentResolver) -> None:
        super().__init__(file)
        self.content = content

    def read(self, locked: Any, *, origin: str, base_dir: Path) -> AppManifest:
        locked = self.table(locked, "")
        version = locked.get("spin_lock_version")
        if type(version) is not int or not 0 <= version <= 1:
            self.fail("spin_lock_version", f"unsupported locked app version {version!r}; expected 0 or 1")
        self.requirements(locked)
        metadata = self.table(locked.get("metadata", {}), "metadata")
        name = self.string(metadata.get("name"), "metadata.name")
        base = "/"
        http_meta = self.table(metadata.get("triggers", {}), "metadata.triggers").get("http")
        if http_meta is not None:
            base = self.http_base(http_meta, "metadata.triggers.http")
        variables = self.variables(locked.get("variables", {}))
        components_raw = self.array(locked.get("components"), "components")
        components = {}
        for i, raw in enumerate(components_raw):
            spec = self.component(raw, f"components[{i}]", variables)
            if spec.id in components:
                self.fail(f"components[{i}].id", f"duplicate component id {spec.id!r}")
            components[spec.id] = spec
        triggers = self.triggers(locked.get("triggers"), components)
        return AppManifest(
            name=name,
            version=self.string(metadata.get("version", ""), "metadata.version") or None,
            description=self.string(metadata.get("description", ""), "metadata.description") or None,
            base_dir=base_dir,
            origin=origin,
            variables=variables,
            http_triggers=triggers,
            components=components,
            http_base=base,
        )

    def requirements(self, locked: dict[str, Any]) -> None:
        for i, item in enumerate(self.array(locked.get("must_understand", []), "must_understand")):
            if item not in _MUST_UNDERSTAND:
                self.fail(f"must_understand[{i}]", f"this app needs {item!r}, which kubespin does not understand")
        self.host_requirements(locked.get("host_requirements", {}), "host_requirements")

    def host_requirements(self, value: Any, key: str) -> None:
        for name, level in self.table(value, key).items():
            if level != "optional" and name not in SUPPORTED_HOST_REQUIREMENTS:
                self.fail(f"{key}.{name}", "this app requires a host feature kubespin does not support")

    def variables(self, value: Any) -> dict[str, VariableDecl]:
        result = {}
        for name, decl in self.table(value, "variables").items():
            key = f"variables.{name}"
            if problem := id_problem(name, "_", lower=True):
                self.fail(key, f"invalid variable name: {problem}")
            decl = self.table(decl, key)
            default = self.string(decl["default"], f"{key}.default") if "default" in decl else None
            secret = self.boolean(decl.get("secret", False), f"{key}.secret")
            description = self.string(decl.get("description", ""), f"{key}.description") or None
            result[name] = VariableDecl(name, default, default is None, secret, description)
        return result

    def triggers(self, value: Any, components: Mapping[str, ComponentSpec]) -> tuple[HttpTrigger, ...]:
        triggers = []
        for i, raw in enumerate(self.array(value, "triggers")):
            key = f"triggers[{i}]"
            trigger = self.table(raw, key)
            kind = self.string(trigger.get("trigger_type"), f"{key}.trigger_type")
            if kind != "http":
                self.fail(f"{key}.trigger_type", f"trigger type {kind!r} is not supported by kubespin; only http is")
            if trigger.get("trigger_dependencies"):
                self.fail(f"{key}.trigger_dependencies", "trigger dependencies (middleware) are not supported yet")
            config = self.table(trigger.get("trigger_config"), f"{key}.trigger_config")
            self.only_keys(config, f"{key}.trigger_config", _TRIGGER_CONFIG_KEYS)
            if "static_response" in config:
                self.fail(f"{key}.trigger_config.static_response", "static responses are not supported yet")
            if "executor" in config:
                self.executor(config["executor"], f"{key}.trigger_config.executor")
            component = self.string(config.get("component"), f"{key}.trigger_config.component")
            if component not in components:
                self.fail(f"{key}.trigger_config.component", f"no component {component!r} in this app")
            route, private = self.route(config.get("route"), f"{key}.trigger_config.route")
            tid = self.string(trigger.get("id", ""), f"{key}.id")
            triggers.append(HttpTrigger(component=component, route=route, private=private, id=tid))
        return tuple(triggers)

    def component(self, raw: Any, key: str, variables: Mapping[str, VariableDecl]) -> ComponentSpec:
        component = self.table(raw, key)
        cid = self.string(component.get("id"), f"{key}.id")
        if problem := id_problem(cid, "-"):
            self.fail(f"{key}.id", f"invalid component id {cid!r}: {problem}")
        for deps in ("dependencies", "trigger_dependencies"):
            if component.get(deps):
                self.fail(
                    f"{key}.{deps}",
                    "component dependencies are not supported by kubespin yet; push the "
                    "app with `spin registry push` (which composes them) instead",
                )
        self.host_requirements(component.get("host_requirements", {}), f"{key}.host_requirements")
        metadata = self.table(component.get("metadata", {}), f"{key}.metadata")
        config = self.string_table(component.get("config", {}), f"{key}.config")
        for name, template in config.items():
            if problem := template_problem(template, variables):
                self.fail(f"{key}.config.{name}", problem)
        hosts = self.strings(metadata.get("allowed_outbound_hosts", []), f"{key}.metadata.allowed_outbound_hosts")
        if problem := outbound_hosts_problem(hosts, variables):
            self.fail(f"{key}.metadata.allowed_outbound_hosts", problem)
        source = self.table(component.get("source"), f"{key}.source")
        files = [
            self.table(f, f"{key}.files[{i}]")
            for i, f in enumerate(self.array(component.get("files", []), f"{key}.files"))
        ]
        return ComponentSpec(
            id=cid,
            source=self.content.wasm(cid, source, f"{key}.source"),
            files=self.content.files(cid, files, f"{key}.files") if files else (),
            environment=self.string_table(component.get("env", {}), f"{key}.env"),
            allowed_outbound_hosts=tuple(hosts),
            key_value_stores=self.labels(metadata.get("key_value_stores", []), f"{key}.metadata.key_value_stores"),
            sqlite_databases=self.labels(metadata.get("databases", []), f"{key}.metadata.databases"),
            ai_models=tuple(self.strings(metadata.get("ai_models", []), f"{key}.metadata.ai_models")),
            variables=config,
            description=self.string(metadata.get("description", ""), f"{key}.metadata.description") or None,
        )


class _FileUrlContent:
    """Content of a lock file written by ``spin``: ``file://`` URLs to wasm files and asset dirs."""

    def __init__(self, file: Path) -> None:
        self.reader = FieldReader(file)

    def local(self, ref: Mapping[str, Any], key: str) -> Path:
        url = self.reader.string(ref.get("source"), f"{key}.source")
        path = file_url_path(url)
        if path is None:
            self.reader.fail(f"{key}.source", f"{url!r} is not a file:// URL; content by digest needs its OCI artifact")
        if not path.exists():
            self.reader.fail(f"{key}.source", f"{path} does not exist")
        return path

    def wasm(self, component_id: str, ref: Mapping[str, Any], key: str) -> Path:
        return self.local(ref, key)

    def files(self, component_id: str, files: list[Mapping[str, Any]], key: str) -> tuple[FileMount, ...]:
        mounts = []
        for i, entry in enumerate(files):
            host = self.local(entry, f"{key}[{i}]")
            guest = posixpath.normpath("/" + self.reader.string(entry.get("path"), f"{key}[{i}].path").lstrip("/"))
            mounts.append(FileMount(guest, host, host.is_dir()))
        return tuple(mounts)


# ---------------------------------------------------------------------------------------------
# Writing (what `spin registry push` stores: content by digest, small files inline)


@dataclass(frozen=True)
class LockedContent:
    """A blob the locked app refers to by digest; ``kind`` is "wasm" or "data"."""

    digest: str
    path: Path
    kind: str


def locked_app_for_push(app: AppManifest) -> tuple[dict[str, Any], list[LockedContent]]:
    """The locked app of ``app`` with content by digest, and the blobs it refers to.

    Matches Spin's push: wasm sources by digest; every mounted file as a relative ``path`` plus its
    digest, inline when at most 128 bytes (then no blob is needed). Digests are computed here, so
    pushing twice gives byte-identical JSON.
    """
    blobs: dict[str, LockedContent] = {}

    def digest_of(path: Path, kind: str) -> str:
        digest = "sha256:" + sha256_file(path)
        blobs.setdefault(digest, LockedContent(digest, path, kind))
        return digest

    components = []
    for spec in app.components.values():
        component: dict[str, Any] = {"id": spec.id}
        metadata = _non_empty(
            description=spec.description,
            allowed_outbound_hosts=list(spec.allowed_outbound_hosts),
            key_value_stores=list(spec.key_value_stores),
            databases=list(spec.sqlite_databases),
            ai_models=list(spec.ai_models),
        )
        if metadata:
            component["metadata"] = metadata
        component["source"] = {"content_type": WASM_CONTENT_TYPE, "digest": digest_of(spec.source, "wasm")}
        files = []
        for guest, host in guest_files(spec.files).items():
            data = host.read_bytes() if host.stat().st_size <= INLINE_MAX_SIZE else None
            if data is not None:
                ref = {
                    "inline": base64.b64encode(data).decode().rstrip("="),
                    "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                }
            else:
                ref = {"digest": digest_of(host, "data")}
            files.append({**ref, "path": guest.lstrip("/")})
        component.update(_non_empty(env=dict(spec.environment), files=files, config=dict(spec.variables)))
        components.append(component)

    locked = {
        "spin_lock_version": 0,
        # Spin records the (here empty) [application.trigger] tables, and the single trigger type.
        "metadata": {
            **_non_empty(name=app.name, version=app.version, description=app.description),
            "triggers": {},
            "trigger": {"type": "http"},
        },
        "variables": {name: _locked_variable(v) for name, v in app.variables.items()},
        "triggers": [_locked_trigger(t) for t in app.http_triggers],
        "components": components,
    }
    if not locked["variables"]:
        del locked["variables"]
    return locked, list(blobs.values())


def _locked_variable(variable: VariableDecl) -> dict[str, Any]:
    locked: dict[str, Any] = _non_empty(description=variable.description, secret=variable.secret)
    if variable.default is not None:  # an empty default is still a default
        locked["default"] = variable.default
    return locked


def _locked_trigger(trigger: HttpTrigger) -> dict[str, Any]:
    route: Any = {"private": True} if trigger.private else trigger.route
    return {
        "id": trigger.id,
        "trigger_type": "http",
        "trigger_config": {"component": trigger.component, "route": route},
    }


def _non_empty(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "", [], {}, False)}
