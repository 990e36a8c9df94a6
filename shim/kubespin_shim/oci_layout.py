"""Spin OCI app artifacts (what ``spin registry push`` makes) in an OCI image layout, dir or tarball.

Reading supports every shape Spin has pushed:

* Spin 2.0+ (crates/oci/src/client.rs): config ``application/vnd.oci.image.config.v1+json``
  (architecture wasm), the locked app as a *layer* of type ``application/vnd.fermyon.spin.application.v1+config``;
* Spin 1.x: the locked app *as the config*, with that same media type;
* wasm layers ``application/vnd.wasm.content.layer.v1+wasm`` (or ``application/wasm``), one data layer
  ``application/vnd.wasm.content.layer.v1+data`` per file (files of at most 128 bytes travel inline in
  the locked app instead), and, from Spin 2.5 when an app would exceed 500 layers or
  ``SPIN_OCI_ARCHIVE_LAYERS`` is set, one ``application/vnd.wasm.content.bundle.v1.tar+gzip`` archive
  per component's files whose members are found by their sha256.

Every blob is checked against its descriptor's size and digest before use. The app is materialised
once under ``work_dir/<manifest hex digest>/`` (``wasm/<hex>.wasm``, ``assets/<component>/…``), built
in a temporary directory and renamed into place, so a second load reuses it and concurrent loads agree.
Writing produces the Spin 2.0+ shape.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .locked_app import app_from_locked, decode_inline, locked_app_for_push, safe_relative_path
from .manifest import AppManifest, FieldReader, FileMount, guest_files

SPIN_APPLICATION_MEDIA_TYPE = "application/vnd.fermyon.spin.application.v1+config"
WASM_LAYER_MEDIA_TYPES = ("application/vnd.wasm.content.layer.v1+wasm", "application/wasm")
DATA_LAYER_MEDIA_TYPE = "application/vnd.wasm.content.layer.v1+data"
ARCHIVE_LAYER_MEDIA_TYPE = "application/vnd.wasm.content.bundle.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_MANIFEST_TYPES = (OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
_INDEX_TYPES = (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_LAYOUT_MEMBER = re.compile(r"oci-layout|index\.json|blobs/(sha256|sha512)/[0-9a-f]+")
_COMPLETE = ".complete"
_SMALL_BLOB = 1 << 20
_LOCKED_FILE = "locked-app.json"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def default_work_dir() -> Path:
    """Where unpacked apps go: ``$KUBESPIN_WORK_DIR``, else ``kubespin-apps`` in the temp directory."""
    return Path(os.environ.get("KUBESPIN_WORK_DIR") or Path(tempfile.gettempdir()) / "kubespin-apps")


def load_oci_layout(path: Path, *, work_dir: Path | None = None) -> AppManifest:
    """Load a Spin app from an OCI image layout directory or a ``.tar``/``.tar.gz`` of one."""
    path = Path(path).absolute()
    work_dir = Path(work_dir if work_dir is not None else default_work_dir()).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        return _load_layout_dir(_Layout(path, str(path)), work_dir)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".unpack-") as tmp:
        staging = Path(tmp)
        # First only the small members (index, manifests): enough to find an earlier materialisation,
        # so a restart does not copy a large wasm out of the tarball again.
        _stage_tarball(path, staging, max_size=_SMALL_BLOB)
        try:
            if (app := _cached_app(_Layout(staging, str(path)), work_dir)) is not None:
                return app
        except ManifestError:
            pass  # judged below, with every blob present
        _stage_tarball(path, staging)
        return _load_layout_dir(_Layout(staging, str(path)), work_dir)


# ---------------------------------------------------------------------------------------------
# Reading


class _Layout(FieldReader):
    """An OCI image layout directory; every blob read is verified against its descriptor."""

    def __init__(self, root: Path, origin: str) -> None:
        super().__init__(origin)
        self.root = root
        self.verified: set[str] = set()

    def descriptor(self, value: Any, key: str) -> Descriptor:
        desc = self.table(value, key)
        digest = self.string(desc.get("digest"), f"{key}.digest")
        match = _DIGEST.fullmatch(digest)
        if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
            self.fail(f"{key}.digest", f"unsupported or malformed digest {digest!r} (expected sha256:<64 hex>)")
        size = desc.get("size")
        if type(size) is not int or size < 0:
            self.fail(f"{key}.size", f"expected a byte count, found {size!r}")
        return Descriptor(self.string(desc.get("mediaType"), f"{key}.mediaType"), digest, size)

    def blob_path(self, desc: Descriptor, key: str) -> Path:
        algorithm, hex_digest = desc.digest.split(":", 1)
        path = self.root / "blobs" / algorithm / hex_digest
        if desc.digest in self.verified:
            return path
        if not path.is_file():
            self.fail(key, f"blob {desc.digest} ({desc.media_type}) is missing from the layout")
        if path.stat().st_size != desc.size:
            self.fail(key, f"blob {desc.digest} has {path.stat().st_size} bytes, the descriptor says {desc.size}")
        with open(path, "rb") as f:
            actual = hashlib.file_digest(f, algorithm).hexdigest()
        if actual != hex_digest:
            self.fail(key, f"blob {desc.digest} is corrupt: its content has digest {algorithm}:{actual}")
        self.verified.add(desc.digest)
        return path

    def json_blob(self, desc: Descriptor, key: str) -> Any:
        try:
            return json.loads(self.blob_path(desc, key).read_bytes())
        except ValueError as e:
            self.fail(key, f"blob {desc.digest} ({desc.media_type}) is not JSON: {e}")

    def index(self) -> list[tuple[Descriptor, dict[str, Any]]]:
        """Every image manifest the layout's index.json reaches (nested indexes followed)."""
        try:
            marker = json.loads((self.root / "oci-layout").read_bytes())
            index = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as e:
            self.fail("", f"not an OCI image layout (oci-layout, index.json): {e}")
        version = str(self.table(marker, "oci-layout").get("imageLayoutVersion", ""))
        if not version.startswith("1."):
            self.fail("oci-layout.imageLayoutVersion", f"unsupported image layout version {version!r}")
        return self.manifests_of(index, "index.json", depth=0)

    def manifests_of(self, index: Any, key: str, depth: int) -> list[tuple[Descriptor, dict[str, Any]]]:
        found = []
        for i, raw in enumerate(self.array(self.table(index, key).get("manifests", []), f"{key}.manifests")):
            desc = self.descriptor(raw, f"{key}.manifests[{i}]")
            if desc.media_type in _INDEX_TYPES and depth < 4:
                found += self.manifests_of(self.json_blob(desc, f"{key}.manifests[{i}]"), desc.digest, depth + 1)
            elif desc.media_type in _MANIFEST_TYPES:
                found.append((desc, self.table(self.json_blob(desc, f"{key}.manifests[{i}]"), desc.digest)))
        return found

    def spin_manifest(self) -> tuple[Descriptor, dict[str, Any], Descriptor]:
        """The one image manifest holding a Spin app, and the descriptor of its locked app."""
        found = [(d, m, locked) for d, m in self.index() if (locked := self.locked_descriptor(m, d.digest))]
        if len(found) == 1:
            return found[0]
        if not found:
            self.fail(
                "index.json",
                "no Spin application in this layout: no layer or config of media type "
                f"{SPIN_APPLICATION_MEDIA_TYPE} (push the app with `spin registry push`)",
            )
        digests = ", ".join(d.digest for d, _, _ in found)
        self.fail("index.json", f"the layout holds {len(found)} Spin apps ({digests}); keep exactly one")

    def locked_descriptor(self, manifest: dict[str, Any], key: str) -> Descriptor | None:
        layers = [self.descriptor(d, f"{key}.layers[{i}]") for i, d in enumerate(manifest.get("layers", []))]
        for layer in layers:
            if layer.media_type == SPIN_APPLICATION_MEDIA_TYPE:  # Spin 2.0+
                return layer
        config = self.descriptor(manifest.get("config"), f"{key}.config")
        return config if config.media_type == SPIN_APPLICATION_MEDIA_TYPE else None  # Spin 1.x


