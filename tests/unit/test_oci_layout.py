"""Spin OCI artifacts in OCI image layouts (dir, .tar, .tar.gz) → AppManifest, and locked apps.

Two sources of artifacts: layouts written by ``write_oci_layout`` from the fixture spin.toml (round
trip), and layouts assembled by hand below in exactly the shape ``spin registry push`` produces
(Spin 2.0+: locked app as a layer; Spin 1.x: locked app as the config), so the reader is not only
checked against our own writer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from kubespin_shim.errors import ManifestError
from kubespin_shim.locked_app import app_from_locked, locked_app_for_push
from kubespin_shim.manifest import (
    AppManifest,
    FileMount,
    HttpTrigger,
    VariableDecl,
    guest_files,
    load_app,
    load_manifest,
)
from kubespin_shim.oci_layout import (
    ARCHIVE_LAYER_MEDIA_TYPE,
    DATA_LAYER_MEDIA_TYPE,
    SPIN_APPLICATION_MEDIA_TYPE,
    write_oci_layout,
    write_oci_tarball,
)
from test_manifest import WASM, make_app

WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def assert_same_app(expected: AppManifest, loaded: AppManifest) -> None:
    """Same app as the guest and the host factors see it, whatever the packaging."""
    for field in ("name", "version", "description", "variables", "http_triggers", "http_base"):
        assert getattr(loaded, field) == getattr(expected, field), field
    assert list(loaded.components) == list(expected.components)
    for cid, want in expected.components.items():
        got = loaded.components[cid]
        for field in (
            "environment",
            "allowed_outbound_hosts",
            "key_value_stores",
            "sqlite_databases",
            "ai_models",
            "variables",
            "description",
        ):
            assert getattr(got, field) == getattr(want, field), (cid, field)
        assert got.source.read_bytes() == want.source.read_bytes()
        want_files = {g: p.read_bytes() for g, p in guest_files(want.files).items()}
        assert {g: p.read_bytes() for g, p in guest_files(got.files).items()} == want_files, cid


@pytest.fixture
def source_app(tmp_path: Path) -> AppManifest:
    return load_manifest(make_app(tmp_path))


def test_fixture_app_round_trips_through_layout_dir(source_app: AppManifest, tmp_path: Path) -> None:
    digest = write_oci_layout(source_app, tmp_path / "layout")
    loaded = load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert_same_app(source_app, loaded)
    hex_digest = digest.split(":")[1]
    assert loaded.origin == f"{tmp_path / 'layout'}@{digest}"
    assert loaded.base_dir == tmp_path / "work" / hex_digest
    assert loaded.components["hello"].source.parent == tmp_path / "work" / hex_digest / "wasm"
    assert loaded.components["hello"].files == (
        FileMount("/", tmp_path / "work" / hex_digest / "assets" / "hello", True),
    )


def test_written_layout_has_spin_media_types(source_app: AppManifest, tmp_path: Path) -> None:
    write_oci_layout(source_app, tmp_path / "layout")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest = json.loads(blob(tmp_path / "layout", index["manifests"][0]["digest"]))
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types == [WASM_LAYER, DATA_LAYER_MEDIA_TYPE, SPIN_APPLICATION_MEDIA_TYPE]  # one wasm (deduplicated), app.js
    config = json.loads(blob(tmp_path / "layout", manifest["config"]["digest"]))
    assert config["architecture"] == "wasm"
    assert config["config"]["Labels"]["com.fermyon.spin.lockedAppDigest"] == manifest["layers"][-1]["digest"]
    locked = json.loads(blob(tmp_path / "layout", manifest["layers"][-1]["digest"]))
    hello = next(c for c in locked["components"] if c["id"] == "hello")
    by_path = {f["path"]: f for f in hello["files"]}
    assert "inline" in by_path["static/index.html"] and "inline" not in by_path["static/app.js"]
    assert base64.b64decode(by_path["static/index.html"]["inline"] + "==") == b"<h1>hello</h1>\n"


@pytest.mark.parametrize(("name", "archive"), [("app.tar", False), ("app.tar.gz", False), ("app.tgz", True)])
def test_fixture_app_round_trips_through_tarball(
    source_app: AppManifest, tmp_path: Path, name: str, archive: bool
) -> None:
    write_oci_tarball(source_app, tmp_path / name, archive_files=archive)
    if archive:
        with tarfile.open(tmp_path / name) as tar:
            names = tar.getnames()
        assert any(n.startswith("blobs/sha256/") for n in names)
    assert_same_app(source_app, load_app(tmp_path / name, work_dir=tmp_path / "work"))
    assert [p.name for p in (tmp_path / "work").iterdir()] != []
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]  # staging cleaned up


def test_archive_layer_is_used_for_files(source_app: AppManifest, tmp_path: Path) -> None:
    write_oci_layout(source_app, tmp_path / "layout", archive_files=True)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest = json.loads(blob(tmp_path / "layout", index["manifests"][0]["digest"]))
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert DATA_LAYER_MEDIA_TYPE not in types and types.count(ARCHIVE_LAYER_MEDIA_TYPE) == 3  # hello, assets, internal
    assert_same_app(source_app, load_app(tmp_path / "layout", work_dir=tmp_path / "work"))


def test_locked_app_round_trips_without_oci(source_app: AppManifest, tmp_path: Path) -> None:
    locked, contents = locked_app_for_push(source_app)
    by_digest = {c.digest: c.path for c in contents}

    class ByDigest:
        def wasm(self, cid: str, ref: dict[str, Any], key: str) -> Path:
            return by_digest[ref["digest"]]

        def files(self, cid: str, files: list[dict[str, Any]], key: str) -> tuple[FileMount, ...]:
            root = tmp_path / "assets" / cid
            for f in files:
                data = base64.b64decode(f["inline"] + "==") if "inline" in f else by_digest[f["digest"]].read_bytes()
                (root / f["path"]).parent.mkdir(parents=True, exist_ok=True)
                (root / f["path"]).write_bytes(data)
            return (FileMount("/", root, True),)

    again = json.loads(json.dumps(locked))
    assert_same_app(source_app, app_from_locked(again, file="mem", origin="mem", base_dir=tmp_path, content=ByDigest()))
    assert json.dumps(locked_app_for_push(source_app)[0]) == json.dumps(locked)  # deterministic


# ---------------------------------------------------------------------------------------------
# Hand-assembled artifacts in the shape `spin registry push` produces


BIG = b"a line of text that is long enough to need its own data layer\n" * 4  # > 128 bytes
SMALL = b"tiny\n"


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def put(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def spin_locked_app(**component_overrides: Any) -> dict[str, Any]:
    component = {
        "id": "hello",
        "metadata": {
            "description": "says hello",
            "allowed_outbound_hosts": ["https://example.com", "https://{{ who }}.example.com"],
            "key_value_stores": ["default"],
            "databases": ["default"],
            "ai_models": ["llama2-chat"],
            "build": {"command": "cargo build"},
        },
        "source": {"content_type": "application/wasm", "digest": sha(WASM)},
        "env": {"RUST_LOG": "info"},
        "files": [
            {"digest": sha(BIG), "path": "static/big.txt"},
            {"inline": base64.b64encode(SMALL).decode().rstrip("="), "digest": sha(SMALL), "path": "small.txt"},
        ],
        "config": {"greeting": "hello {{ who }}"},
    }
    component.update(component_overrides)
    return {
        "spin_lock_version": 1,
        "metadata": {"name": "hand-built", "version": "0.1.0", "trigger": {"type": "http"}, "triggers": {"http": {}}},
        "variables": {"who": {"default": "world"}, "token": {"secret": True}},
        "triggers": [
            {
                "id": "trigger-hello",
                "trigger_type": "http",
                "trigger_config": {"component": "hello", "route": "/hello/...", "executor": {"type": "http"}},
            },
            {
                "id": "trigger-private",
                "trigger_type": "http",
                "trigger_config": {"component": "hello", "route": {"private": True}},
            },
        ],
        "components": [component],
    }


def spin_layout(root: Path, locked: dict[str, Any], *, locked_in: str = "layer", ref: str = "latest") -> str:
    """An image layout as Spin pushes it; returns the manifest digest."""
    layers = [put(root, WASM, WASM_LAYER), put(root, BIG, DATA_LAYER_MEDIA_TYPE)]
    locked_bytes = json.dumps(locked).encode()
    if locked_in == "layer":  # Spin 2.0+
        layers.append(put(root, locked_bytes, SPIN_APPLICATION_MEDIA_TYPE))
        config = put(
            root,
            json.dumps({"architecture": "wasm", "os": "wasip1"}).encode(),
            "application/vnd.oci.image.config.v1+json",
        )
    else:  # Spin 1.x
        config = put(root, locked_bytes, SPIN_APPLICATION_MEDIA_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    entry = put(root, json.dumps(manifest).encode(), OCI_MANIFEST)
    entry["annotations"] = {"org.opencontainers.image.ref.name": ref}
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return entry["digest"]


@pytest.mark.parametrize("locked_in", ["layer", "config"])
def test_spin_pushed_artifact_loads(tmp_path: Path, locked_in: str) -> None:
    digest = spin_layout(tmp_path / "layout", spin_locked_app(), locked_in=locked_in)
    app = load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert (app.name, app.version, app.description, app.http_base) == ("hand-built", "0.1.0", None, "/")
    assert app.variables == {
        "who": VariableDecl("who", "world", False, False),
        "token": VariableDecl("token", None, True, True),
    }
    assert app.http_triggers == (
        HttpTrigger("hello", "/hello/...", False, "trigger-hello"),
        HttpTrigger("hello", None, True, "trigger-private"),
    )
    hello = app.components["hello"]
    assert hello.source.read_bytes() == WASM
    assert hello.environment == {"RUST_LOG": "info"} and hello.variables == {"greeting": "hello {{ who }}"}
    assert hello.allowed_outbound_hosts == ("https://example.com", "https://{{ who }}.example.com")
    assert (hello.key_value_stores, hello.sqlite_databases, hello.ai_models) == (
        ("default",),
        ("default",),
        ("llama2-chat",),
    )
    assert hello.description == "says hello"
    files = {g: p.read_bytes() for g, p in guest_files(hello.files).items()}
    assert files == {"/static/big.txt": BIG, "/small.txt": SMALL}
    assert app.base_dir == tmp_path / "work" / digest.split(":")[1]


def test_tampered_blob_is_rejected(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app())
    big = tmp_path / "layout" / "blobs" / "sha256" / sha(BIG)[7:]
    big.write_bytes(BIG.replace(b"text", b"TEXT"))  # same size, different bytes
    with pytest.raises(ManifestError, match=f"blob {sha(BIG)} is corrupt") as caught:
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert caught.value.file == str(tmp_path / "layout")
    assert not any((tmp_path / "work").iterdir())  # nothing half-materialised is left behind


def test_tampered_blob_in_tarball_is_rejected(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app())
    (tmp_path / "layout" / "blobs" / "sha256" / sha(WASM)[7:]).write_bytes(b"\0asm\x01\0\0\x01")
    with tarfile.open(tmp_path / "app.tar.gz", "w:gz") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(tmp_path / "layout" / name, arcname=f"./{name}")
    with pytest.raises(ManifestError, match="is corrupt"):
        load_app(tmp_path / "app.tar.gz", work_dir=tmp_path / "work")


def test_size_mismatch_and_missing_blob_are_rejected(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app())
    big = tmp_path / "layout" / "blobs" / "sha256" / sha(BIG)[7:]
    big.write_bytes(BIG + b"x")
    with pytest.raises(ManifestError, match="the descriptor says"):
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    big.unlink()
    with pytest.raises(ManifestError, match="is missing from the layout"):
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")


def test_inline_content_must_match_its_digest(tmp_path: Path) -> None:
    locked = spin_locked_app()
    locked["components"][0]["files"][1]["digest"] = sha(b"something else")
    spin_layout(tmp_path / "layout", locked)
    with pytest.raises(ManifestError, match="does not match its digest") as caught:
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert caught.value.key == "components[0].files[1]"


def test_second_load_reuses_the_materialised_app(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app())
    first = load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    (tmp_path / "layout" / "blobs" / "sha256" / sha(WASM)[7:]).unlink()  # not needed any more
    assert load_app(tmp_path / "layout", work_dir=tmp_path / "work") == first
    first.components["hello"].source.unlink()
    with pytest.raises(ManifestError, match=r"delete .* and load again"):
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")


@pytest.mark.parametrize("path", ["../escape.txt", "/abs/../../escape.txt", "a/./b", ""])
def test_file_paths_that_could_escape_are_rejected(tmp_path: Path, path: str) -> None:
    locked = spin_locked_app(files=[{"digest": sha(BIG), "path": path}])
    spin_layout(tmp_path / "layout", locked)
    with pytest.raises(ManifestError, match="invalid file mount path") as caught:
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert caught.value.key == "components[0].files[0].path"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "work" / "escape.txt").exists()


def test_layout_without_spin_app_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    config = put(root, b'{"architecture": "wasm", "os": "wasip1"}', "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "config": config, "layers": [put(root, WASM, "application/wasm")]}
    (root / "index.json").write_text(
        json.dumps({"manifests": [put(root, json.dumps(manifest).encode(), OCI_MANIFEST)]})
    )
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with pytest.raises(ManifestError, match="no Spin application in this layout"):
        load_app(root, work_dir=tmp_path / "work")


def test_layout_with_two_apps_is_rejected(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app(), ref="one")
    locked = spin_locked_app()
    locked["metadata"]["name"] = "other"
    spin_layout(tmp_path / "layout", locked, ref="two")
    with pytest.raises(ManifestError, match="holds 2 Spin apps"):
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")


def test_manifest_digest_in_index_is_verified(tmp_path: Path) -> None:
    digest = spin_layout(tmp_path / "layout", spin_locked_app())
    manifest = tmp_path / "layout" / "blobs" / "sha256" / digest[7:]
    manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion": 3'))
    with pytest.raises(ManifestError, match="is corrupt"):
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")


def test_unsupported_host_requirement_is_rejected(tmp_path: Path) -> None:
    locked = spin_locked_app()
    locked["host_requirements"] = {"quantum_entanglement": "required", "local_service_chaining": "required"}
    spin_layout(tmp_path / "layout", locked)
    with pytest.raises(ManifestError, match="host feature kubespin does not support") as caught:
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert caught.value.key == "host_requirements.quantum_entanglement"


def test_locked_app_variables_are_validated(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app(config={"greeting": "{{ nobody }}"}))
    with pytest.raises(ManifestError, match="unknown application variable 'nobody'") as caught:
        load_app(tmp_path / "layout", work_dir=tmp_path / "work")
    assert caught.value.key == "components[0].config.greeting"


def test_garbage_tarball_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "app.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ManifestError, match="cannot read the OCI layout tarball"):
        load_app(tmp_path / "app.tar.gz", work_dir=tmp_path / "work")
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        tar.add(Path(__file__), arcname="README")
    with pytest.raises(ManifestError, match=r"no oci-layout and index\.json"):
        load_app(tmp_path / "other.tar", work_dir=tmp_path / "work")


def test_lock_file_written_by_spin_with_file_urls(tmp_path: Path) -> None:
    app_dir = make_app(tmp_path)
    locked = spin_locked_app(
        source={"content_type": "application/wasm", "source": (app_dir / "hello.wasm").as_uri()},
        files=[{"source": (app_dir / "static").as_uri(), "path": "/"}],
    )
    (tmp_path / "spin.lock.json").write_text(json.dumps(locked))
    app = load_app(tmp_path / "spin.lock.json", work_dir=tmp_path / "work")
    assert app.components["hello"].source == app_dir / "hello.wasm"
    assert app.components["hello"].files == (FileMount("/", app_dir / "static", True),)


def test_second_tarball_load_reuses_the_materialised_app(tmp_path: Path) -> None:
    spin_layout(tmp_path / "layout", spin_locked_app())
    with tarfile.open(tmp_path / "app.tar", "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(tmp_path / "layout" / name, arcname=name)
    first = load_app(tmp_path / "app.tar", work_dir=tmp_path / "work")
    # Without the wasm and data blobs the tarball could not be materialised again: a hit must not need them.
    with tarfile.open(tmp_path / "app.tar", "w") as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(tmp_path / "layout" / name, arcname=name)
        for path in (tmp_path / "layout" / "blobs" / "sha256").iterdir():
            if path.name not in (sha(WASM)[7:], sha(BIG)[7:]):
                tar.add(path, arcname=f"blobs/sha256/{path.name}")
    assert load_app(tmp_path / "app.tar", work_dir=tmp_path / "work") == first
    with pytest.raises(ManifestError, match="is missing from the layout"):
        load_app(tmp_path / "app.tar", work_dir=tmp_path / "other-work")
