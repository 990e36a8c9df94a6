"""An OCI distribution-API client for one repository, built on oras-py's ``Registry``.

oras-py does the distribution calls: URL building (``Container``), blob existence checks, the
POST+PUT upload session with its ``Location`` handling, streamed blob GETs and the bearer-token
exchange. This subclass adds what oras-py 0.2.43 lacks for pulling apps that a node will run:

* **No silent retries, bounded waits.** oras wraps every request in a retry decorator that sleeps
  3 + 5 + 11 + 29 + 83 s on any exception (a refused connection takes two minutes to report) and
  sets no timeout; here each request is tried once, with a timeout on connect and on each read.
* **Both challenge schemes.** oras's token backend treats every 401 as a bearer challenge (an
  htpasswd registry's ``Basic realm=…`` becomes a token request to the realm string) and reuses one
  token for every scope (a pull-scoped token is re-sent for a push). :class:`ChallengeAuth` answers
  ``Basic`` and ``Bearer`` and keeps tokens per realm/service/scope.
* **Digest verification.** ``get_manifest`` returns parsed JSON, so a manifest's digest cannot be
  checked, and ``download_blob`` writes whatever arrives. :meth:`RegistryClient.manifest` returns the
  raw bytes; :meth:`RegistryClient.download_blob` hashes while streaming and checks size and digest.
* **Exact manifest bytes on push**: ``upload_manifest`` re-serialises the dict, so the digest is not
  known in advance; :meth:`RegistryClient.put_manifest` sends the bytes it was given.
* **Typed errors** naming the registry, the repository and where credentials were looked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.auth
import oras.auth.utils
import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from .auth import AUTH_ENV, CredentialLookup
from .errors import (
    ArtifactNotFoundError,
    DigestMismatchError,
    InsecureRegistryError,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryUnreachableError,
)
from .refs import Reference

log = logging.getLogger("kubespin.registry")

INSECURE_ENV = "KUBESPIN_INSECURE_REGISTRIES"
TIMEOUT_ENV = "KUBESPIN_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
MAX_MANIFEST_SIZE = 4 << 20  # containerd's limit for manifests and indexes
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def plain_http_allowed(ref: Reference, insecure: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Plain HTTP only for loopback registries, ``--insecure``, or hosts in KUBESPIN_INSECURE_REGISTRIES."""
    if insecure or ref.is_loopback:
        return True
    allowed = {h.strip().lower() for h in environ.get(INSECURE_ENV, "").split(",") if h.strip()}
    return ref.registry in allowed or ref.hostname in allowed or "*" in allowed


def timeout_from(environ: Mapping[str, str] = os.environ) -> float:
    value = environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise RegistryProtocolError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise RegistryProtocolError(f"{TIMEOUT_ENV} must be positive, not {value!r}")
    return seconds


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request on the session (oras's own token requests too) a timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, *args, **kwargs)


class ChallengeAuth(oras.auth.TokenAuth):
    """Answers ``Basic`` and ``Bearer`` challenges with credentials from a :class:`CredentialLookup`.

    After a Basic challenge the header is sent up front (htpasswd registries challenge every
    request otherwise). Bearer tokens are fetched through oras's token exchange and kept per
    (realm, service, scope); the latest one is sent up front, and a challenge for a wider scope
    (push after pull) fetches a new one.
    """

    def __init__(self, lookup: CredentialLookup) -> None:
        super().__init__()
        self.lookup = lookup
        self._basic_auth = None
        creds = lookup.credentials
        if creds is not None and creds.username is not None:
            self._basic_auth = oras.auth.utils.get_basic_auth(creds.username, creds.password or "")
        self._tokens: dict[tuple[str | None, str | None, str | None], str] = {}
        self._basic_seen = False
        self.last_challenge = ""

    def upfront_header(self) -> dict[str, str]:
        if self._basic_seen and self._basic_auth:
            return {"Authorization": f"Basic {self._basic_auth}"}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str], refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        raw = original.headers.get("WWW-Authenticate", "")
        self.last_challenge = raw
        scheme = raw.split(" ", 1)[0].lower()
        headers = dict(headers or {})
        sent = headers.get("Authorization")
        if scheme == "basic":
            if not self._basic_auth or sent == f"Basic {self._basic_auth}":
                return headers, False
            self._basic_seen = True
            headers["Authorization"] = f"Basic {self._basic_auth}"
            return headers, True
        if scheme != "bearer":
            return headers, False
        creds = self.lookup.credentials
        if creds is not None and creds.token:  # a registry token from the config: used as is
            if sent == f"Bearer {creds.token}":
                return headers, False
            self.token = creds.token
            headers["Authorization"] = f"Bearer {creds.token}"
            return headers, True
        challenge = oras.auth.utils.parse_auth_header(raw)
        key = (challenge.realm, challenge.service, challenge.scope)
        token = None if refresh else self._tokens.get(key)
        if token is None or sent == f"Bearer {token}":
            token = self.request_token(challenge) if challenge.realm else None
        if not token or sent == f"Bearer {token}":
            return headers, False
        self._tokens[key] = token
        self.token = token
        headers["Authorization"] = f"Bearer {token}"
        return headers, True