def _cached_app(layout: _Layout, work_dir: Path) -> AppManifest | None:
    """The app as an earlier load materialised it, or None."""
    manifest_desc, _manifest, locked_desc = layout.spin_manifest()
    origin = f"{layout.file}@{manifest_desc.digest}"
    dest = work_dir / manifest_desc.digest.split(":", 1)[1]
    if not (dest / _COMPLETE).is_file():
        return None
    locked = json.loads((dest / _LOCKED_FILE).read_bytes())
    locked_file = f"{origin} (locked app {locked_desc.digest})"
    return app_from_locked(locked, file=locked_file, origin=origin, base_dir=dest, content=_Materialised(dest, layout))


def _load_layout_dir(layout: _Layout, work_dir: Path) -> AppManifest:
    if (app := _cached_app(layout, work_dir)) is not None:
        return app
    manifest_desc, manifest, locked_desc = layout.spin_manifest()
    origin = f"{layout.file}@{manifest_desc.digest}"
    dest = work_dir / manifest_desc.digest.split(":", 1)[1]
    locked_file = f"{origin} (locked app {locked_desc.digest})"
    locked_bytes = layout.blob_path(locked_desc, "locked app").read_bytes()
    try:
        locked = json.loads(locked_bytes)
    except ValueError as e:
        layout.fail("locked app", f"blob {locked_desc.digest} is not JSON: {e}")
    if dest.exists() and not (dest / _COMPLETE).is_file():
        # Not made by this code's rename (which moves a finished tree); content-addressed, so redo it.
        shutil.rmtree(dest, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=work_dir, prefix=f".{dest.name[:12]}-"))
    try:
        layers = [layout.descriptor(d, f"layers[{i}]") for i, d in enumerate(manifest.get("layers", []))]
        content = _Materialiser(layout, layers, staging, dest)
        app = app_from_locked(locked, file=locked_file, origin=origin, base_dir=dest, content=content)
        shutil.rmtree(staging / ".archives", ignore_errors=True)
        (staging / _LOCKED_FILE).write_bytes(locked_bytes)
        (staging / _COMPLETE).write_text(manifest_desc.digest + "\n")
        try:
            os.rename(staging, dest)
        except OSError:
            if not (dest / _COMPLETE).is_file():  # not another loader finishing first: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return app


