"""The shim's app model: a Spin application, however it was packaged, as one typed ``AppManifest``.

The host (router, factors) consumes only the dataclasses below. They are filled from a ``spin.toml``
(manifest version 2, validated the way Spin's ``spin-manifest`` and ``spin-loader`` crates do), from a
Spin *locked app* (``locked_app.py``) or from a Spin OCI artifact (``oci_layout.py``).

Mappings in these frozen dataclasses are plain dicts so the model pickles; treat them as read-only.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import itertools
import os
import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .errors import ManifestError


@dataclass(frozen=True)
class VariableDecl:
    """An application variable from ``[variables]``: exactly one of ``required`` / ``default``."""

    name: str
    default: str | None
    required: bool
    secret: bool
    description: str | None = None


@dataclass(frozen=True)
class HttpTrigger:
    """One ``[[trigger.http]]``. ``route`` is None iff the trigger is private (``{ private = true }``)."""

    component: str
    route: str | None
    private: bool
    id: str = ""


@dataclass(frozen=True)
class FileMount:
    """A host file or directory the guest sees at ``guest_path`` (absolute, POSIX).

    Mounts are listed in manifest order; where two mounts provide the same guest file the later wins,
    as when Spin copies them one after another into the component's asset directory.
    """

    guest_path: str
    host_path: Path
    is_dir: bool


@dataclass(frozen=True)
class ComponentSpec:
    id: str
    source: Path  # absolute path of a local .wasm file, verified to exist
    files: tuple[FileMount, ...]
    environment: Mapping[str, str]
    allowed_outbound_hosts: tuple[str, ...]
    key_value_stores: tuple[str, ...]
    sqlite_databases: tuple[str, ...]
    ai_models: tuple[str, ...]
    variables: Mapping[str, str]  # component variable name -> template text, e.g. "{{ greeting }}"
    description: str | None = None


@dataclass(frozen=True)
class AppManifest:
    name: str
    version: str | None
    description: str | None
    base_dir: Path
    origin: str  # the file or reference the app came from
    variables: Mapping[str, VariableDecl]
    http_triggers: tuple[HttpTrigger, ...]
    components: Mapping[str, ComponentSpec]
    http_base: str = "/"  # [application.trigger.http] base; Spin 3 only accepts "/"


# ---------------------------------------------------------------------------------------------
# Spin's naming and template rules, shared by the spin.toml and locked-app readers.


def id_problem(text: str, delim: str, *, lower: bool = False) -> str | None:
    """Why ``text`` is not a Spin id (``spin_serde::Id``), or None when it is.

    Component ids are kebab-case (``delim='-'``), store/database labels kebab- or snake-case, variable
    names lower snake_case. Each word starts with an ASCII letter and is all-lower or all-UPPER.
    """
    if not text:
        return "must not be empty"
    wrong = {"-": "_", "_": "-"}[delim]
    if wrong in text:
        return f"words must be separated with {delim!r}, not {wrong!r}"
    for word in text.split(delim):
        if not word:
            return f"{delim!r}-separated words must not be empty"
        if not (word[0].isascii() and word[0].isalpha()):
            return f"{delim!r}-separated words must start with an ASCII letter; got {word[0]!r}"
        upper = word[0].isupper()
        for ch in word[1:]:
            if ch.isascii() and ch.isdigit():
                continue
            if not (ch.isascii() and ch.isalnum()):
                return f"{delim!r}-separated words may only contain alphanumeric ASCII; got {ch!r}"
            if ch.isupper() != upper:
                return f"{delim!r}-separated words must be all lowercase or all UPPERCASE; got {word!r}"
        if lower and upper:
            return f"lower-case identifiers must be all lowercase; got {text!r}"
    return None


def label_problem(text: str) -> str | None:
    """Key-value store and SQLite labels: kebab-case or snake_case (Spin's ``kebab_or_snake_case``)."""
    if id_problem(text, "-") is None or id_problem(text, "_") is None:
        return None
    return "expected a kebab-case or snake_case label, e.g. `default` or `my-store`"


def template_references(template: str) -> list[str]:
    """Variable names a Spin template (``"x-{{ name }}"``) refers to; ValueError if a ``{{`` is unclosed."""
    names = []
    rest = template
    while (start := rest.find("{{")) >= 0:
        end = rest.find("}}", start + 2)
        if end < 0:
            raise ValueError("unmatched '{{' in template")
        names.append(rest[start + 2 : end].strip())
        rest = rest[end + 2 :]
    return names


def template_problem(template: str, declared: Iterable[str]) -> str | None:
    """Why ``template`` is not valid against the declared app variables, or None."""
    try:
        names = template_references(template)
    except ValueError as e:
        return f"{e}: {template!r}"
    known = set(declared)
    for name in names:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            return (
                f"template {template!r} refers to unknown application variable {name!r}; "
                f"declare it in [variables] (declared: {listed})"
            )
    return None


def outbound_hosts_problem(hosts: Iterable[str], declared: Iterable[str]) -> str | None:
    """Spin's checks on ``allowed_outbound_hosts``: a scheme on literals, known variables in templates.

    Full host/port parsing belongs to the outbound-networking factor; this catches what Spin rejects
    at load time so a bad manifest fails before the first request.
    """
    hosts = list(hosts)
    if hosts == ["insecure:allow-all"]:
        return "'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all"
    for host in hosts:
        if "{{" in host:
            if problem := template_problem(host, declared):
                return problem
        elif "://" not in host:
            return f"{host!r} does not contain a scheme (e.g., 'http://' or '*://')"
    return None


# ---------------------------------------------------------------------------------------------
# Entry points


def default_url_cache_dir() -> Path:
    """Where component sources given as ``{ url, digest }`` are looked up, by sha256 hex."""
    root = os.environ.get("KUBESPIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kubespin")
    return Path(root) / "wasm-by-digest"


def load_manifest(path: Path, *, url_cache_dir: Path | None = None) -> AppManifest:
    """Load and validate a spin.toml (``path`` is the file or the directory that holds it)."""
    path = Path(path)
    file = path / "spin.toml" if path.is_dir() else path
    if not file.is_file():
        raise ManifestError(file, "", "no such file; pass a spin.toml or the directory that holds one")
    return _SpinTomlReader(file.absolute(), url_cache_dir or default_url_cache_dir()).read()


def load_app(source: str | Path, *, work_dir: Path | None = None, url_cache_dir: Path | None = None) -> AppManifest:
    """Load an app from a dir with spin.toml, a .toml file, a locked app (.json), an OCI image layout,
    or an OCI reference ``host[:port]/repo[:tag|@digest]`` (pulled first; see ``registry.pull``).

    OCI layouts may be a directory (``oci-layout`` + ``index.json``) or a ``.tar`` / ``.tar.gz`` /
    ``.tgz`` tarball; their content is verified and materialised under ``work_dir`` (default:
    ``oci_layout.default_work_dir()``).
    """
    path = Path(source)
    if path.is_dir():
        if (path / "oci-layout").is_file() and (path / "index.json").is_file():
            from .oci_layout import load_oci_layout

            return load_oci_layout(path, work_dir=work_dir)
        if (path / "spin.toml").is_file():
            return load_manifest(path, url_cache_dir=url_cache_dir)
        raise ManifestError(path, "", "directory holds neither spin.toml nor an OCI image layout")
    if not path.exists():
        from .registry.refs import looks_like_reference

        if looks_like_reference(str(source)):
            # host[:port]/repo[:tag|@digest] (and no such local path): pull into the digest-keyed cache.
            from .oci_layout import load_oci_layout
            from .registry.pull import pull_app

            return load_oci_layout(pull_app(str(source)).layout_dir, work_dir=work_dir)
        raise ManifestError(path, "", "no such file or directory")
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        from .oci_layout import load_oci_layout

        return load_oci_layout(path, work_dir=work_dir)
    if name.endswith(".json") or name.endswith(".lock"):
        from .locked_app import load_locked_app_file

        return load_locked_app_file(path)
    return load_manifest(path, url_cache_dir=url_cache_dir)


def guest_files(mounts: Iterable[FileMount]) -> dict[str, Path]:
    """Expand mounts into guest file path -> host file, later mounts overriding earlier ones.

    This is the component's file system as Spin would build it by copying each mount in turn; used to
    write locked apps and to compare apps loaded from different packagings.
    """
    result: dict[str, Path] = {}
    for mount in mounts:
        if not mount.is_dir:
            result[mount.guest_path] = mount.host_path
            continue
        for dirpath, _dirs, filenames in os.walk(mount.host_path, followlinks=True):
            for filename in filenames:
                host = Path(dirpath) / filename
                rel = host.relative_to(mount.host_path).as_posix()
                result[_join_guest(mount.guest_path, rel)] = host
    return dict(sorted(result.items()))


def _join_guest(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large components do not load into memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def glob_matches(pattern: str, path: str) -> bool:
    """Match ``path`` (relative, POSIX) the way Rust's ``glob::Pattern`` does with default options.

    That is how Spin applies ``exclude_files``: ``*`` and ``?`` also match ``/`` (fnmatch does the
    same), and ``**/`` matches zero or more directories (fnmatch needs at least one, so each ``**/``
    is also tried removed).
    """
    parts = pattern.split("**/")
    for keep in itertools.product((True, False), repeat=len(parts) - 1):
        candidate = parts[0] + "".join(("**/" if k else "") + part for k, part in zip(keep, parts[1:], strict=True))
        if fnmatch.fnmatchcase(path, candidate):
            return True
    return False


def convert_allowed_http_hosts(hosts: list[str]) -> list[str]:
    """Spin's conversion of the deprecated ``allowed_http_hosts`` into ``allowed_outbound_hosts``.

    Raises ValueError naming the entry that is neither a host, ``host:port``, an http(s) URL,
    ``self`` nor ``insecure:allow-all``.
    """
    if "insecure:allow-all" in hosts:
        return ["http://*:*", "https://*:*", "http://self"]
    result: list[str] = []
    for text in hosts:
        if text == "self":
            result.append("http://self")
            continue
        parsed = urlsplit(text if "//" in text else f"http://{text}")
        try:
            port = parsed.port
        except ValueError:  # a port that is not a number, or out of range
            raise ValueError(f"{text} isn't a valid host or host:port string") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
            raise ValueError(f"{text} isn't a valid host or host:port string")
        suffix = f":{port}" if port is not None else ""
        result += [f"http://{parsed.hostname}{suffix}", f"https://{parsed.hostname}{suffix}"]
    return result


# ---------------------------------------------------------------------------------------------
# spin.toml, manifest version 2 (Spin's spin-manifest schema/v2.rs and spin-loader local.rs)

_TOP_KEYS = ("spin_manifest_version", "application", "variables", "trigger", "component")
_APPLICATION_KEYS = ("name", "version", "description", "authors", "targets", "trigger", "tool")
_VARIABLE_KEYS = ("description", "required", "default", "secret")
_COMPONENT_KEYS = (
    "source",
    "description",
    "variables",
    "environment",
    "files",
    "exclude_files",
    "allowed_http_hosts",
    "allowed_outbound_hosts",
    "key_value_stores",
    "sqlite_databases",
    "ai_models",
    "targets",
    "build",
    "tool",
    "dependencies_inherit_configuration",
    "dependencies",
    "profile",
)
_HTTP_TRIGGER_KEYS = ("id", "component", "components", "dependencies", "route", "executor", "static_response")
_GLOB_CHARS = frozenset("*?[]")
_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", int: "an integer", float: "a float", list: "an array", dict: "a table"}
    kind = kinds.get(type(value), "a date/time")
    return f"{kind} ({value!r})" if isinstance(value, bool | int | float | str) else kind


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _guest(rel: str) -> str:
    return "/" if rel == "." else "/" + rel


class FieldReader:
    """Typed access to a parsed TOML/JSON document; each failure is a ManifestError naming the key.

    Shared by the spin.toml reader here and the locked-app reader, so both report problems the same way.
    """

    def __init__(self, file: str | Path) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise ManifestError(self.file, key, message)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, found {_describe(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if value is None:
            self.fail(key, "missing required string")
        if not isinstance(value, str):
            self.fail(key, f"expected a string, found {_describe(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, found {_describe(value)}")
        return value

    def array(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(key, f"expected an array, found {_describe(value)}")
        return value

    def strings(self, value: Any, key: str) -> list[str]:
        return [self.string(item, f"{key}[{i}]") for i, item in enumerate(self.array(value, key))]

    def string_table(self, value: Any, key: str) -> dict[str, str]:
        return {k: self.string(v, _join(key, k)) for k, v in self.table(value, key).items()}

    def only_keys(self, table: dict[str, Any], key: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for name in table:
            if name not in allowed:
                import difflib  # only to suggest a key for a misspelt one

                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(_join(key, name), f"unknown key; {hint}expected one of: {', '.join(allowed)}")

    def labels(self, value: Any, key: str) -> tuple[str, ...]:
        labels = self.strings(value, key)
        for i, label in enumerate(labels):
            if problem := label_problem(label):
                self.fail(f"{key}[{i}]", f"{label!r}: {problem}")
        return tuple(labels)

    def route(self, value: Any, key: str) -> tuple[str | None, bool]:
        """An HTTP trigger route: a string, or ``{ private = true }`` (then the route is None)."""
        if value is None:
            self.fail(key, 'missing; give a route such as "/..." or { private = true }')
        if isinstance(value, str):
            return value, False
        route = self.table(value, key)
        self.only_keys(route, key, ("private",))
        if not self.boolean(route.get("private", False), f"{key}.private"):
            self.fail(key, "route must be a string pattern or `{ private = true }`")
        return None, True

    def executor(self, value: Any, key: str) -> None:
        """An HTTP executor: only Spin's own (``http``, alias ``spin``) is served by kubespin."""
        executor = self.table(value, key)
        kind = self.string(executor.get("type"), f"{key}.type")
        if kind == "wagi":
            self.fail(
                key,
                "the WAGI executor is not supported by kubespin; build the component for the "
                "Spin HTTP executor (wasi:http)",
            )
        if kind not in ("http", "spin"):
            self.fail(f"{key}.type", f"unknown executor type {kind!r}; expected 'http'")
        self.only_keys(executor, key, ("type",))

    def http_base(self, value: Any, key: str) -> str:
        """``[application.trigger.http]``: Spin 3 accepts only ``base = "/"`` there."""
        http = self.table(value, key)
        self.only_keys(http, key, ("base",))
        base = self.string(http.get("base", "/"), f"{key}.base")
        if base != "/":
            self.fail(
                f"{key}.base",
                f"a base other than '/' ({base!r}) is no longer supported by Spin; prepend it "
                "to each [[trigger.http]] route and remove `base`",
            )
        return base


class _SpinTomlReader(FieldReader):
    """Reads one spin.toml; every failure is a ManifestError naming the dotted key."""

    def __init__(self, file: Path, url_cache_dir: Path) -> None:
        super().__init__(file)
        self.app_dir = file.parent
        self.url_cache_dir = url_cache_dir

    def inside_app(self, text: str, key: str) -> str:
        """Normalised app-relative POSIX path; rejects absolute paths and paths escaping the app dir."""
        if os.path.isabs(text):
            self.fail(key, f"{text!r} is an absolute path; files must be given relative to {self.app_dir}")
        rel = posixpath.normpath(text) if text else "."
        if rel == ".." or rel.startswith("../"):
            self.fail(
                key,
                f"{text!r} is outside the application directory {self.app_dir}; "
                "files must be within the application directory",
            )
        return rel

    # -- document -------------------------------------------------------------------------------
    def read(self) -> AppManifest:
        try:
            doc = tomllib.loads(self.file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            self.fail("", f"not valid TOML: {e}")
        except UnicodeDecodeError as e:
            self.fail("", f"not UTF-8 text: {e}")
        self.check_version(doc)
        self.only_keys(doc, "", _TOP_KEYS)
        name, version, description, http_base = self.application(doc.get("application"))
        variables = self.variables(doc.get("variables", {}))
        raw_components: dict[str, tuple[str, dict[str, Any]]] = {}
        for cid, raw in self.table(doc.get("component", {}), "component").items():
            key = f"component.{cid}"
            if problem := id_problem(cid, "-"):
                self.fail(key, f"invalid component id {cid!r}: {problem}")
            raw_components[cid] = (key, self.table(raw, key))
        triggers = self.triggers(doc.get("trigger"), raw_components)
        components = {cid: self.component(cid, raw, key, variables) for cid, (key, raw) in raw_components.items()}
        return AppManifest(
            name=name,
            version=version,
            description=description,
            base_dir=self.app_dir,
            origin=str(self.file),
            variables=variables,
            http_triggers=triggers,
            components=components,
            http_base=http_base,
        )

    def check_version(self, doc: dict[str, Any]) -> None:
        key = "spin_manifest_version"
        version = doc.get(key, doc.get("spin_version"))
        if version is None:
            self.fail(key, "missing; a Spin manifest starts with `spin_manifest_version = 2`")
        if version in ("1", "1.0") or (type(version) is int and version == 1):
            self.fail(
                key,
                "manifest version 1 is not supported, run `spin doctor` (Spin 2 or later) "
                "to upgrade this spin.toml to version 2",
            )
        if type(version) is not int or version != 2:
            self.fail(key, f"unsupported manifest version {version!r}; expected 2")

    def application(self, value: Any) -> tuple[str, str | None, str | None, str]:
        key = "application"
        if value is None:
            self.fail(key, 'missing [application] table; it needs at least `name = "..."`')
        app = self.table(value, key)
        self.only_keys(app, key, _APPLICATION_KEYS)
        if "name" not in app:
            self.fail("application.name", 'missing; every app needs a name, e.g. name = "my-app"')
        name = self.string(app["name"], "application.name")
        version = self.string(app.get("version", ""), "application.version")
        description = self.string(app.get("description", ""), "application.description")
        self.strings(app.get("authors", []), "application.authors")
        trigger_configs = self.table(app.get("trigger", {}), "application.trigger")
        base = "/"
        if "http" in trigger_configs:
            base = self.http_base(trigger_configs["http"], "application.trigger.http")
        return name, version or None, description or None, base

    def variables(self, value: Any) -> dict[str, VariableDecl]:
        result = {}
        for name, decl in self.table(value, "variables").items():
            key = f"variables.{name}"
            if problem := id_problem(name, "_", lower=True):
                self.fail(key, f"invalid variable name: {problem}")
            if not isinstance(decl, dict):
                self.fail(
                    key,
                    f'expected a table such as {{ default = "..." }} or {{ required = true }}, found {_describe(decl)}',
                )
            self.only_keys(decl, key, _VARIABLE_KEYS)
            required = self.boolean(decl.get("required", False), f"{key}.required")
            default = self.string(decl["default"], f"{key}.default") if "default" in decl else None
            secret = self.boolean(decl.get("secret", False), f"{key}.secret")
            description = self.string(decl.get("description", ""), f"{key}.description") or None
            if required and default is not None:
                self.fail(key, "a variable cannot be both `required` and have a `default`; remove one")
            if not required and default is None:
                self.fail(key, 'a variable must be `required = true` or have a `default = "..."`')
            result[name] = VariableDecl(name, default, required, secret, description)
        return result

    # -- triggers -------------------------------------------------------------------------------
    def triggers(self, value: Any, components: dict[str, tuple[str, dict[str, Any]]]) -> tuple[HttpTrigger, ...]:
        if value is None:
            self.fail("trigger", "missing; add at least one [[trigger.http]] with `route` and `component`")
        parsed = []
        for trigger_type, entries in self.table(value, "trigger").items():
            key = f"trigger.{trigger_type}"
            if trigger_type != "http":
                self.fail(key, f"trigger type {trigger_type!r} is not supported by kubespin; only [[trigger.http]] is")
            if not isinstance(entries, list):
                self.fail(key, f"expected an array of tables ([[trigger.http]]), found {_describe(entries)}")
            parsed += [self.http_trigger(entry, f"{key}[{i}]") for i, entry in enumerate(entries)]
        self.assign_trigger_ids(parsed)
        counter = 1
        triggers = []
        for key, tid, ref, inline, route, private in parsed:
            if inline is not None:
                # Spin's normalize_inline_components: "<trigger id>-component", else "inline-componentN".
                ref = f"{tid}-component"
                if id_problem(ref, "-") or ref in components:
                    while f"inline-component{counter}" in components:
                        counter += 1
                    ref = f"inline-component{counter}"
                components[ref] = (f"{key}.component", inline)
            elif ref not in components:
                declared = ", ".join(components) or "none"
                self.fail(
                    f"{key}.component",
                    f"no component {ref!r} is declared; add [component.{ref}] (declared components: {declared})",
                )
            triggers.append(HttpTrigger(component=ref, route=route, private=private, id=tid))
        return tuple(triggers)

    @staticmethod
    def assign_trigger_ids(parsed: list[list[Any]]) -> None:
        """Spin's normalize_trigger_ids: "<component>-http-trigger", else "http-triggerN"."""
        taken = {entry[1] for entry in parsed}
        counter = 1
        for entry in parsed:
            if entry[1]:
                continue
            candidate = f"{entry[2]}-http-trigger"
            if entry[2] is None or candidate in taken:
                while f"http-trigger{counter}" in taken:
                    counter += 1
                candidate = f"http-trigger{counter}"
            entry[1] = candidate
            taken.add(candidate)

    def http_trigger(self, value: Any, key: str) -> list[Any]:
        trigger = self.table(value, key)
        self.only_keys(trigger, key, _HTTP_TRIGGER_KEYS)
        if "static_response" in trigger:
            self.fail(
                f"{key}.static_response",
                "static responses are not supported by kubespin yet; serve the response from a component",
            )
        for extra in ("components", "dependencies"):
            if trigger.get(extra):
                self.fail(
                    f"{key}.{extra}",
                    "trigger-level components and dependencies (middleware) are not supported by kubespin yet",
                )
        if "executor" in trigger:
            self.executor(trigger["executor"], f"{key}.executor")
        tid = self.string(trigger.get("id", ""), f"{key}.id")
        component = trigger.get("component")
        ref, inline = None, None
        if component is None:
            self.fail(
                f"{key}.component", 'missing; name the component that handles the route, e.g. component = "hello"'
            )
        if isinstance(component, dict):
            inline = component
        else:
            ref = self.string(component, f"{key}.component")
            if problem := id_problem(ref, "-"):
                self.fail(f"{key}.component", f"invalid component id {ref!r}: {problem}")
        route, private = self.route(trigger.get("route"), f"{key}.route")
        return [key, tid, ref, inline, route, private]

    # -- components -----------------------------------------------------------------------------
    def component(
        self, cid: str, raw: dict[str, Any], key: str, variables: Mapping[str, VariableDecl]
    ) -> ComponentSpec:
        self.only_keys(raw, key, _COMPONENT_KEYS)
        if "source" not in raw:
            self.fail(f"{key}.source", "missing; give the path of the component's .wasm file")
        source = self.source(raw["source"], f"{key}.source")
        if raw.get("dependencies"):
            self.fail(
                f"{key}.dependencies",
                "component dependencies are not supported by kubespin yet; "
                "compose them into the component first (e.g. `wac plug`)",
            )
        component_vars = self.string_table(raw.get("variables", {}), f"{key}.variables")
        for name, template in component_vars.items():
            if problem := id_problem(name, "_", lower=True):
                self.fail(f"{key}.variables.{name}", f"invalid variable name: {problem}")
            if problem := template_problem(template, variables):
                self.fail(f"{key}.variables.{name}", problem)
        hosts = self.strings(raw.get("allowed_outbound_hosts", []), f"{key}.allowed_outbound_hosts")
        legacy = self.strings(raw.get("allowed_http_hosts", []), f"{key}.allowed_http_hosts")
        try:
            hosts += convert_allowed_http_hosts(legacy)
        except ValueError as e:
            self.fail(f"{key}.allowed_http_hosts", f"{e}; use allowed_outbound_hosts instead")
        if problem := outbound_hosts_problem(hosts, variables):
            self.fail(f"{key}.allowed_outbound_hosts", problem)
        return ComponentSpec(
            id=cid,
            source=source,
            files=self.files(raw.get("files", []), raw.get("exclude_files", []), key),
            environment=self.string_table(raw.get("environment", {}), f"{key}.environment"),
            allowed_outbound_hosts=tuple(hosts),
            key_value_stores=self.labels(raw.get("key_value_stores", []), f"{key}.key_value_stores"),
            sqlite_databases=self.labels(raw.get("sqlite_databases", []), f"{key}.sqlite_databases"),
            ai_models=tuple(self.strings(raw.get("ai_models", []), f"{key}.ai_models")),
            variables=component_vars,
            description=self.string(raw.get("description", ""), f"{key}.description") or None,
        )

    def source(self, value: Any, key: str) -> Path:
        if isinstance(value, str):
            path = Path(os.path.abspath(self.app_dir / value))
            if not path.is_file():
                self.fail(
                    key,
                    f"{value!r} does not exist (looked for {path}); build the component first "
                    "(e.g. `spin build`) or fix the path",
                )
            return path
        if isinstance(value, dict) and ("url" in value or "digest" in value):
            return self.url_source(value, key)
        if isinstance(value, dict) and {"package", "registry", "version"} & value.keys():
            self.fail(
                key,
                "registry sources (package/version) are not supported by kubespin yet; fetch the "
                "component and point `source` at the .wasm file",
            )
        self.fail(
            key,
            f'expected a path to a .wasm file, or {{ url = "...", digest = "sha256:..." }}; found {_describe(value)}',
        )

    def url_source(self, value: dict[str, Any], key: str) -> Path:
        self.only_keys(value, key, ("url", "digest"))
        url = self.string(value.get("url"), f"{key}.url")
        digest = self.string(value.get("digest"), f"{key}.digest")
        match = _DIGEST.fullmatch(digest)
        if not match:
            self.fail(f"{key}.digest", f"invalid digest {digest!r}; expected 'sha256:' and 64 hex digits")
        hex_digest = match.group(1).lower()
        cached = self.url_cache_dir / hex_digest
        if not cached.is_file():
            self.fail(
                key,
                f"{url} (digest {digest}) is not in the local cache and kubespin does not "
                f"download component URLs yet; download it and save it as {cached}",
            )
        actual = sha256_file(cached)
        if actual != hex_digest:
            self.fail(
                key,
                f"cached file {cached} for {url} has digest sha256:{actual}, not {digest}; "
                f"delete it and download {url} again",
            )
        return cached

    # -- files (spin-loader's copy_file_mounts, without the copying) ----------------------------
    def files(self, value: Any, exclude_value: Any, key: str) -> tuple[FileMount, ...]:
        value = self.array(value, f"{key}.files")
        excludes = self.strings(exclude_value, f"{key}.exclude_files")
        mounts: list[FileMount] = []
        for i, entry in enumerate(value):
            entry_key = f"{key}.files[{i}]"
            if isinstance(entry, str):
                mounts += self.pattern_mount(entry, excludes, entry_key)
            elif isinstance(entry, dict):
                self.only_keys(entry, entry_key, ("source", "destination"))
                source = self.string(entry.get("source"), f"{entry_key}.source")
                destination = self.string(entry.get("destination"), f"{entry_key}.destination")
                mounts += self.placement_mount(source, destination, excludes, entry_key)
            else:
                self.fail(
                    entry_key,
                    'expected a glob pattern string or { source = "...", destination = '
                    f'"/..." }}, found {_describe(entry)}',
                )
        return tuple(mounts)

    def pattern_mount(self, pattern: str, excludes: list[str], key: str) -> list[FileMount]:
        how = "If you want to include a directory, use the source-destination form, or a glob pattern ending in **/*"
        if pattern == ".." or pattern.endswith("/.."):
            self.fail(key, f"a file pattern can't end in a parent directory path (..). {how}")
        if pattern == "." or pattern.endswith("/."):
            self.fail(key, f"a file pattern can't end in a current directory path (.). {how}")
        rel = self.inside_app(pattern, key)
        host = self.app_dir / rel
        if host.exists():
            if host.is_dir():
                # Mounted at its own path, as Spin documents (PR #1488: "dir" == { source = "dir",
                # destination = "dir" }). spin-loader's copy mode currently nests it twice
                # (/dir/dir/...), which we take for an upstream bug and do not reproduce.
                return self.dir_mount(_guest(rel), host, excludes)
            return [FileMount(_guest(rel), host, False)]
        if not _GLOB_CHARS & set(pattern):
            self.fail(key, f"{pattern!r} does not exist and doesn't appear to be a glob pattern")
        mounts = []
        for match in sorted(glob.glob(rel, root_dir=self.app_dir, recursive=True, include_hidden=True)):
            match_rel = self.inside_app(match, key)
            path = self.app_dir / match_rel
            if path.is_file() and not any(glob_matches(p, match_rel) for p in excludes):
                mounts.append(FileMount(_guest(match_rel), path, False))
        return mounts

    def placement_mount(self, source: str, destination: str, excludes: list[str], key: str) -> list[FileMount]:
        rel = self.inside_app(source, f"{key}.source")
        host = self.app_dir / rel
        if not host.exists():
            self.fail(f"{key}.source", f"file or directory {source!r} does not exist in {self.app_dir}")
        guest = posixpath.normpath("/" + destination.lstrip("/"))
        if guest.startswith("//"):
            guest = "/" + guest.lstrip("/")
        if host.is_dir():
            return self.dir_mount(guest, host, excludes)
        if destination.endswith(("/", "/.", "/..")) or guest == "/":
            self.fail(
                f"{key}.destination", f"{destination!r} is not a valid destination file name for the file {source!r}"
            )
        return [FileMount(guest, host, False)]

    def dir_mount(self, guest: str, host_dir: Path, excludes: list[str]) -> list[FileMount]:
        """A directory mount; expanded to its files only when exclude_files removes some of them."""
        if not excludes:
            return [FileMount(guest, host_dir, True)]
        found = glob.glob("**/*", root_dir=host_dir, recursive=True, include_hidden=True)
        files = sorted(rel for rel in found if (host_dir / rel).is_file())
        app_rel = {rel: posixpath.normpath(os.path.relpath(host_dir / rel, self.app_dir)) for rel in files}
        kept = [rel for rel in files if not any(glob_matches(p, app_rel[rel]) for p in excludes)]
        if len(kept) == len(files):
            return [FileMount(guest, host_dir, True)]
        return [FileMount(_join_guest(guest, rel), host_dir / rel, False) for rel in kept]
