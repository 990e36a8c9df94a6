"""Test helper: a real OCI registry server on a free 127.0.0.1 port (import from tests.registry_server).

Two servers, built by scripts/build-registry from their Go modules:

* ``ggcr``: go-containerregistry's in-memory registry; starts in milliseconds, logs one line per
  request (used to count what a pull sends), no authentication.
* ``distribution``: the CNCF reference registry with filesystem storage under the test's tmp dir
  (so a test can tamper with a stored blob), and optional users: htpasswd (real Basic auth), or
  ``auth="token"``: distribution's own token auth, trusting a :class:`TokenService` started here
  (an ES256 JWT issuer on another 127.0.0.1 port, the docker token protocol ghcr.io and Docker Hub
  speak), so the bearer flow runs against the reference implementation.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-registry"
_GGCR_REQUEST = re.compile(r"^\S+ \S+ (GET|HEAD|PUT|POST|PATCH|DELETE) (/v2/\S*)", re.M)


def registry_binary(kind: str) -> Path:
    """The built server binary; fails (not skips) with the command to build it when it is missing."""
    path = Path(subprocess.run([str(BUILD_SCRIPT), "--print-path", kind], check=True, capture_output=True,
                               text=True).stdout.strip())
    if not path.is_file():
        pytest.fail(f"registry server {kind!r} is not built ({path}): run scripts/build-registry", pytrace=False)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    """A docker token service: GET /token?service=&scope=… with optional Basic credentials.

    Grants every requested action to a known user, ``pull`` to anonymous callers when
    ``anonymous_pull``; signs ES256 JWTs whose ``x5c`` header carries the self-signed certificate
    the registry trusts (``rootcertbundle``). Records each request as (user, [scopes]).
    """

    users: dict[str, str]
    anonymous_pull: bool = False
    issuer: str = "kubespin-test-issuer"
    service: str = "kubespin-test"
    requests: list[tuple[str | None, list[str]]] = field(default_factory=list)
    address: str = ""

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubespin test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self._der = self.certificate.public_bytes(serialization.Encoding.DER)

    def issue(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if user is not None or (self.anonymous_pull and a == "pull")]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if service.users.get(name) != password:
                        return self.reply(401, {"details": "incorrect username or password"})
                    user = name
                scopes = query.get("scope", [])
                service.requests.append((user, scopes))
                if url.path != "/token" or query.get("service") != [service.service]:
                    return self.reply(400, {"details": "unknown service"})
                token = service.issue(user, scopes)
                return self.reply(200, {"token": token, "access_token": token, "expires_in": 300})

            def reply(self, status: int, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextlib.contextmanager
def _serve(service: TokenService) -> Iterator[TokenService]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), service.handler())
    service.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class RegistryServer:
    kind: str
    address: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log_path: Path
    storage: Path | None  # distribution's filesystem root
    tokens: TokenService | None = None  # with auth="token"

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.address}/{repository}:{tag}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far (ggcr logs each one)."""
        assert self.kind == "ggcr", "only the ggcr server logs every request"
        return _GGCR_REQUEST.findall(self.log())

    def blob_data_file(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        assert self.storage is not None, "only the distribution server stores blobs on disk"
        hex_digest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def start_registry(
    tmp_path: Path,
    kind: str = "ggcr",
    users: dict[str, str] | None = None,
    auth: str = "htpasswd",
    anonymous_pull: bool = False,
) -> Iterator[RegistryServer]:
    """Run a registry server until the block ends.

    ``users`` (distribution only) turns on authentication: ``auth="htpasswd"`` (Basic) or
    ``auth="token"`` (Bearer tokens from a :class:`TokenService`; ``anonymous_pull`` lets anyone pull).
    """
    with contextlib.ExitStack() as stack:
        tokens = stack.enter_context(_serve(TokenService(users or {}, anonymous_pull))) if auth == "token" else None
        yield stack.enter_context(_start(tmp_path, kind, users, tokens))


@contextlib.contextmanager
def _start(
    tmp_path: Path, kind: str, users: dict[str, str] | None, tokens: TokenService | None
) -> Iterator[RegistryServer]:
    binary = registry_binary(kind)
    work = tmp_path / f"registry-{kind}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    log_path = work / "server.log"
    storage = None
    if kind == "ggcr":
        assert not users, "go-containerregistry's registry has no authentication; use kind='distribution'"
        cmd = [str(binary), "-port", "0"]
    else:
        storage = work / "data"
        port = _free_port()
        config = work / "config.yml"
        auth = ""
        if tokens is not None:
            bundle = work / "token-signer.pem"
            bundle.write_bytes(tokens.certificate_pem)
            auth = (
                f"auth: {{token: {{realm: 'http://{tokens.address}/token', service: {tokens.service}, "
                f"issuer: {tokens.issuer}, rootcertbundle: {bundle}}}}}\n"
            )
        elif users:
            import bcrypt

            htpasswd = work / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                for user, password in users.items()
            ))
            auth = f"auth: {{htpasswd: {{realm: kubespin-test, path: {htpasswd}}}}}\n"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}, secret: kubespin-test-secret}}\n" + auth
        )
        cmd = [str(binary), "serve", str(config)]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 30
        address = None
        while address is None:
            if proc.poll() is not None:
                raise AssertionError(f"registry {kind} exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"registry {kind} not ready after 30 s:\n{log_path.read_text()}")
            if kind == "ggcr":
                found = re.search(r"serving on port (\d+)", log_path.read_text())
                address = f"127.0.0.1:{found.group(1)}" if found else None
            else:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                        address = f"127.0.0.1:{port}"
            if address is None:
                time.sleep(0.05)
        server = RegistryServer(kind, address, proc, log_path, storage, tokens)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
