"""Registry credentials from Docker config files, including Kubernetes image pull secrets.

Where credentials are looked for, in order (the first file with an entry for the registry wins):

1. files given with ``--registry-auth FILE`` (repeatable);
2. files in ``KUBESPIN_REGISTRY_AUTH`` (``os.pathsep``-separated): point it at a mounted
   ``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson`` (or a legacy ``.dockercfg``) so a
   pod's imagePullSecrets reach the shim;
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (what ``docker login`` writes).

An entry may carry ``auth`` (base64 ``user:password``), ``username``/``password``, or
``registrytoken`` (a bearer token used as is); ``credHelpers``/``credsStore`` run
``docker-credential-<name> get`` as docker does. Keys match the way docker and kubelet match them:
scheme and path ignored, port significant, ``*`` globs per host label (``*.example.com``), and the
Docker Hub aliases are one registry. Written here because oras-py only reads ``~/.docker/config.json``
(not ``$DOCKER_CONFIG``, not the legacy format) and cannot say where it looked when nothing matched.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RegistryAuthError

AUTH_ENV = "KUBESPIN_REGISTRY_AUTH"
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """What to authenticate with. ``username``/``password`` for Basic and token exchange, or ``token``."""

    username: str | None
    password: str | None
    token: str | None
    source: str  # where they came from, for messages ("/path/config.json (entry 127.0.0.1:5000)")

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, source={self.source!r})"


@dataclass
class CredentialLookup:
    """The result of a search: credentials (or None) and every place looked at, for error messages."""

    registry: str
    credentials: Credentials | None
    searched: list[str] = field(default_factory=list)

    def where(self) -> str:
        return "; ".join(self.searched) if self.searched else "no Docker config file exists"


def config_paths(
    explicit: Sequence[str | Path] = (), environ: Mapping[str, str] = os.environ
) -> list[tuple[Path, bool]]:
    """The files searched for credentials, in order, each with whether it was asked for (must exist)."""
    asked = [Path(p) for p in explicit]
    asked += [Path(p) for p in environ.get(AUTH_ENV, "").split(os.pathsep) if p.strip()]
    docker_dir = environ.get("DOCKER_CONFIG")
    default = Path(docker_dir) / "config.json" if docker_dir else Path.home() / ".docker" / "config.json"
    paths: list[tuple[Path, bool]] = []
    for path, required in [*((p, True) for p in asked), (default, False)]:
        if all(path != seen for seen, _ in paths):
            paths.append((path, required))
    return paths


def find_credentials(
    registry: str, explicit: Sequence[str | Path] = (), environ: Mapping[str, str] = os.environ
) -> CredentialLookup:
    """Credentials for ``registry`` (host[:port]); files asked for by flag or environment must exist."""
    lookup = CredentialLookup(registry, None)
    for path, required in config_paths(explicit, environ):
        if not path.is_file():
            if required:
                raise RegistryAuthError(
                    f"registry credentials file {path} does not exist (given for {registry} by "
                    f"--registry-auth or {AUTH_ENV})"
                )
            lookup.searched.append(f"{path} (no such file)")
            continue
        found = _credentials_in(_read_config(path), registry, path, lookup)
        if found is not None:
            lookup.credentials = found
            return lookup
    return lookup


def credentials_from_documents(registry: str, documents: Sequence[tuple[str, bytes]]) -> CredentialLookup:
    """Credentials for ``registry`` from Docker config documents held in memory, each named for messages:
    how the operator reads a SpinApp's imagePullSecrets (``.dockerconfigjson`` or ``.dockercfg`` values).
    Credential helpers are never run: a helper named in a user's Secret must not execute in the operator."""
    lookup = CredentialLookup(registry, None)
    for where, raw in documents:
        config = _parse_config(raw, where)
        found = _credentials_in(config, registry, where, lookup, allow_helpers=False)
        if found is not None:
            lookup.credentials = found
            return lookup
    return lookup


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RegistryAuthError(f"cannot read registry credentials from {path}: {e}") from None
    return _parse_config(raw, str(path))


