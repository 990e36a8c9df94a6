"""Spin apps through real OCI registry servers on 127.0.0.1, pulled and served by `kubespin up -f REF`.

Servers (scripts/build-registry): go-containerregistry's in-memory registry, which logs each
request, and distribution (the CNCF reference registry) with filesystem storage, so a stored blob
can be tampered with, and htpasswd users, so Basic auth is real. Apps are the SDK-built test apps
(py-hello: one 36 MB component; py-features: two components plus files, extended here with files
big enough to travel as data layers). Every `kubespin` call is a real process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.registry_server import RegistryServer, start_registry
from tests.shimproc import built_app, copy_app, run_shim, run_shim_expect_failure

KUBESPIN = [sys.executable, "-m", "kubespin"]
WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
DATA_LAYER = "application/vnd.wasm.content.layer.v1+data"
SPIN_APP = "application/vnd.fermyon.spin.application.v1+config"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SECRET = {"SPIN_VARIABLE_SECRET_TOKEN": "s3cret"}
BIG = os.urandom(300_000)
PAGE = b"<html><body>" + b"a page big enough for a data layer " * 20 + b"</body></html>\n"
READY = 300.0  # compiling py-features' two components from cold takes ~70 s on 2 cores


def kubespin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*KUBESPIN, *args], capture_output=True, text=True, env=full_env, timeout=300)


def push(app: Path, ref: str, *extra: str, env: dict[str, str] | None = None) -> str:
    """`kubespin registry push`; returns the digest-pinned reference it prints."""
    result = kubespin("registry", "push", str(app), ref, *extra, env=env)
    assert result.returncode == 0, result.stderr
    pinned = result.stdout.strip()
    assert pinned.startswith(ref + "@sha256:"), result.stdout
    return pinned


def registry_get(server: RegistryServer, path: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    headers = {"Accept": OCI_MANIFEST}
    r = httpx.get(f"http://{server.address}/v2/{path}", headers=headers, auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def features_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """py-features with two files over 128 bytes added to its assets (so they become data layers)."""
    app = copy_app("py-features", tmp_path_factory.mktemp("apps"))
    (app / "assets" / "big.bin").write_bytes(BIG)
    (app / "assets" / "sub" / "page.html").write_bytes(PAGE)
    return app


@pytest.fixture
def oci_env(tmp_path: Path) -> dict[str, str]:
    """An empty pull cache per test; the compile cache (KUBESPIN_CACHE) stays shared and warm."""
    return {"KUBESPIN_OCI_CACHE": str(tmp_path / "oci-cache")}


@pytest.fixture(params=["ggcr", "distribution"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    with start_registry(tmp_path, request.param) as s:
        yield s


def test_push_is_a_spin_artifact_that_kubespin_up_serves(
    server: RegistryServer, features_app: Path, tmp_path: Path, oci_env: dict[str, str]
) -> None:
    ref = server.ref("apps/py-features", "v1")
    pinned = push(features_app, ref, "--annotation", "org.opencontainers.image.source=https://example.test/src")
    digest = pinned.rsplit("@", 1)[1]

    # The artifact, read back raw from the registry, has the shape `spin registry push` gives it.
    raw = registry_get(server, f"apps/py-features/manifests/{digest}").content
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    config = json.loads(registry_get(server, f"apps/py-features/blobs/{manifest['config']['digest']}").content)
    locked_layer = manifest["layers"][-1]
    assert locked_layer["mediaType"] == SPIN_APP
    assert config == {
        "architecture": "wasm",
        "os": "Wasip1",
        "config": {"Labels": {"com.fermyon.spin.lockedAppDigest": locked_layer["digest"]}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types.count(WASM_LAYER) == 2 and types.count(DATA_LAYER) == 2 and len(types) == 5
    data_digests = {layer["digest"] for layer in manifest["layers"] if layer["mediaType"] == DATA_LAYER}
    assert data_digests == {"sha256:" + hashlib.sha256(b).hexdigest() for b in (BIG, PAGE)}
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.title"] == "py-features"
    assert annotations["org.opencontainers.image.version"] == "0.1.0"
    assert annotations["org.opencontainers.image.source"] == "https://example.test/src"
    assert datetime.fromisoformat(annotations["org.opencontainers.image.created"]).tzinfo is not None
    locked = json.loads(registry_get(server, f"apps/py-features/blobs/{locked_layer['digest']}").content)
    files = {f["path"]: f for f in next(c for c in locked["components"] if c["id"] == "features")["files"]}
    assert "inline" in files["static/hello.txt"] and "inline" not in files["static/big.bin"]

    # `kubespin up -f host:port/repo:tag` pulls it and serves every route, files and chaining included.
    with run_shim(ref, tmp_path, env={**SECRET, **oci_env}, ready_timeout=READY) as shim, shim.client() as client:
        assert client.get("/files/big.bin").content == BIG
        assert client.get("/files/sub/page.html").content == PAGE
        hello = (features_app / "assets" / "hello.txt").read_bytes()
        assert client.get("/files/hello.txt").content == hello
        chained = client.get("/chain")
        assert chained.status_code == 200 and chained.text == "hello from python\n"
        assert client.get("/env").json()["APP_MODE"] == "test"
    assert f"pulled {ref} ({digest})" in shim.log()


def test_cached_pulls_send_no_request(tmp_path: Path, oci_env: dict[str, str]) -> None:
    app = built_app("py-hello")
    size = (app / "app.wasm").stat().st_size
    with start_registry(tmp_path, "ggcr") as server:
        ref = server.ref("apps/py-hello", "v1")
        t0 = time.perf_counter()
        pinned = push(app, ref)
        push_s = time.perf_counter() - t0
        before = len(server.requests())
        t0 = time.perf_counter()
        first = kubespin("registry", "pull", ref, env=oci_env)
        pull_s = time.perf_counter() - t0
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == pinned
        fetched = server.requests()[before:]
        assert [m for m, _ in fetched] == ["GET"] * 4, fetched  # manifest, config, wasm, locked app
        print(f"\npy-hello ({size / 1e6:.1f} MB) via CLI: push {push_s:.2f} s, pull {pull_s:.2f} s")
        print(first.stderr.strip())

        # By tag again (IfNotPresent for v1), and by digest: answered from the cache, no request at all.
        for again in (ref, pinned):
            before = len(server.requests())
            result = kubespin("registry", "pull", again, env=oci_env)
            assert result.returncode == 0, result.stderr
            assert "from the cache, no network" in result.stderr
            assert server.requests()[before:] == []
        # Always re-resolves the tag with one manifest request and downloads nothing.
        before = len(server.requests())
        result = kubespin("registry", "pull", "--pull-policy", "Always", ref, env=oci_env)
        assert result.returncode == 0 and "1 registry requests, 0 bytes downloaded" in result.stderr
        assert server.requests()[before:] == [("GET", "/v2/apps/py-hello/manifests/v1")]
    # The registry is gone: `kubespin up -f REF@digest` still starts, from the cache alone.
    with run_shim(pinned, tmp_path, env=oci_env) as shim:
        assert httpx.get(shim.url + "/").text == "hello from python\n"
    assert "no registry request" in shim.log()


def test_tampered_blob_and_manifest_are_rejected(tmp_path: Path, oci_env: dict[str, str]) -> None:
    app = built_app("py-hello")
    with start_registry(tmp_path, "distribution") as server:
        ref = server.ref("apps/py-hello", "v1")
        pinned = push(app, ref)
        digest = pinned.rsplit("@", 1)[1]
        manifest = json.loads(registry_get(server, f"apps/py-hello/manifests/{digest}").content)
        wasm = next(layer for layer in manifest["layers"] if layer["mediaType"] == WASM_LAYER)
        stored = server.blob_data_file(wasm["digest"])
        original = stored.read_bytes()
        middle = len(original) // 2
        stored.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])

        result = kubespin("registry", "pull", ref, env=oci_env)
        assert result.returncode != 0
        assert f"blob {wasm['digest']}" in result.stderr and "corrupt or was tampered with" in result.stderr
        failed = run_shim_expect_failure(pinned, tmp_path, env=oci_env)
        assert failed.returncode != 0 and "corrupt or was tampered with" in failed.stderr
        cache = Path(oci_env["KUBESPIN_OCI_CACHE"])
        assert not (cache / "layouts" / digest.split(":")[1]).exists()
        assert not (cache / "blobs" / "sha256" / wasm["digest"].split(":")[1]).exists()

        # A manifest altered in storage: same length, one value changed.
        stored.write_bytes(original)
        manifest_file = server.blob_data_file(digest)
        altered = manifest_file.read_bytes().replace(b'"py-hello"', b'"py-hellp"', 1)
        assert altered != manifest_file.read_bytes()
        manifest_file.write_bytes(altered)
        by_tag = kubespin("registry", "pull", ref, env=oci_env)
        assert by_tag.returncode != 0 and "says its digest is" in by_tag.stderr
        by_digest = kubespin("registry", "pull", pinned, env=oci_env)
        assert by_digest.returncode != 0 and f"the manifest {server.address} served for" in by_digest.stderr
        assert "corrupt or was tampered with" in by_digest.stderr


def test_htpasswd_registry_needs_the_credentials(tmp_path: Path, oci_env: dict[str, str]) -> None:
    app = built_app("py-hello")
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    with start_registry(tmp_path, "distribution", users={"alice": "wonderland"}) as server:
        ref = server.ref("apps/private", "v1")
        env = {**oci_env, "DOCKER_CONFIG": str(docker_dir)}
        refused = kubespin("registry", "push", str(app), ref, env=env)
        assert refused.returncode != 0
        assert f"registry {server.address} requires authentication" in refused.stderr
        assert 'Basic realm="kubespin-test"' in refused.stderr
        assert f"{docker_dir / 'config.json'} (no such file)" in refused.stderr

        good = tmp_path / "good.json"
        auth = base64.b64encode(b"alice:wonderland").decode()
        good.write_text(json.dumps({"auths": {server.address: {"auth": auth}}}))
        pinned = push(app, ref, "--registry-auth", str(good), env=env)

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"auths": {f"http://{server.address}": {"username": "alice", "password": "no"}}}))
        wrong = kubespin("registry", "pull", "--registry-auth", str(bad), ref, env=env)
        assert wrong.returncode != 0
        assert f"rejected the credentials for user 'alice' from {bad}" in wrong.stderr

        # In a pod: the imagePullSecret's .dockerconfigjson, mounted, named by KUBESPIN_REGISTRY_AUTH.
        secret_dir = tmp_path / "secret-volume"
        secret_dir.mkdir()
        shutil.copy(good, secret_dir / ".dockerconfigjson")
        pod_env = {**env, "KUBESPIN_REGISTRY_AUTH": str(secret_dir / ".dockerconfigjson")}
        with run_shim(ref, tmp_path, env=pod_env) as shim:
            assert httpx.get(shim.url + "/").text == "hello from python\n"
        assert f"pulled {ref} ({pinned.rsplit('@', 1)[1]})" in shim.log()


def _actions(scope: str) -> tuple[str, set[str]]:
    resource, _, actions = scope.rpartition(":")
    return resource, set(actions.split(","))


def test_token_auth_registry_bearer_flow(tmp_path: Path, oci_env: dict[str, str]) -> None:
    """distribution with token auth: the bearer flow of ghcr.io / Docker Hub against the reference registry."""
    app = built_app("py-hello")
    with start_registry(tmp_path, "distribution", users={"alice": "wonderland"}, auth="token",
                        anonymous_pull=True) as server:
        assert server.tokens is not None
        ref = server.ref("apps/tokened", "v1")
        nobody = {**oci_env, "DOCKER_CONFIG": str(tmp_path / "nobody")}
        refused = kubespin("registry", "push", str(app), ref, env=nobody)
        assert refused.returncode != 0
        assert f"registry {server.address} requires authentication" in refused.stderr
        assert f'Bearer realm="http://{server.tokens.address}/token"' in refused.stderr

        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        config.write_text(json.dumps({"auths": {server.address: {"username": "alice", "password": "wonderland"}}}))
        server.tokens.requests.clear()
        pinned = push(app, ref, env={"DOCKER_CONFIG": str(config.parent)})
        # One token for the first (pull-scoped) request, one more when the upload needs push: no more.
        # distribution lists the actions of a challenge in no fixed order ("pull,push" or "push,pull").
        assert [(user, [_actions(scope) for scope in scopes]) for user, scopes in server.tokens.requests] == [
            ("alice", [("repository:apps/tokened", {"pull"})]),
            ("alice", [("repository:apps/tokened", {"pull", "push"})]),
        ]
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({"auths": {server.address: {"username": "alice", "password": "no"}}}))
        rejected = kubespin("registry", "pull", "--registry-auth", str(wrong), ref, env=nobody)
        assert rejected.returncode != 0
        assert f"rejected the credentials for user 'alice' from {wrong}" in rejected.stderr

        # Anonymous pull (public repository): an anonymous pull-scoped token, then the app serves.
        server.tokens.requests.clear()
        with run_shim(ref, tmp_path, env=nobody) as shim:
            assert httpx.get(shim.url + "/").text == "hello from python\n"
        assert server.tokens.requests == [(None, ["repository:apps/tokened:pull"])]
        assert f"pulled {ref} ({pinned.rsplit('@', 1)[1]})" in shim.log()


def test_unknown_names_and_non_spin_artifacts_are_explained(tmp_path: Path, oci_env: dict[str, str]) -> None:
    from kubespin_shim.registry.auth import CredentialLookup
    from kubespin_shim.registry.client import Descriptor, RegistryClient
    from kubespin_shim.registry.refs import parse_reference

    with start_registry(tmp_path, "ggcr") as server:
        missing_repo = kubespin("registry", "pull", server.ref("nothing/here", "v1"), env=oci_env)
        assert missing_repo.returncode != 0
        assert f"repository {server.address}/nothing/here does not exist" in missing_repo.stderr
        push(built_app("py-hello"), server.ref("apps/py-hello", "v1"))
        missing_tag = kubespin("registry", "pull", server.ref("apps/py-hello", "v9"), env=oci_env)
        assert missing_tag.returncode != 0
        assert f"manifest v9 not found in {server.address}/apps/py-hello" in missing_tag.stderr

        # An ordinary container image: config + tar+gzip layer, no locked Spin app.
        ref = parse_reference(server.ref("apps/container", "v1"))
        client = RegistryClient(ref, CredentialLookup(ref.registry, None), plain_http=True)
        blobs = {"config": (b'{"architecture":"amd64","os":"linux"}', OCI_CONFIG),
                 "layer": (b"\x1f\x8b not really gzip", "application/vnd.oci.image.layer.v1.tar+gzip")}
        descs = {}
        for name, (data, media_type) in blobs.items():
            (tmp_path / name).write_bytes(data)
            descs[name] = Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
            client.push_blob(tmp_path / name, descs[name])
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descs["config"].to_json(),
                           "layers": [descs["layer"].to_json()]}).encode()
        client.put_manifest(body, OCI_MANIFEST, "v1")
        result = run_shim_expect_failure(str(ref), tmp_path, env=oci_env)
        assert result.returncode != 0
        assert f"{ref} is not a Spin app" in result.stderr
        assert f"config {OCI_CONFIG}, layers application/vnd.oci.image.layer.v1.tar+gzip" in result.stderr


@pytest.mark.parametrize("locked_in", ["layer", "config"])
def test_artifact_in_spins_exact_shape_is_served(tmp_path: Path, oci_env: dict[str, str], locked_in: str) -> None:
    """Spin → kubespin: an artifact laid out byte for byte as Spin's oci client builds it, pushed verbatim.

    Spin 2+/3 (`layer`): OCI config with os "Wasip1" and the lockedAppDigest label, the compact
    locked app as the last layer, no `mediaType` in the manifest body; Spin 1.x (`config`): the
    locked app as the manifest's config.
    """
    wasm = (built_app("py-hello") / "app.wasm").read_bytes()
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    wasm_layer = put(wasm, WASM_LAYER)
    locked = {
        "spin_lock_version": 1,
        "metadata": {"name": "spin-made", "version": "1.0.0", "trigger": {"type": "http"},
                     "triggers": {"http": {}}},
        "triggers": [{"id": "trigger-hello", "trigger_type": "http",
                      "trigger_config": {"component": "hello", "route": "/..."}}],
        "components": [{"id": "hello", "metadata": {},
                        "source": {"content_type": "application/wasm", "digest": wasm_layer["digest"]}}],
        "host_requirements": {},
    }
    locked_bytes = json.dumps(locked, separators=(",", ":")).encode()
    if locked_in == "layer":
        locked_layer = put(locked_bytes, SPIN_APP)
        config = put(json.dumps({
            "architecture": "wasm", "os": "Wasip1",
            "config": {"Labels": {"com.fermyon.spin.lockedAppDigest": locked_layer["digest"]}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }, separators=(",", ":")).encode(), OCI_CONFIG)
        layers = [wasm_layer, locked_layer]
    else:
        config, layers = put(locked_bytes, SPIN_APP), [wasm_layer]
    manifest = {"schemaVersion": 2, "config": config, "layers": layers,
                "annotations": {"org.opencontainers.image.title": "spin-made"}}
    entry = put(json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    with start_registry(tmp_path, "ggcr") as server:
        ref = server.ref("apps/spin-made", locked_in)
        assert push(layout, ref) == f"{ref}@{entry['digest']}"  # verbatim: the digest is Spin's
        with run_shim(ref, tmp_path, env=oci_env) as shim:
            assert httpx.get(shim.url + "/anything").text == "hello from python\n"
