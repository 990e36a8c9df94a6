"""The local cache of pulled artifacts: verified blobs by digest, one OCI image layout per pulled digest.

Layout under ``${KUBESPIN_CACHE:-~/.cache/kubespin}/oci/`` (or ``$KUBESPIN_OCI_CACHE``)::

    blobs/sha256/<hex>         every blob and manifest pulled, verified before it is moved here
    layouts/<hex>/             an OCI image layout for the artifact whose digest is <hex>:
        oci-layout, index.json   written last; the directory is renamed into place when complete
        blobs -> ../../blobs     shared, so two versions of an app store a common layer once
    tags/<hash>.json           what a tag resolved to and when (for pull policy IfNotPresent)

Everything is written to a temporary name and renamed, so concurrent pulls (two shims on one node)
agree and a pull killed half-way leaves nothing that looks complete. The layouts are what
``oci_layout.load_oci_layout`` reads, which verifies every blob again before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .client import OCI_INDEX, Descriptor
from .refs import Reference

CACHE_ENV = "KUBESPIN_CACHE"
OCI_CACHE_ENV = "KUBESPIN_OCI_CACHE"


def default_cache_dir() -> Path:
    """``$KUBESPIN_OCI_CACHE``, else ``${KUBESPIN_CACHE:-~/.cache/kubespin}/oci``.

    Its own variable so a pod can put pulled apps on a volume of their own, and tests can start
    from an empty pull cache while keeping the (slow to rebuild) compile cache.
    """
    if os.environ.get(OCI_CACHE_ENV):
        return Path(os.environ[OCI_CACHE_ENV])
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "kubespin")
    return Path(root) / "oci"


class ArtifactStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.blobs = self.root / "blobs"

    # -- blobs ----------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algorithm, hex_digest = digest.split(":", 1)
        return self.blobs / algorithm / hex_digest

    def has_blob(self, desc: Descriptor) -> bool:
        path = self.blob_path(desc.digest)
        return path.is_file() and path.stat().st_size == desc.size

    def staging_file(self, digest: str) -> Path:
        """A fresh temporary file beside where ``digest`` will live (same file system, for rename)."""
        directory = self.blob_path(digest).parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        os.close(fd)
        return Path(name)

    def commit_blob(self, staged: Path, digest: str) -> Path:
        """Move a verified staged file into place."""
        target = self.blob_path(digest)
        os.replace(staged, target)
        return target

    def put_bytes(self, data: bytes, digest: str) -> Path:
        """Store bytes already verified against ``digest``."""
        staged = self.staging_file(digest)
        staged.write_bytes(data)
        return self.commit_blob(staged, digest)

    # -- layouts --------------------------------------------------------------------------------
    def layout_dir(self, digest: str) -> Path:
        return self.root / "layouts" / digest.split(":", 1)[1]

    def has_layout(self, digest: str) -> bool:
        return (self.layout_dir(digest) / "index.json").is_file()

    def write_layout(self, top: Descriptor, ref: Reference) -> Path:
        """Publish the layout whose index.json points at ``top`` (its blobs must all be stored)."""
        final = self.layout_dir(top.digest)
        if final.is_dir() and (final / "index.json").is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".incoming-"))
        try:
            (staging / "blobs").symlink_to(Path("..") / ".." / "blobs")
            (staging / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
            entry = {**top.to_json(), "annotations": {"org.opencontainers.image.ref.name": str(ref)}}
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
            (staging / "index.json").write_text(json.dumps(index))
            if final.exists():  # left by a pull that died before finishing: never complete, so redo
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / "index.json").is_file():  # not a concurrent pull finishing first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # -- tags -----------------------------------------------------------------------------------
    def _tag_file(self, ref: Reference) -> Path:
        key = hashlib.sha256(f"{ref.name}:{ref.tag or 'latest'}".encode()).hexdigest()[:40]
        return self.root / "tags" / f"{key}.json"

    def tag_digest(self, ref: Reference) -> str | None:
        """The digest ``ref``'s tag resolved to when last pulled, or None."""
        try:
            record = json.loads(self._tag_file(ref).read_text())
        except (OSError, ValueError):
            return None
        if record.get("reference") != f"{ref.name}:{ref.tag or 'latest'}":
            return None
        digest = record.get("digest")
        return digest if isinstance(digest, str) else None

    def remember_tag(self, ref: Reference, digest: str) -> None:
        path = self._tag_file(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"reference": f"{ref.name}:{ref.tag or 'latest'}", "digest": digest, "resolved_at": time.time()}
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(name, path)