def _parse_config(raw: bytes, path: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise RegistryAuthError(f"cannot read registry credentials from {path}: {e}") from None
    if not isinstance(data, dict):
        raise RegistryAuthError(f"{path} is not a Docker config: expected a JSON object")
    if "auths" in data or "credHelpers" in data or "credsStore" in data:
        return data
    # Legacy ~/.dockercfg / kubernetes.io/dockercfg: the auths map is the whole document.
    return {"auths": data}


def _credentials_in(
    config: dict[str, Any], registry: str, path: Path | str, lookup: CredentialLookup, *, allow_helpers: bool = True
) -> Credentials | None:
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise RegistryAuthError(f"{path}: `auths` must be an object mapping registries to credentials")
    for key, entry in auths.items():
        if not _key_matches(key, registry):
            continue
        where = f"{path} (entry {key!r})"
        if not isinstance(entry, dict):
            raise RegistryAuthError(f"{where}: expected an object with `auth` or `username`/`password`")
        if (creds := _entry_credentials(entry, where)) is not None:
            return creds
        lookup.searched.append(f"{where}: has no auth, username/password or registrytoken")
    helper = _helper_for(config, registry) if allow_helpers else None
    if helper is not None:
        creds = _run_helper(helper, registry, path, lookup)
        if creds is not None:
            return creds
    else:
        lookup.searched.append(f"{path} (no entry for {registry})")
    return None


def _entry_credentials(entry: dict[str, Any], where: str) -> Credentials | None:
    if entry.get("registrytoken"):
        return Credentials(None, None, str(entry["registrytoken"]), where)
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryAuthError(f"{where}: `auth` is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryAuthError(f"{where}: `auth` decodes to no user:password pair")
        return Credentials(username, password, None, where)
    if entry.get("username") and "password" in entry:
        return Credentials(str(entry["username"]), str(entry["password"]), None, where)
    if entry.get("identitytoken"):
        raise RegistryAuthError(
            f"{where}: holds an OAuth identity token, which kubespin does not support yet; "
            "log in with a username and password (or an access token as the password)"
        )
    return None


def _helper_for(config: dict[str, Any], registry: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key, name in helpers.items() if isinstance(helpers, dict) else ():
        if _key_matches(key, registry):
            return str(name)
    store = config.get("credsStore")
    return str(store) if store else None


def _run_helper(name: str, registry: str, path: Path | str, lookup: CredentialLookup) -> Credentials | None:
    binary = f"docker-credential-{name}"
    server = "https://index.docker.io/v1/" if registry in _DOCKER_HUB else registry
    where = f"{binary} (named in {path})"
    try:
        proc = subprocess.run(
            [binary, "get"], input=server.encode(), capture_output=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError:
        lookup.searched.append(f"{where}: not on PATH")
        return None
    except subprocess.TimeoutExpired:
        raise RegistryAuthError(f"{where} did not answer within {_HELPER_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        # Helpers exit non-zero with "credentials not found in native keychain" for unknown servers.
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        lookup.searched.append(f"{where}: {message or f'exit status {proc.returncode}'}")
        return None
    try:
        payload = json.loads(proc.stdout)
        username, secret = str(payload["Username"]), str(payload["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(f"{where} printed something other than {{Username, Secret}} JSON") from None
    if username == "<token>":
        raise RegistryAuthError(f"{where} returned an identity token, which kubespin does not support yet")
    return Credentials(username, secret, None, where)


def _key_matches(key: str, registry: str) -> bool:
    """Docker/kubelet key matching: scheme and path ignored, ports equal, ``*`` per host label."""
    host = key.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    registry = registry.lower()
    if host in _DOCKER_HUB and registry in _DOCKER_HUB:
        return True
    if "*" not in host:
        return host == registry
    key_host, _, key_port = host.rpartition(":") if ":" in host else (host, "", "")
    reg_host, _, reg_port = registry.rpartition(":") if ":" in registry else (registry, "", "")
    key_labels, reg_labels = key_host.split("."), reg_host.split(".")
    return (
        key_port == reg_port
        and len(key_labels) == len(reg_labels)
        and all(fnmatch.fnmatchcase(r, k) for k, r in zip(key_labels, reg_labels, strict=True))
    )
