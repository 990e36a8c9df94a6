"""Push a Spin app (spin.toml + components + files) to an OCI registry the way ``spin registry push`` does.

The artifact content comes from ``oci_layout.write_oci_layout`` (the locked app with content by
digest and files of at most 128 bytes inline, one ``application/vnd.wasm.content.layer.v1+wasm``
layer per component, one ``…layer.v1+data`` layer per other file, the locked app last as a layer of
type ``application/vnd.fermyon.spin.application.v1+config``; one ``…bundle.v1.tar+gzip`` archive per
component instead of data layers when ``SPIN_OCI_ARCHIVE_LAYERS`` is set or the app would exceed
500 layers). This module adds what Spin 3's push adds on top (crates/oci/src/client.rs):

* the image config ``{"architecture": "wasm", "os": "Wasip1", "config": {"Labels":
  {"com.fermyon.spin.lockedAppDigest": …}}, "rootfs": {"type": "layers", "diff_ids": []}}``
  (``Wasip1`` is how oci-spec-rs prints Spin's ``Os::Other("Wasip1")``);
* manifest annotations ``org.opencontainers.image.{title,description,version,authors,created}``
  inferred from the app, explicit ``--annotation`` values taking precedence; ``created`` honours
  ``SOURCE_DATE_EPOCH`` so a push can be reproducible.

One difference: the manifest carries ``mediaType`` (the image spec says it SHOULD; Spin's
oci-client leaves it out and sends it only as the Content-Type). Blobs the registry already has
are not sent again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import oras.schemas

from ..manifest import load_manifest
from ..oci_layout import SPIN_APPLICATION_MEDIA_TYPE, write_oci_layout
from .auth import find_credentials
from .client import OCI_MANIFEST, Descriptor, RegistryClient, plain_http_allowed, timeout_from
from .errors import InvalidReferenceError, RegistryError
from .refs import DEFAULT_TAG, Reference, parse_reference

log = logging.getLogger("kubespin.registry")

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ARCHIVE_ENV = "SPIN_OCI_ARCHIVE_LAYERS"
MAX_LAYER_COUNT = 500  # Spin's limit (the lowest of well-known registries: ECR)
LOCKED_APP_DIGEST_LABEL = "com.fermyon.spin.lockedAppDigest"


@dataclass(frozen=True)
class PushResult:
    reference: Reference  # with the pushed manifest's digest
    digest: str
    layers: int
    blobs_uploaded: int
    blobs_skipped: int  # already in the registry
    bytes_uploaded: int
    seconds: float


def push_app(
    source: str | Path,
    reference: str,
    *,
    insecure: bool = False,
    auth_files: Sequence[str | Path] = (),
    annotations: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> PushResult:
    """Publish the app at ``source`` (a spin.toml or its directory) to ``reference`` (a tag)."""
    t0 = time.perf_counter()
    ref = parse_reference(reference)
    if ref.digest:
        raise InvalidReferenceError(f"push to a tag, not a digest: {ref} (the digest is computed from the app)")
    ref = Reference(ref.registry, ref.repository, ref.tag or DEFAULT_TAG, None)
    app = load_manifest(Path(source))
    manifest_file = Path(source) / "spin.toml" if Path(source).is_dir() else Path(source)
    client = RegistryClient(
        ref,
        find_credentials(ref.registry, auth_files, environ),
        plain_http=plain_http_allowed(ref, insecure, environ),
        timeout=timeout_from(environ),
    )
    with tempfile.TemporaryDirectory(prefix="kubespin-push-") as tmp:
        layout = Path(tmp)
        write_oci_layout(app, layout)
        layers = _layers(layout)
        if ARCHIVE_ENV in environ or len(layers) > MAX_LAYER_COUNT - 1:
            log.info("packing each component's files into one archive layer (%d layers otherwise)", len(layers))
            archived = Path(tmp) / "archived"
            write_oci_layout(app, archived, archive_files=True)
            layout, layers = archived, _layers(archived)
        locked = next(d for d in layers if d.media_type == SPIN_APPLICATION_MEDIA_TYPE)
        config = _config_bytes(locked.digest)
        config_desc = _put_config(layout, config)
        inferred = _inferred_annotations(app.name, app.description, app.version, _authors(manifest_file), environ)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [d.to_json() for d in layers],
            "annotations": dict(sorted({**inferred, **(annotations or {})}.items())),
        }
        jsonschema.validate(manifest, schema=oras.schemas.manifest)
        uploaded = skipped = sent = 0
        for desc in [*layers, config_desc]:
            if client.push_blob(_blob(layout, desc.digest), desc):
                uploaded += 1
                sent += desc.size
            else:
                skipped += 1
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = client.put_manifest(body, OCI_MANIFEST, ref.tag or DEFAULT_TAG)
    seconds = time.perf_counter() - t0
    log.info(
        "pushed %s@%s in %.2f s: %d blobs sent (%d bytes), %d already there",
        ref, digest, seconds, uploaded, sent, skipped,
    )
    return PushResult(ref.with_digest(digest), digest, len(layers), uploaded, skipped, sent, seconds)


def push_layout(
    layout: str | Path,
    reference: str,
    *,
    insecure: bool = False,
    auth_files: Sequence[str | Path] = (),
    environ: Mapping[str, str] = os.environ,
) -> PushResult:
    """Copy the one image manifest of an OCI image layout directory to ``reference``, byte for byte.

    For artifacts built elsewhere (``write_oci_layout``, or a layout exported by crane/oras/skopeo):
    the manifest and blobs keep their digests, so what is pulled is exactly what was laid out.
    """
    t0 = time.perf_counter()
    layout = Path(layout)
    ref = parse_reference(reference)
    if ref.digest:
        raise InvalidReferenceError(f"push to a tag, not a digest: {ref}")
    ref = Reference(ref.registry, ref.repository, ref.tag or DEFAULT_TAG, None)
    try:
        entries = json.loads((layout / "index.json").read_text()).get("manifests", [])
    except (OSError, ValueError, AttributeError) as e:
        raise RegistryError(f"{layout} is not an OCI image layout (index.json): {e}") from None
    if len(entries) != 1 or entries[0].get("mediaType") != OCI_MANIFEST:
        raise RegistryError(
            f"{layout}: index.json must list exactly one image manifest to push; it lists {len(entries)} entries"
        )
    body = _blob(layout, entries[0]["digest"]).read_bytes()
    if "sha256:" + hashlib.sha256(body).hexdigest() != entries[0]["digest"]:
        raise RegistryError(f"{layout}: manifest {entries[0]['digest']} does not match its digest")
    manifest = json.loads(body)
    blobs = [manifest["config"], *manifest.get("layers", [])]
    client = RegistryClient(
        ref,
        find_credentials(ref.registry, auth_files, environ),
        plain_http=plain_http_allowed(ref, insecure, environ),
        timeout=timeout_from(environ),
    )
    uploaded = sent = 0
    for raw in blobs:
        desc = Descriptor(raw["mediaType"], raw["digest"], raw["size"])
        if client.push_blob(_blob(layout, desc.digest), desc):
            uploaded += 1
            sent += desc.size
    digest = client.put_manifest(body, OCI_MANIFEST, ref.tag or DEFAULT_TAG)
    layers = len(manifest.get("layers", []))
    seconds = time.perf_counter() - t0
    return PushResult(ref.with_digest(digest), digest, layers, uploaded, len(blobs) - uploaded, sent, seconds)


def _layers(layout: Path) -> list[Descriptor]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_bytes())
    return [Descriptor(d["mediaType"], d["digest"], d["size"]) for d in manifest["layers"]]


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def _config_bytes(locked_digest: str) -> bytes:
    config = {
        "architecture": "wasm",
        "os": "Wasip1",
        "config": {"Labels": {LOCKED_APP_DIGEST_LABEL: locked_digest}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _put_config(layout: Path, data: bytes) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob(layout, digest)
    path.write_bytes(data)
    return Descriptor(OCI_CONFIG, digest, len(data))


def _authors(manifest_file: Path) -> list[str]:
    """``[application] authors`` from spin.toml (the app model does not keep them)."""
    try:
        application = tomllib.loads(manifest_file.read_text()).get("application", {})
    except (OSError, tomllib.TOMLDecodeError):
        return []
    authors = application.get("authors", []) if isinstance(application, dict) else []
    return [str(a) for a in authors] if isinstance(authors, list) else []


def _inferred_annotations(
    name: str, description: str | None, version: str | None, authors: list[str], environ: Mapping[str, Any]
) -> dict[str, str]:
    annotations = {"org.opencontainers.image.title": name}
    if description:
        annotations["org.opencontainers.image.description"] = description
    if version:
        annotations["org.opencontainers.image.version"] = version
    if authors:
        annotations["org.opencontainers.image.authors"] = ", ".join(authors)
    epoch = environ.get("SOURCE_DATE_EPOCH")
    try:
        created = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    except ValueError:
        raise RegistryError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from None
    annotations["org.opencontainers.image.created"] = created.isoformat()
    return annotations