def _stage_tarball(path: Path, staging: Path, *, max_size: int | None = None) -> None:
    """Copy a layout tarball's oci-layout, index.json and blobs into ``staging``, ignoring all else.

    Only those names are written, each under a path built here, so no member can land outside.
    With ``max_size``, larger members are skipped.
    """
    reader = FieldReader(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                too_big = max_size is not None and member.size > max_size
                if member.isfile() and not too_big and _LAYOUT_MEMBER.fullmatch(name):
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        reader.fail("", f"cannot read the OCI layout tarball: {e}")
    if not (staging / "oci-layout").is_file() or not (staging / "index.json").is_file():
        reader.fail("", "not an OCI image layout tarball: no oci-layout and index.json at its root")


class _Materialiser:
    """Writes a component's wasm and files from verified blobs into ``staging`` (renamed to ``final``)."""

    def __init__(self, layout: _Layout, layers: list[Descriptor], staging: Path, final: Path) -> None:
        self.layout = layout
        self.layers = {d.digest: d for d in layers}
        self.staging = staging
        self.final = final
        self.archived: dict[str, Path] | None = None

    def content(self, ref: Mapping[str, Any], key: str) -> bytes | Path:
        try:
            inline = decode_inline(ref)
        except ValueError as e:
            self.layout.fail(key, str(e))
        digest = ref.get("digest")
        if inline is not None:
            if digest is not None and digest != "sha256:" + hashlib.sha256(inline).hexdigest():
                self.layout.fail(key, f"inline content does not match its digest {digest}")
            return inline
        digest = self.layout.string(digest, f"{key}.digest")
        if digest in self.layers:
            return self.layout.blob_path(self.layers[digest], key)
        if digest in self.archive_index():
            return self.archive_index()[digest]
        self.layout.fail(key, f"content {digest} is in none of the artifact's layers")

    def archive_index(self) -> dict[str, Path]:
        """Files of every archive layer, unpacked once and indexed by their sha256 (as Spin does)."""
        if self.archived is None:
            self.archived = {}
            for desc in self.layers.values():
                if desc.media_type != ARCHIVE_LAYER_MEDIA_TYPE:
                    continue
                target = self.staging / ".archives" / desc.digest.split(":", 1)[1]
                try:
                    with tarfile.open(self.layout.blob_path(desc, "archive layer"), "r:*") as tar:
                        tar.extractall(target, filter="data")
                except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                    self.layout.fail("archive layer", f"cannot unpack {desc.digest}: {e}")
                for dirpath, _dirs, files in os.walk(target):
                    for name in files:
                        file = Path(dirpath) / name
                        with open(file, "rb") as f:
                            self.archived["sha256:" + hashlib.file_digest(f, "sha256").hexdigest()] = file
        return self.archived

    def wasm(self, component_id: str, ref: Mapping[str, Any], key: str) -> Path:
        data = self.content(ref, key)
        digest = ref.get("digest")
        if isinstance(data, bytes) and not digest:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        name = str(digest).split(":", 1)[1]
        target = self.staging / "wasm" / f"{name}.wasm"
        if not target.exists():
            _write(target, data)
        return self.final / "wasm" / f"{name}.wasm"

    def files(self, component_id: str, files: list[Mapping[str, Any]], key: str) -> tuple[FileMount, ...]:
        root = self.staging / "assets" / component_id
        root.mkdir(parents=True, exist_ok=True)
        for i, entry in enumerate(files):
            path = self.layout.string(entry.get("path"), f"{key}[{i}].path")
            rel = safe_relative_path(path)
            if rel is None:
                self.layout.fail(f"{key}[{i}].path", f"invalid file mount path {path!r}")
            _write(root / rel, self.content(entry, f"{key}[{i}]"))
        # Spin's OciLoader mounts the component's assets directory at "/".
        return (FileMount("/", self.final / "assets" / component_id, True),)


class _Materialised:
    """Content of an app materialised by an earlier load."""

    def __init__(self, root: Path, reader: FieldReader) -> None:
        self.root = root
        self.reader = reader

    def existing(self, path: Path, key: str) -> Path:
        if not path.exists():
            self.reader.fail(key, f"{path} is missing from the materialised app; delete {self.root} and load again")
        return path

    def wasm(self, component_id: str, ref: Mapping[str, Any], key: str) -> Path:
        digest = ref.get("digest")
        if not isinstance(digest, str):
            data = decode_inline(ref) or b""
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return self.existing(self.root / "wasm" / f"{digest.split(':', 1)[1]}.wasm", key)

    def files(self, component_id: str, files: list[Mapping[str, Any]], key: str) -> tuple[FileMount, ...]:
        return (FileMount("/", self.existing(self.root / "assets" / component_id, key), True),)


def _write(target: Path, data: bytes | Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        shutil.copyfile(data, target)


# ---------------------------------------------------------------------------------------------
# Writing (Spin 2.0+ shape)


def write_oci_layout(app: AppManifest, dest: Path, *, ref: str = "latest", archive_files: bool = False) -> str:
    """Write ``app`` as a Spin OCI artifact into an image layout directory; returns the manifest digest.

    ``archive_files`` packs each component's files into one tar.gz layer, like Spin does past 500 layers.
    """
    dest = Path(dest)
    (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    locked, contents = locked_app_for_push(app)
    layers: dict[str, Descriptor] = {}
    for item in contents:
        if item.kind == "wasm" or not archive_files:
            media_type = WASM_LAYER_MEDIA_TYPES[0] if item.kind == "wasm" else DATA_LAYER_MEDIA_TYPE
            layers.setdefault(item.digest, _put_file(dest, item.path, item.digest, media_type))
    if archive_files:
        for spec in app.components.values():
            if spec.files:
                desc = _put_bytes(dest, _archive(guest_files(spec.files)), ARCHIVE_LAYER_MEDIA_TYPE)
                layers.setdefault(desc.digest, desc)
    locked_desc = _put_bytes(dest, json.dumps(locked).encode(), SPIN_APPLICATION_MEDIA_TYPE)
    layers[locked_desc.digest] = locked_desc
    config = {
        "architecture": "wasm",
        "os": "Wasip1",  # as Spin 3 writes it (crates/oci client.rs)
        "config": {"Labels": {"com.fermyon.spin.lockedAppDigest": locked_desc.digest}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    annotations = {"org.opencontainers.image.title": app.name}
    if app.version:
        annotations["org.opencontainers.image.version"] = app.version
    if app.description:
        annotations["org.opencontainers.image.description"] = app.description
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _put_bytes(dest, json.dumps(config).encode(), OCI_CONFIG).to_json(),
        "layers": [d.to_json() for d in layers.values()],
        "annotations": annotations,
    }
    manifest_desc = _put_bytes(dest, json.dumps(manifest).encode(), OCI_MANIFEST)
    entry = {**manifest_desc.to_json(), "annotations": {"org.opencontainers.image.ref.name": ref}}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return manifest_desc.digest


def write_oci_tarball(app: AppManifest, tar_path: Path, **options: Any) -> str:
    """Like :func:`write_oci_layout`, into a tarball (gzip-compressed when the name ends .gz/.tgz)."""
    tar_path = Path(tar_path)
    with tempfile.TemporaryDirectory(dir=tar_path.parent, prefix=".layout-") as tmp:
        digest = write_oci_layout(app, Path(tmp), **options)
        mode = "w:gz" if tar_path.name.endswith((".gz", ".tgz")) else "w"
        with tarfile.open(tar_path, mode) as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(Path(tmp) / name, arcname=name)
    return digest


def _put_bytes(dest: Path, data: bytes, media_type: str) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (dest / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def _put_file(dest: Path, path: Path, digest: str, media_type: str) -> Descriptor:
    target = dest / "blobs" / "sha256" / digest.split(":", 1)[1]
    shutil.copyfile(path, target)
    return Descriptor(media_type, digest, target.stat().st_size)


def _archive(files: Mapping[str, Path]) -> bytes:
    """A reproducible tar.gz of a component's files (guest paths made relative), mtime and owner zeroed."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for guest, host in files.items():
            info = tarfile.TarInfo("./" + guest.lstrip("/"))
            info.size, info.mode = host.stat().st_size, 0o644
            with open(host, "rb") as f:
                tar.addfile(info, f)
    return buffer.getvalue()
