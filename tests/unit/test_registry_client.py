"""The registry client's auth and verification plumbing, against a small test-local registry.

The integration tests run the real servers (go-containerregistry's; distribution's with htpasswd
and with token auth backed by a test token service). This file keeps the fast, fine-grained
checks: a minimal distribution-API server written for the test (blob upload and fetch,
manifests, a token endpoint granting per-repository scopes) with knobs that serve altered blobs,
a wrong digest header, or raw index documents, so each verification can be seen to fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from kubespin_shim.manifest import load_manifest
from kubespin_shim.oci_layout import load_oci_layout
from kubespin_shim.registry.errors import (
    DigestMismatchError,
    InsecureRegistryError,
    NotASpinAppError,
    RegistryAuthError,
    RegistryUnreachableError,
)
from kubespin_shim.registry.pull import pull_app
from kubespin_shim.registry.push import push_app
from kubespin_shim.registry.store import ArtifactStore
from test_manifest import make_app
from test_oci_layout import assert_same_app

_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?P<kind>blobs|manifests)/(?P<rest>.+)$")
_UPLOADS = re.compile(r"^/v2/(?P<repo>.+?)/blobs/uploads/(?P<id>[^/?]*)$")


@dataclass
class TokenRegistry:
    """State of the fake registry; tests read the logs and flip the knobs."""

    users: dict[str, str]
    anonymous_pull: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tokens: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # token -> (user, scope)
    token_requests: list[tuple[str | None, str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    serve_altered_blob: dict[str, bytes] = field(default_factory=dict)
    wrong_digest_header: bool = False
    address: str = ""

    def grant(self, user: str | None, scope: str) -> str | None:
        """A token for ``scope`` if ``user`` may have it (pull for anyone when anonymous_pull)."""
        actions = scope.rsplit(":", 1)[-1].split(",") if scope else []
        if user is None and not (self.anonymous_pull and actions == ["pull"]):
            return None
        token = uuid.uuid4().hex
        self.tokens[token] = (user, scope)
        return token

    def allowed(self, header: str | None, repo: str, action: str) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        _user, scope = self.tokens.get(header[7:], (None, ""))
        return scope.startswith(f"repository:{repo}:") and action in scope.rsplit(":", 1)[-1].split(",")


def _handler(state: TokenRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status: int, code: str) -> None:
            self.reply(status, json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode())

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def token_endpoint(self, query: dict[str, list[str]]) -> None:
            scope = query.get("scope", [""])[0]
            user = None
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if state.users.get(name) != password:
                    self.reply(401, b'{"details":"incorrect username or password"}')
                    return
                user = name
            state.token_requests.append((user, scope))
            token = state.grant(user, scope)
            if token is None:
                self.reply(401, b'{"details":"requested access to the resource is denied"}')
            else:
                self.reply(200, json.dumps({"token": token}).encode())

        def authorize(self, repo: str, action: str) -> bool:
            if state.allowed(self.headers.get("Authorization"), repo, action):
                return True
            actions = "pull" if action == "pull" else "pull,push"
            challenge = (
                f'Bearer realm="http://{state.address}/token",service="fake-registry",'
                f'scope="repository:{repo}:{actions}"'
            )
            self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
            return False

        def handle_any(self) -> None:
            url = urlsplit(self.path)
            state.requests.append((self.command, url.path))
            if url.path == "/token":
                return self.token_endpoint(parse_qs(url.query))
            action = "pull" if self.command in ("GET", "HEAD") else "push"
            if m := _UPLOADS.match(url.path):
                if not self.authorize(m["repo"], "push"):
                    return None
                if self.command == "POST":
                    return self.reply(202, headers={"Location": f"/v2/{m['repo']}/blobs/uploads/{uuid.uuid4().hex}"})
                digest = parse_qs(url.query)["digest"][0]
                data = self.body()
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    return self.error(400, "DIGEST_INVALID")
                state.blobs[digest] = data
                return self.reply(201, headers={"Docker-Content-Digest": digest})
            m = _PATH.match(url.path)
            if m is None:
                return self.error(404, "NOT_FOUND")
            if not self.authorize(m["repo"], action):
                return None
            if m["kind"] == "blobs":
                if m["rest"] not in state.blobs:
                    return self.error(404, "BLOB_UNKNOWN")
                return self.reply(200, state.serve_altered_blob.get(m["rest"], state.blobs[m["rest"]]))
            key = (m["repo"], m["rest"])
            if self.command == "PUT":
                data, media_type = self.body(), self.headers["Content-Type"]
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                state.manifests[key] = state.manifests[(m["repo"], digest)] = (data, media_type)
                return self.reply(201, headers={"Docker-Content-Digest": digest})
            if key not in state.manifests:
                return self.error(404, "MANIFEST_UNKNOWN")
            data, media_type = state.manifests[key]
            digest = "sha256:" + hashlib.sha256(b"other" if state.wrong_digest_header else data).hexdigest()
            return self.reply(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest})

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = handle_any

    return Handler


@pytest.fixture
def registry() -> Iterator[TokenRegistry]:
    state = TokenRegistry(users={"alice": "s3cret"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def docker_config(tmp_path: Path, registry: str, user: str, password: str) -> dict[str, str]:
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(config.parent)}


def test_bearer_tokens_are_fetched_per_scope_and_reused(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    app_dir = make_app(tmp_path)
    pushed = push_app(app_dir, f"{registry.address}/apps/fixture:v1", environ=env)
    scopes = [scope for _, scope in registry.token_requests]
    # A pull token for the first HEAD, then one for pull,push when the upload starts; then reused.
    assert scopes == ["repository:apps/fixture:pull", "repository:apps/fixture:pull,push"]
    assert all(user == "alice" for user, _ in registry.token_requests)
    assert pushed.blobs_uploaded == pushed.layers + 1

    store = ArtifactStore(tmp_path / "cache")
    pulled = pull_app(f"{registry.address}/apps/fixture:v1", store=store, environ=env)
    assert pulled.digest == pushed.digest
    app = load_oci_layout(pulled.layout_dir, work_dir=tmp_path / "work")
    assert_same_app(load_manifest(app_dir), app)


def test_anonymous_pull_token_and_push_without_credentials(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    push_app(make_app(tmp_path), f"{registry.address}/apps/public:v1", environ=env)
    registry.anonymous_pull = True
    registry.token_requests.clear()
    nobody = {"DOCKER_CONFIG": str(tmp_path / "nobody")}
    pull_app(f"{registry.address}/apps/public:v1", store=ArtifactStore(tmp_path / "c"), environ=nobody)
    assert registry.token_requests == [(None, "repository:apps/public:pull")]
    with pytest.raises(RegistryAuthError) as caught:
        push_app(make_app(tmp_path / "again"), f"{registry.address}/apps/public:v2", environ=nobody)
    message = str(caught.value)
    assert f"registry {registry.address} requires authentication" in message
    assert str(tmp_path / "nobody" / "config.json") in message and "no such file" in message
    assert "docker login" in message and "KUBESPIN_REGISTRY_AUTH" in message


def test_wrong_password_names_user_registry_and_file(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "wrong")
    with pytest.raises(RegistryAuthError) as caught:
        push_app(make_app(tmp_path), f"{registry.address}/apps/x:v1", environ=env)
    message = str(caught.value)
    assert f"registry {registry.address} rejected the credentials for user 'alice'" in message
    assert str(tmp_path / "docker" / "config.json") in message


def test_registry_token_from_config_is_sent_as_bearer(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    pushed = push_app(make_app(tmp_path), f"{registry.address}/apps/x:v1", environ=env)
    token = registry.grant("alice", "repository:apps/x:pull")
    config = tmp_path / "token.json"
    config.write_text(json.dumps({"auths": {registry.address: {"registrytoken": token}}}))
    registry.token_requests.clear()
    pulled = pull_app(f"{registry.address}/apps/x:v1", store=ArtifactStore(tmp_path / "c"), auth_files=[config],
                      environ={})
    assert pulled.digest == pushed.digest and registry.token_requests == []


def test_altered_blob_is_rejected_and_nothing_is_cached(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    pushed = push_app(make_app(tmp_path), f"{registry.address}/apps/x:v1", environ=env)
    manifest = json.loads(registry.manifests[("apps/x", pushed.digest)][0])
    wasm = next(layer for layer in manifest["layers"] if layer["mediaType"].endswith("+wasm"))
    original = registry.blobs[wasm["digest"]]
    registry.serve_altered_blob[wasm["digest"]] = original[:-1] + bytes([original[-1] ^ 1])  # same size
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(DigestMismatchError) as caught:
        pull_app(f"{registry.address}/apps/x:v1", store=store, environ=env)
    assert f"blob {wasm['digest']}" in str(caught.value) and "tampered" in str(caught.value)
    assert not store.has_layout(pushed.digest)
    assert not store.blob_path(wasm["digest"]).exists()
    assert not list(store.blob_path(wasm["digest"]).parent.glob(".incoming-*"))
    registry.serve_altered_blob[wasm["digest"]] = original + b"extra"
    with pytest.raises(DigestMismatchError, match="longer than"):
        pull_app(f"{registry.address}/apps/x:v1", store=store, environ=env)


def test_manifest_digest_header_is_checked_for_tags(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    pushed = push_app(make_app(tmp_path), f"{registry.address}/apps/x:v1", environ=env)
    registry.wrong_digest_header = True
    with pytest.raises(DigestMismatchError, match="says its digest is"):
        pull_app(f"{registry.address}/apps/x:v1", store=ArtifactStore(tmp_path / "c"), environ=env)
    # By digest the header is irrelevant: the body itself must hash to the digest asked for.
    pulled = pull_app(f"{registry.address}/apps/x@{pushed.digest}", store=ArtifactStore(tmp_path / "d"), environ=env)
    assert pulled.digest == pushed.digest


def test_refused_connection_fails_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    t0 = time.monotonic()
    with pytest.raises(RegistryUnreachableError, match=rf"cannot reach registry 127\.0\.0\.1:{port} over http"):
        pull_app(f"127.0.0.1:{port}/apps/x:v1", store=ArtifactStore(tmp_path / "c"), environ={})
    assert time.monotonic() - t0 < 5  # oras-py's own retry loop would sleep ~2 minutes here


def put_raw_manifest(registry: TokenRegistry, repo: str, tag: str, document: dict[str, object]) -> dict[str, object]:
    body = json.dumps(document).encode()
    media_type = str(document["mediaType"])
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    registry.manifests[(repo, tag)] = registry.manifests[(repo, digest)] = (body, media_type)
    return {"mediaType": media_type, "digest": digest, "size": len(body)}


def test_index_with_one_spin_manifest_is_pulled(tmp_path: Path, registry: TokenRegistry) -> None:
    env = docker_config(tmp_path, registry.address, "alice", "s3cret")
    app_dir = make_app(tmp_path)
    pushed = push_app(app_dir, f"{registry.address}/apps/multi:spin", environ=env)
    spin_entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": pushed.digest,
                  "size": len(registry.manifests[("apps/multi", pushed.digest)][0]),
                  "platform": {"architecture": "wasm", "os": "wasip1"}}
    registry.blobs["sha256:" + hashlib.sha256(b"{}").hexdigest()] = b"{}"
    other = put_raw_manifest(registry, "apps/multi", "linux", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2},
        "layers": []})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**other, "platform": {"architecture": "amd64", "os": "linux"}}, spin_entry]}
    index_desc = put_raw_manifest(registry, "apps/multi", "v1", index)
    pulled = pull_app(f"{registry.address}/apps/multi:v1", store=ArtifactStore(tmp_path / "c"), environ=env)
    assert pulled.digest == index_desc["digest"]
    assert_same_app(load_manifest(app_dir), load_oci_layout(pulled.layout_dir, work_dir=tmp_path / "work"))

    put_raw_manifest(registry, "apps/multi", "two", {**index, "manifests": [spin_entry, spin_entry]})
    with pytest.raises(NotASpinAppError, match="index with 2 Spin apps"):
        pull_app(f"{registry.address}/apps/multi:two", store=ArtifactStore(tmp_path / "d"), environ=env)
    put_raw_manifest(registry, "apps/multi", "none", {**index, "manifests": [index["manifests"][0]]})
    with pytest.raises(NotASpinAppError, match=r"index with 0 Spin apps.*config application/vnd\.oci\.image\.config"):
        pull_app(f"{registry.address}/apps/multi:none", store=ArtifactStore(tmp_path / "e"), environ=env)


def test_https_to_a_plain_http_registry_says_how_to_allow_it(tmp_path: Path, registry: TokenRegistry) -> None:
    from kubespin_shim.registry.auth import CredentialLookup
    from kubespin_shim.registry.client import RegistryClient
    from kubespin_shim.registry.refs import parse_reference

    ref = parse_reference(f"{registry.address}/apps/x:v1")
    client = RegistryClient(ref, CredentialLookup(ref.registry, None), plain_http=False)  # as for a remote host
    with pytest.raises(InsecureRegistryError, match=r"answered HTTPS with plain HTTP.*--insecure"):
        client.manifest("v1")
