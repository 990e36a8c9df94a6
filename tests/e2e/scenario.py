"""The prompt A/B scenario, shared by tests/e2e and scripts/demo-cluster.

Two Redis stores, ``case-a`` and ``case-b``, each holding a prompt under key ``prompt``; a SpinApp
whose component reads key-value label ``promptstore``; a StoreLink from that label to ``case-a``.
Relinking to ``case-b`` must change the answer of the running pod without restarting it.

The app is tests/apps/py-kv (``GET /kv/<label>/<key>`` reads a key by label) with its spin.toml
granting the label ``promptstore`` (Spin only lets a component open labels its manifest lists).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SOURCE_APP = REPO / "tests" / "apps" / "py-kv"
LABEL = "promptstore"
KEY = "prompt"
STORES = ("case-a", "case-b")
PROMPTS = {
    "case-a": "You are a concise assistant. Answer in one sentence. (prompt A)",
    "case-b": "You are a friendly assistant. Explain step by step. (prompt B)",
}
APP_NAME = "chat"
LINK_NAME = "chat-promptstore"
API_VERSION = "kubespin.dev/v1alpha1"


class AppNotBuilt(RuntimeError):
    """tests/apps/py-kv has no app.wasm yet."""


def prompt_app(dest: Path) -> Path:
    """A copy of py-kv whose manifest lists ``promptstore``; the wasm is hard-linked when possible."""
    wasm = SOURCE_APP / "app.wasm"
    if not wasm.is_file():
        raise AppNotBuilt(f"{wasm} is missing: run `.venv/bin/python scripts/build-test-apps py-kv`")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "app.wasm"
    if not target.exists() or target.stat().st_size != wasm.stat().st_size:
        target.unlink(missing_ok=True)
        try:
            os.link(wasm, target)
        except OSError:
            shutil.copy2(wasm, target)
    manifest = (SOURCE_APP / "spin.toml").read_text()
    head, _sep, _build = manifest.partition("[component.kv.build]")
    lines = []
    for line in head.splitlines():
        if line.startswith("key_value_stores"):
            line = f'key_value_stores = ["default", "{LABEL}"]'
        lines.append(line)
    (dest / "spin.toml").write_text("\n".join(lines).rstrip() + "\n")
    return dest


def spinapp(image: str, name: str = APP_NAME, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SpinApp",
        "metadata": {"name": name},
        "spec": {"image": image, "replicas": replicas, **spec},
    }


def storelink(store: str, app: str = APP_NAME, label: str = LABEL, name: str = LINK_NAME) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "StoreLink",
        "metadata": {"name": name},
        "spec": {"app": app, "label": label, "store": store},
    }


def fast_checks(period: int = 1) -> dict[str, Any]:
    """Probe settings for tests that start many pods: the operator's defaults wait 10 s before probing."""
    probe = {"initialDelaySeconds": 0, "periodSeconds": period, "timeoutSeconds": 1, "failureThreshold": 3}
    return {"readiness": dict(probe), "liveness": {**probe, "initialDelaySeconds": 5}}
