"""What a Spin app in a registry needs from the node it runs on, read without pulling the app.

The operator schedules SpinApps whose components use ``ai_models`` with a local LLM backend onto nodes
that can infer locally. It learns which components use which models from the app's *locked app* (the
Spin application layer, a small JSON document), fetched by digest and verified like a pull, and never
downloads the Wasm layers. Nothing is written to disk except a temporary file for the one blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..manifest import load_manifest
from ..oci_layout import SPIN_APPLICATION_MEDIA_TYPE
from .auth import credentials_from_documents
from .client import RegistryClient, plain_http_allowed, timeout_from
from .errors import InvalidReferenceError, RegistryProtocolError
from .pull import fetch_verified_top, manifest_json, parse_descriptor, select_spin_manifest
from .refs import looks_like_reference, parse_reference

#: A locked app with inline file contents can be large; anything bigger than this is refused here.
MAX_LOCKED_APP_BYTES = 8 << 20


@dataclass(frozen=True)
class AppFacts:
    """What the operator needs to know about an app artifact: its digest and each component's models."""

    reference: str
    digest: str
    ai_models: Mapping[str, tuple[str, ...]]  # component id -> models it lists (empty tuple: none)

    def models_of(self, retained: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
        """Components that list models, among ``retained`` (SPIN_COMPONENTS_TO_RETAIN) when given."""
        keep = set(retained)
        return {cid: models for cid, models in self.ai_models.items() if models and (not keep or cid in keep)}


def inspect_app(
    reference: str,
    *,
    auth_documents: Sequence[tuple[str, bytes]] = (),
    insecure: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> AppFacts:
    """Fetch the manifest and the locked app of ``reference``; raise a RegistryError on any failure.

    A spin.toml path (or its directory) on this machine is read directly: the single-machine dev setup
    (`kubespin node`) runs apps from their paths, and the operator then sees the same files."""
    if not looks_like_reference(reference) or Path(reference).exists():
        return _inspect_local(reference)
    ref = parse_reference(reference)
    client = RegistryClient(
        ref,
        credentials_from_documents(ref.registry, auth_documents),
        plain_http=plain_http_allowed(ref, insecure, environ),
        timeout=timeout_from(environ),
    )
    body, top = fetch_verified_top(client, ref)
    document = manifest_json(ref, body, "manifest")

    def fetch_child(desc: Any) -> dict[str, Any]:
        child_body, _, _ = client.manifest(desc.digest)
        return manifest_json(ref, child_body, f"manifest {desc.digest}")

    manifest = select_spin_manifest(ref, top, document, fetch_child)
    layers = [parse_descriptor(raw, f"layers[{i}]", ref) for i, raw in enumerate(manifest.get("layers") or [])]
    spin_layers = [d for d in layers if d.media_type == SPIN_APPLICATION_MEDIA_TYPE]
    locked = spin_layers[0] if spin_layers else parse_descriptor(manifest.get("config"), "config", ref)  # Spin 1.x
    if locked.size > MAX_LOCKED_APP_BYTES:
        raise RegistryProtocolError(
            f"{ref}: the locked app ({locked.digest}) is {locked.size} bytes, over the "
            f"{MAX_LOCKED_APP_BYTES >> 20} MiB that kubespin reads to inspect an app"
        )
    with tempfile.TemporaryDirectory(prefix="kubespin-inspect-") as tmp:
        path = Path(tmp) / "locked.json"
        client.download_blob_to(locked, path)  # verifies size and digest
        raw = path.read_bytes()
    return AppFacts(reference, top.digest, ai_models_of_locked_app(raw, str(ref)))


def _inspect_local(path_text: str) -> AppFacts:
    path = Path(path_text)
    file = path / "spin.toml" if path.is_dir() else path
    if not file.is_file() or file.suffix != ".toml":
        raise InvalidReferenceError(
            f"{path_text!r} is neither a registry reference (host[:port]/repo[:tag|@digest]) nor a spin.toml "
            "(or a directory holding one) on the operator's machine"
        )
    manifest = load_manifest(file)
    digest = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    return AppFacts(path_text, digest, {cid: tuple(c.ai_models) for cid, c in manifest.components.items()})


def ai_models_of_locked_app(raw: bytes, where: str) -> dict[str, tuple[str, ...]]:
    """Component id -> ``metadata.ai_models`` of a Spin locked app (crates/locked-app's JSON)."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RegistryProtocolError(f"{where}: the locked app is not JSON: {e}") from None
    components = doc.get("components") if isinstance(doc, dict) else None
    if not isinstance(components, list):
        raise RegistryProtocolError(f"{where}: the locked app has no `components` list")
    out: dict[str, tuple[str, ...]] = {}
    for i, component in enumerate(components):
        if not isinstance(component, dict) or not isinstance(component.get("id"), str):
            raise RegistryProtocolError(f"{where}: components[{i}] of the locked app has no string `id`")
        metadata = component.get("metadata") or {}
        models = metadata.get("ai_models", []) if isinstance(metadata, dict) else []
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise RegistryProtocolError(
                f"{where}: components[{i}].metadata.ai_models of the locked app is not a list of strings"
            )
        out[component["id"]] = tuple(models)
    return out
