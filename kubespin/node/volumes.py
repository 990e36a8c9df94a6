"""Pod volumes as directories under the pod dir, with kubelet's payload rules and on-disk layout.

``payload_for`` computes what a Secret / ConfigMap / downwardAPI / projected volume must contain (a
pure function: data in, files out), following kubelet's volume plugins: ``items`` select and rename
keys, ``defaultMode``/``mode`` set permissions, a missing non-optional object or key is an error
(kubelet retries the mount; the container does not start). ``PodVolumes`` writes the payloads with
:func:`kubespin.node.atomic_writer.write_atomic` and rewrites them whenever an input changes, which
is how a relinked runtime config reaches a running shim. Directories follow kubelet's naming,
``<pod dir>/volumes/kubernetes.io~secret/<name>``, so the layout looks familiar when debugging.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubespin.node.atomic_writer import FileProjection, write_atomic
from kubespin.node.fields import FieldRefError, NodeFacts, field_value, resource_value

Body = Mapping[str, Any]
#: (kind, name) → the object's data, base64 for Secrets as the API returns them; None if absent.
RawLookup = Callable[[str, str], Mapping[str, Any] | None]
#: (audience or None, expirationSeconds) → a bound ServiceAccount token.
TokenSource = Callable[[str | None, int], str]

DEFAULT_MODE = 0o644
PLUGIN_DIRS = {
    "secret": "kubernetes.io~secret",
    "configMap": "kubernetes.io~configmap",
    "emptyDir": "kubernetes.io~empty-dir",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}


class VolumeError(Exception):
    """A volume cannot be set up yet (missing object or key); kubelet's FailedMount, retried."""

    reason = "FailedMount"


def _object_bytes(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """Secret data (base64) or ConfigMap data + binaryData (base64) as bytes per key."""
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _keyed_payload(
    kind: str, name: str, source: Body, lookup: RawLookup, default_mode: int, volume: str
) -> dict[str, FileProjection]:
    obj = lookup(kind, name)
    optional = bool(source.get("optional"))
    if obj is None:
        if optional:
            return {}
        raise VolumeError(f'{kind.lower()} "{name}" not found (volume {volume!r}); create it')
    data = _object_bytes(kind, obj)
    items = source.get("items")
    if not items:
        return {key: FileProjection(value, default_mode) for key, value in data.items()}
    payload: dict[str, FileProjection] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"{kind} {name} has no key {item['key']!r} (volume {volume!r})")
        payload[item["path"]] = FileProjection(data[item["key"]], int(item.get("mode", default_mode)))
    return payload


def _downward_payload(
    items: list[Body], pod: Body, node: NodeFacts, pod_ip: str, default_mode: int, volume: str
) -> dict[str, FileProjection]:
    container = (pod.get("spec") or {}).get("containers", [{}])[0]
    payload: dict[str, FileProjection] = {}
    for item in items:
        try:
            if "fieldRef" in item:
                text = field_value(pod, item["fieldRef"]["fieldPath"], node, pod_ip)
            else:
                text = resource_value(container, item["resourceFieldRef"], node)
        except FieldRefError as err:
            raise VolumeError(f"volume {volume!r}: {err}") from err
        payload[item["path"]] = FileProjection(text.encode(), int(item.get("mode", default_mode)))
    return payload


def payload_for(
    volume: Body,
    pod: Body,
    lookup: RawLookup,
    node: NodeFacts,
    pod_ip: str,
    tokens: TokenSource | None = None,
) -> dict[str, FileProjection] | None:
    """The files of one volume (None for emptyDir, which is a plain directory)."""
    name = volume["name"]
    if "secret" in volume:
        src = volume["secret"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        return _keyed_payload("Secret", src["secretName"], src, lookup, mode, name)
    if "configMap" in volume:
        src = volume["configMap"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        return _keyed_payload("ConfigMap", src["name"], src, lookup, mode, name)
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return _downward_payload(
            src.get("items") or [], pod, node, pod_ip, int(src.get("defaultMode", DEFAULT_MODE)), name
        )
    if "projected" in volume:
        src = volume["projected"]
        mode = int(src.get("defaultMode", DEFAULT_MODE))
        payload: dict[str, FileProjection] = {}
        for source in src.get("sources") or []:
            if "secret" in source:
                payload.update(_keyed_payload("Secret", source["secret"]["name"], source["secret"], lookup, mode, name))
            elif "configMap" in source:
                cm = source["configMap"]
                payload.update(_keyed_payload("ConfigMap", cm["name"], cm, lookup, mode, name))
            elif "downwardAPI" in source:
                payload.update(
                    _downward_payload(source["downwardAPI"].get("items") or [], pod, node, pod_ip, mode, name)
                )
            elif "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                if tokens is None:
                    raise VolumeError(f"volume {name!r}: no ServiceAccount token source")
                token = tokens(sat.get("audience"), int(sat.get("expirationSeconds", 3600)))
                # kubelet writes tokens 0600 unless the pod sets fsGroup; 0600 is the safe reading.
                payload[sat["path"]] = FileProjection(token.encode(), 0o600)
        return payload
    return None


class PodVolumes:
    """The volume directories of one pod, (re)written from the current inputs on demand."""

    def __init__(self, pod_dir: Path, volumes: Mapping[str, Body]) -> None:
        self.pod_dir = pod_dir
        self.volumes = dict(volumes)

    def directory(self, name: str) -> Path:
        volume = self.volumes[name]
        kind = next((k for k in PLUGIN_DIRS if k in volume), "emptyDir")
        return self.pod_dir / "volumes" / PLUGIN_DIRS[kind] / name

    def directories(self) -> dict[str, Path]:
        return {name: self.directory(name) for name in self.volumes}

    def sync(
        self,
        pod: Body,
        lookup: RawLookup,
        node: NodeFacts,
        pod_ip: str,
        tokens: TokenSource | None = None,
        only: set[str] | None = None,
    ) -> list[str]:
        """Write every volume (or those in ``only``); return the names whose content changed.

        Raises VolumeError for the first volume that cannot be built; the others are still written.
        """
        changed: list[str] = []
        first_error: VolumeError | None = None
        for name, volume in self.volumes.items():
            if only is not None and name not in only:
                continue
            target = self.directory(name)
            try:
                payload = payload_for(volume, pod, lookup, node, pod_ip, tokens)
            except VolumeError as err:
                first_error = first_error or err
                continue
            if payload is None:
                target.mkdir(parents=True, exist_ok=True)
                continue
            if write_atomic(target, payload):
                changed.append(name)
        if first_error is not None:
            raise first_error
        return changed

    def remove(self) -> None:
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
