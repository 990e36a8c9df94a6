"""OCI references (``host[:port]/repo[:tag|@digest]``): parsing, and telling them apart from local paths.

The grammar is the one of ``distribution/reference`` (what docker, containerd and Spin's oci-client
accept), restricted to references that name their registry host: kubespin never guesses Docker Hub
for a bare ``name:tag``, because ``kubespin up -f`` must not turn a mistyped local path into a
download. Written here rather than taken from oras-py, whose ``Container`` regex accepts invalid
names (upper case, empty tags) and cannot say whether a string *is* a reference.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import InvalidReferenceError

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
_REFERENCE = re.compile(
    rf"(?P<registry>{_DOMAIN})/(?P<repository>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
DEFAULT_TAG = "latest"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``digest`` (when given) is what is pulled; ``tag`` is then informational."""

    registry: str  # host[:port], lower-cased
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """``registry/repository``: the reference without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """The host[:port] to talk HTTP to (Docker Hub's API lives at registry-1.docker.io)."""
        return "registry-1.docker.io" if self.registry in _DOCKER_HUB_ALIASES else self.registry

    @property
    def hostname(self) -> str:
        """The host without port or IPv6 brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.hostname)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)


def parse_reference(text: str) -> Reference:
    """Parse ``host[:port]/repo[:tag][@digest]``; raises InvalidReferenceError saying what is wrong."""
    match = _REFERENCE.fullmatch(text.strip())
    if match is None:
        raise InvalidReferenceError(_explain(text))
    registry = match.group("registry")
    if not _names_registry(registry):
        raise InvalidReferenceError(
            f"{text!r} does not start with a registry host: write it in full, e.g. "
            f"docker.io/{text} or 127.0.0.1:5000/{text}"
        )
    return Reference(registry.lower(), match.group("repository"), match.group("tag"), match.group("digest"))


def looks_like_reference(text: str) -> bool:
    """Whether ``text`` is a registry reference rather than a local path (callers check paths first)."""
    match = _REFERENCE.fullmatch(text.strip())
    return match is not None and _names_registry(match.group("registry"))


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: the only registries reached over plain HTTP unasked."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names_registry(domain: str) -> bool:
    # The docker rule: the first component is a registry when it has a dot, a port, or is localhost.
    return "." in domain or ":" in domain or domain.lower() == "localhost"


def _explain(text: str) -> str:
    base = f"{text!r} is not an OCI reference (expected host[:port]/repository[:tag|@sha256:<64 hex>])"
    name, _, digest = text.partition("@")
    if digest and not re.fullmatch(_DIGEST, digest):
        return f"{base}: {digest!r} is not a sha256:<64 lower-case hex> digest"
    if "/" not in name:
        if "." in name.split(":", 1)[0] or name.split(":", 1)[0] == "localhost":
            return f"{base}: it has no repository after the registry host"
        return f"{base}: it names no registry host; write it in full, e.g. 127.0.0.1:5000/{text}"
    repository = name.split("/", 1)[1].split(":", 1)[0]
    if repository != repository.lower():
        return f"{base}: repository names must be lower case"
    return base