class RegistryClient(oras.provider.Registry):
    """Talks to one repository of one registry; every failure is a :class:`RegistryError`."""

    def __init__(
        self,
        ref: Reference,
        lookup: CredentialLookup,
        *,
        plain_http: bool,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(hostname=ref.api_host, insecure=plain_http)
        self.ref = ref
        self.plain_http = plain_http
        self.auth = ChallengeAuth(lookup)
        self.auth.session = self.session
        self.auth.prefix = self.prefix
        self.auth._tls_verify = self._tls_verify
        adapter = _TimeoutAdapter(timeout)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "kubespin"
        self.container = oras.container.Container(f"{ref.api_host}/{ref.repository}", registry=ref.api_host)
        self.requests_made = 0

    # -- transport ------------------------------------------------------------------------------
    def do_request(  # type: ignore[override]
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request, answered challenges included; no retries (oras's decorator is not applied)."""
        headers = {**(headers or {}), **self.auth.upfront_header()}
        response = self._send(method, url, data, headers, json, stream)
        if response.status_code == 401:
            retry_headers, changed = self.auth.authenticate_request(response, headers)
            if not changed:
                raise self._auth_error(response, sent=headers.get("Authorization"))
            response.close()
            response = self._send(method, url, data, retry_headers, json, stream)
            if response.status_code == 401:
                raise self._auth_error(response, sent=retry_headers.get("Authorization"))
        if response.status_code == 403:
            raise self._auth_error(response, sent=headers.get("Authorization"), denied=True)
        return response

    def _send(
        self, method: str, url: str, data: Any, headers: dict[str, str], json: Any, stream: bool
    ) -> requests.Response:
        self.requests_made += 1
        try:
            return self.session.request(method, url, data=data, json=json, headers=headers, stream=stream)
        except requests.exceptions.SSLError as e:
            if not self.plain_http and "wrong version number" in str(e).lower():
                raise InsecureRegistryError(
                    f"registry {self.ref.registry} answered HTTPS with plain HTTP. kubespin uses plain HTTP "
                    f"only for loopback registries or when asked: pass --insecure, or set "
                    f"{INSECURE_ENV}={self.ref.registry}"
                ) from None
            raise RegistryUnreachableError(f"TLS with registry {self.ref.registry} failed: {e}") from None
        except requests.exceptions.Timeout:
            raise RegistryUnreachableError(
                f"registry {self.ref.registry} did not answer {method} {url} in time ({TIMEOUT_ENV} sets the limit)"
            ) from None
        except requests.exceptions.ConnectionError as e:
            scheme = "http" if self.plain_http else "https"
            raise RegistryUnreachableError(
                f"cannot reach registry {self.ref.registry} over {scheme} ({_root_cause(e)}); is it running, "
                "and is the host:port right?"
            ) from None

    def _auth_error(self, response: requests.Response, *, sent: str | None, denied: bool = False) -> RegistryAuthError:
        lookup = self.auth.lookup
        creds = lookup.credentials
        challenge = response.headers.get("WWW-Authenticate") or self.auth.last_challenge or "none"
        what = f"{response.request.method} {self.ref.name}"
        if denied:
            who = f"the credentials from {creds.source}" if creds else "anonymous access"
            return RegistryAuthError(
                f"registry {self.ref.registry} denied {what} (HTTP 403) to {who}: they may not "
                f"allow this repository or action{_error_detail(response)}"
            )
        if creds is None:
            return RegistryAuthError(
                f"registry {self.ref.registry} requires authentication for {what} (challenge: {challenge}) "
                f"and no credentials for it were found. Looked in: {lookup.where()}. Log in with "
                f"`docker login {self.ref.registry}`, or pass --registry-auth FILE / set {AUTH_ENV} to a "
                "Docker config.json or a Kubernetes .dockerconfigjson"
            )
        user = f" for user {creds.username!r}" if creds.username else ""
        return RegistryAuthError(
            f"registry {self.ref.registry} rejected the credentials{user} from {creds.source} for {what} "
            f"(HTTP 401, challenge: {challenge}){_error_detail(response)}"
        )

    def check(self, response: requests.Response, what: str, ok: tuple[int, ...] = (200,)) -> requests.Response:
        """Return ``response`` if its status is in ``ok``; otherwise raise the matching typed error."""
        if response.status_code in ok:
            return response
        detail = _error_detail(response)
        codes = _error_codes(response)
        response.close()
        if response.status_code == 404:
            if "NAME_UNKNOWN" in codes:
                raise ArtifactNotFoundError(f"repository {self.ref.name} does not exist on {self.ref.registry}")
            raise ArtifactNotFoundError(f"{what} not found in {self.ref.name}{detail}")
        raise RegistryProtocolError(
            f"registry {self.ref.registry} answered {response.status_code} {response.reason} to {what}{detail}"
        )

    # -- pull -----------------------------------------------------------------------------------
    def manifest(self, target: str) -> tuple[bytes, str, str | None]:
        """Raw bytes, media type and Docker-Content-Digest header of the manifest at tag or digest ``target``."""
        url = f"{self.prefix}://{self.container.manifest_url(target)}"
        what = f"manifest {target}"
        accept = {"Accept": ", ".join(MANIFEST_ACCEPT)}
        with self.check(self.do_request(url, "GET", headers=accept, stream=True), what) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_SIZE:
                raise RegistryProtocolError(f"{what} of {self.ref.name} is {declared} bytes, over the 4 MiB limit")
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > MAX_MANIFEST_SIZE:
                    raise RegistryProtocolError(f"{what} of {self.ref.name} is over the 4 MiB limit")
            media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
            return bytes(body), media_type, response.headers.get("Docker-Content-Digest")

    def download_blob_to(self, desc: Descriptor, dest: Path) -> None:
        """Stream blob ``desc`` into ``dest``; raises DigestMismatchError unless size and digest match."""
        algorithm, expected = desc.digest.split(":", 1)
        hasher = hashlib.new(algorithm)
        written = 0
        what = f"blob {desc.digest} ({desc.media_type})"
        response = self.check(self.get_blob(self.container, desc.digest, stream=True), what)
        with response, open(dest, "wb") as f:
            for chunk in response.iter_content(_CHUNK):
                written += len(chunk)
                if written > desc.size:
                    raise DigestMismatchError(
                        f"{what} from {self.ref.name} is longer than the {desc.size} bytes its descriptor says"
                    )
                hasher.update(chunk)
                f.write(chunk)
        if written != desc.size:
            raise DigestMismatchError(
                f"{what} from {self.ref.name} has {written} bytes, its descriptor says {desc.size}"
            )
        actual = hasher.hexdigest()
        if actual != expected:
            raise DigestMismatchError(
                f"{what} from {self.ref.name} is corrupt or was tampered with: its content hashes to "
                f"{algorithm}:{actual}"
            )

    # -- push -----------------------------------------------------------------------------------
    def push_blob(self, path: Path, desc: Descriptor) -> bool:
        """Upload ``path`` as blob ``desc`` unless the registry has it; returns whether bytes were sent."""
        layer = desc.to_json()
        if self.blob_exists(layer, self.container):
            return False
        try:
            response = self.put_upload(str(path), self.container, layer)
        except ValueError as e:  # oras: the upload POST gave no Location to PUT to
            raise RegistryProtocolError(
                f"registry {self.ref.registry} did not start an upload for {self.ref.name}: {e}"
            ) from None
        self.check(response, f"upload of blob {desc.digest}", ok=(201, 202, 204))
        return True

    def put_manifest(self, body: bytes, media_type: str, tag: str) -> str:
        """PUT the exact ``body`` under ``tag``; returns its digest (checked against the registry's)."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        url = f"{self.prefix}://{self.container.manifest_url(tag)}"
        response = self.do_request(url, "PUT", data=body, headers={"Content-Type": media_type})
        self.check(response, f"manifest upload to tag {tag!r}", ok=(201, 200, 204))
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise DigestMismatchError(
                f"registry {self.ref.registry} stored the manifest for {self.ref.name}:{tag} as {echoed}, "
                f"but the bytes sent hash to {digest}"
            )
        return digest


def _root_cause(error: BaseException) -> str:
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__
    return str(error) or type(error).__name__


def _error_codes(response: requests.Response) -> list[str]:
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError, requests.exceptions.RequestException):
        return []
    return [str(e.get("code")) for e in errors if isinstance(e, dict)]


def _error_detail(response: requests.Response) -> str:
    """``: CODE message`` from the registry's JSON error body, when it sent one."""
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError, requests.exceptions.RequestException):
        return ""
    parts = [
        " ".join(str(x) for x in (e.get("code"), e.get("message")) if x) for e in errors if isinstance(e, dict)
    ]
    return f": {'; '.join(p for p in parts if p)}" if any(parts) else ""
