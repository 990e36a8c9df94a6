"""Pull a Spin app artifact from an OCI registry into the local cache, verified, as an OCI image layout.

What ``kubespin up -f host/repo:tag`` does before loading the app. Every manifest and blob is checked
against the digest that names it (a manifest pulled by tag against the registry's
``Docker-Content-Digest`` when sent), and only Spin apps are accepted: an image manifest with a layer
(Spin 2+) or config (Spin 1) of type ``application/vnd.fermyon.spin.application.v1+config``.

Pull policy, as kubelet's imagePullPolicy (``KUBESPIN_PULL_POLICY`` or ``--pull-policy``):

* ``IfNotPresent`` (default for digests and for tags other than ``latest``): no network at all when
  the digest, or the digest the tag resolved to before, is in the cache;
* ``Always`` (default for ``latest`` and untagged references): resolve the tag with one manifest
  request, then download only blobs not yet cached;
* ``Never``: the cache or an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..oci_layout import SPIN_APPLICATION_MEDIA_TYPE
from .auth import find_credentials
from .client import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    plain_http_allowed,
    timeout_from,
)
from .errors import (
    ArtifactNotFoundError,
    DigestMismatchError,
    NotASpinAppError,
    RegistryError,
    RegistryProtocolError,
)
from .refs import DEFAULT_TAG, Reference, parse_reference
from .store import ArtifactStore

log = logging.getLogger("kubespin.registry")

POLICY_ENV = "KUBESPIN_PULL_POLICY"
POLICIES = ("Always", "IfNotPresent", "Never")
_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_MAX_INDEX_CHILDREN = 32


@dataclass(frozen=True)
class PullResult:
    reference: Reference  # with the digest pulled
    digest: str
    layout_dir: Path
    from_cache: bool  # no blob had to be downloaded
    requests: int  # HTTP requests sent to the registry (0: no network at all)
    bytes_downloaded: int
    seconds: float


def pull_policy(ref: Reference, requested: str | None, environ: Mapping[str, str] = os.environ) -> str:
    value = requested or environ.get(POLICY_ENV) or ""
    if not value:
        return "IfNotPresent" if ref.digest or (ref.tag and ref.tag != DEFAULT_TAG) else "Always"
    for policy in POLICIES:
        if value.lower() == policy.lower():
            return policy
    raise RegistryError(
        f"pull policy {value!r} is not one of {', '.join(POLICIES)} (from --pull-policy or {POLICY_ENV})"
    )


def pull_app(
    reference: str,
    *,
    store: ArtifactStore | None = None,
    insecure: bool = False,
    auth_files: Sequence[str | Path] = (),
    policy: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> PullResult:
    """Make the Spin app at ``reference`` available as a verified OCI layout in the cache."""
    t0 = time.perf_counter()
    ref = parse_reference(reference)
    store = store or ArtifactStore()
    policy = pull_policy(ref, policy, environ)
    known = ref.digest or (store.tag_digest(ref) if policy != "Always" else None)
    if known and store.has_layout(known):
        log.info("using cached %s (%s); no registry request", ref, known)
        return PullResult(ref.with_digest(known), known, store.layout_dir(known), True, 0, 0, time.perf_counter() - t0)
    if policy == "Never":
        raise ArtifactNotFoundError(
            f"{ref} is not in the local cache ({store.root}) and the pull policy is Never; pull it first "
            f"(`kubespin registry pull {ref}`) or use another policy"
        )
    client = RegistryClient(
        ref,
        find_credentials(ref.registry, auth_files, environ),
        plain_http=plain_http_allowed(ref, insecure, environ),
        timeout=timeout_from(environ),
    )
    puller = _Puller(client, store, ref)
    top = puller.fetch_top()
    if not store.has_layout(top.digest):
        puller.fetch_app(top)
        store.write_layout(top, ref)
    if ref.tag and not ref.digest:
        store.remember_tag(ref, top.digest)
    seconds = time.perf_counter() - t0
    log.info(
        "pulled %s (%s) in %.2f s: %d requests, %d bytes downloaded",
        ref, top.digest, seconds, client.requests_made, puller.downloaded,
    )
    return PullResult(
        ref.with_digest(top.digest),
        top.digest,
        store.layout_dir(top.digest),
        puller.downloaded == 0,
        client.requests_made,
        puller.downloaded,
        seconds,
    )


class _Puller:
    def __init__(self, client: RegistryClient, store: ArtifactStore, ref: Reference) -> None:
        self.client = client
        self.store = store
        self.ref = ref
        self.downloaded = 0

    def fetch_top(self) -> Descriptor:
        """Fetch and verify what the reference names (manifest or index); store it; return its descriptor."""
        body, top = fetch_verified_top(self.client, self.ref)
        if not self.store.has_layout(top.digest):
            self.store.put_bytes(body, top.digest)
        return top

    def fetch_manifest(self, desc: Descriptor) -> dict[str, Any]:
        """A child manifest of an index, by digest (verified), from the cache when it is there."""
        if self.store.has_blob(desc):
            return manifest_json(self.ref, self.store.blob_path(desc.digest).read_bytes(), f"manifest {desc.digest}")
        body, _, _ = self.client.manifest(desc.digest)
        algorithm, expected = desc.digest.split(":", 1)
        if len(body) != desc.size or hashlib.new(algorithm, body).hexdigest() != expected:
            raise DigestMismatchError(
                f"manifest {desc.digest} from {self.ref.name} does not match its descriptor in the index "
                "(size or digest); it is corrupt or was tampered with"
            )
        self.store.put_bytes(body, desc.digest)
        return manifest_json(self.ref, body, f"manifest {desc.digest}")

    def fetch_app(self, top: Descriptor) -> None:
        """Download the config and layers of the one Spin manifest ``top`` leads to."""
        document = manifest_json(self.ref, self.store.blob_path(top.digest).read_bytes(), "manifest")
        manifest = select_spin_manifest(self.ref, top, document, self.fetch_manifest)
        blobs = [parse_descriptor(manifest.get("config"), "config", self.ref)]
        blobs += [parse_descriptor(raw, f"layers[{i}]", self.ref) for i, raw in enumerate(manifest.get("layers") or [])]
        for desc in blobs:
            if self.store.has_blob(desc):
                continue
            staged = self.store.staging_file(desc.digest)
            try:
                self.client.download_blob_to(desc, staged)
                self.store.commit_blob(staged, desc.digest)
            finally:
                staged.unlink(missing_ok=True)
            self.downloaded += desc.size


def manifest_json(ref: Reference, body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as e:
        raise RegistryProtocolError(f"{what} of {ref.name} is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"{what} of {ref.name} is not a JSON object")
    return document


def fetch_verified_top(client: RegistryClient, ref: Reference) -> tuple[bytes, Descriptor]:
    """The manifest or index ``ref`` names, checked against the digest that names it (the reference's, or
    the registry's ``Docker-Content-Digest`` for a tag), and its descriptor."""
    body, content_type, echoed = client.manifest(ref.target)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if ref.digest:
        algorithm, expected = ref.digest.split(":", 1)
        actual = hashlib.new(algorithm, body).hexdigest()
        if actual != expected:
            raise DigestMismatchError(
                f"the manifest {ref.registry} served for {ref} hashes to {algorithm}:{actual}; "
                "it is corrupt or was tampered with"
            )
        digest = ref.digest
    elif echoed and echoed.startswith("sha256:") and echoed != digest:
        raise DigestMismatchError(
            f"the manifest {ref.registry} served for {ref} hashes to {digest}, but the registry "
            f"says its digest is {echoed}; it is corrupt or was tampered with"
        )
    media_type = manifest_json(ref, body, "manifest").get("mediaType") or content_type
    if media_type not in (*_MANIFEST_TYPES, *_INDEX_TYPES):
        raise NotASpinAppError(
            f"{ref} is a {media_type or 'manifest without a media type'}, not an OCI image manifest "
            "or index, so it cannot be a Spin app"
        )
    return body, Descriptor(media_type, digest, len(body))


def select_spin_manifest(
    ref: Reference, top: Descriptor, document: dict[str, Any], fetch_child: Callable[[Descriptor], dict[str, Any]]
) -> dict[str, Any]:
    """The one Spin app manifest ``top`` (a manifest, or an index fetched child by child) leads to."""
    if top.media_type in _INDEX_TYPES:
        candidates = []
        for i, raw in enumerate(document.get("manifests") or []):
            child = parse_descriptor(raw, f"manifests[{i}]", ref)
            if child.media_type in _MANIFEST_TYPES and len(candidates) < _MAX_INDEX_CHILDREN:
                candidates.append((child, fetch_child(child)))
        spin = [(d, m) for d, m in candidates if _is_spin(m)]
        if len(spin) != 1:
            found = "; ".join(_media_types(m, d.digest) for d, m in candidates) or "no image manifests"
            raise NotASpinAppError(
                f"{ref} is an index with {len(spin)} Spin apps among its manifests (expected exactly one): {found}"
            )
        return spin[0][1]
    if not _is_spin(document):
        raise NotASpinAppError(
            f"{ref} is not a Spin app: no layer or config of type {SPIN_APPLICATION_MEDIA_TYPE}; "
            f"found {_media_types(document, top.digest)}. Push Spin apps with `kubespin registry push` "
            "or `spin registry push`"
        )
    return document


def parse_descriptor(raw: Any, key: str, ref: Reference) -> Descriptor:
    if not isinstance(raw, dict):
        raise RegistryProtocolError(f"{ref}: {key} is not a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or ":" not in digest or digest.split(":", 1)[0] not in ("sha256", "sha512"):
        raise RegistryProtocolError(f"{ref}: {key} has an unsupported digest {digest!r} (expected sha256:<hex>)")
    expected = {"sha256": 64, "sha512": 128}[digest.split(":", 1)[0]]
    hex_part = digest.split(":", 1)[1]
    if len(hex_part) != expected or any(c not in "0123456789abcdef" for c in hex_part):
        raise RegistryProtocolError(f"{ref}: {key} has a malformed digest {digest!r}")
    if type(size) is not int or size < 0:
        raise RegistryProtocolError(f"{ref}: {key} has no valid size ({size!r})")
    return Descriptor(str(media_type or ""), digest, size)


def _is_spin(manifest: dict[str, Any]) -> bool:
    config = manifest.get("config")
    if isinstance(config, dict) and config.get("mediaType") == SPIN_APPLICATION_MEDIA_TYPE:
        return True  # Spin 1.x: the locked app is the config
    return any(
        isinstance(layer, dict) and layer.get("mediaType") == SPIN_APPLICATION_MEDIA_TYPE
        for layer in manifest.get("layers") or []
    )


def _media_types(manifest: dict[str, Any], digest: str) -> str:
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    layers = sorted({str(layer.get("mediaType")) for layer in manifest.get("layers") or [] if isinstance(layer, dict)})
    return f"{digest}: config {config_type or 'none'}, layers {', '.join(layers) or 'none'}"
