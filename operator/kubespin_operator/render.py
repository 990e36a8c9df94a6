"""Pure desired-state builders: SpinApp (+ bindings, + the data it references) → Deployment, Service,
runtime-config Secret; KeyValueStore → PersistentVolumeClaim.

Invariants the pods rely on:
- The runtime config lives in a Secret with a stable name, mounted as a directory (never subPath), so
  kubelet swaps the file in running pods when the Secret changes.
- The pod template depends on the app spec only (plus the volumes of spin stores, which must be
  mounted): re-linking a Redis store changes the Secret alone, so nothing rolls out or restarts.
- Every rendered object carries an owner reference, so deleting the owner garbage-collects it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lightkube.utils.quantity import parse_quantity

from kubespin_operator import constants as c
from kubespin_operator.local_inference import LocalInferenceNeed, node_selector
from kubespin_operator.model import (
    Binding,
    Body,
    ObjectData,
    Problem,
    RenderResult,
    SpinBackend,
    StoreView,
)
from kubespin_operator.runtime_config import render_runtime_config

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RenderConfig:
    """Operator configuration that shapes rendered objects (not per-app input)."""

    shim_image: str = "ghcr.io/kubespin/kubespin:latest"
    image_pull_policy: str | None = None


def owner_reference(owner: Body, *, controller: bool = True) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", c.API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def _labels(app_name: str) -> dict[str, str]:
    return {
        c.APP_LABEL: app_name,
        c.NAME_LABEL: app_name,
        c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE,
    }


def _metadata(body: Body, name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": _labels(body["metadata"]["name"]),
        "ownerReferences": [owner_reference(body)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def selector_string(app_name: str) -> str:
    """The pods' label selector as a string, for status.selector (the scale subresource)."""
    return f"{c.APP_LABEL}={app_name}"


# --- validation ------------------------------------------------------------------------------------


def app_problems(spec: Mapping[str, Any], secrets: ObjectData, configmaps: ObjectData) -> list[Problem]:
    """Problems with the SpinApp spec itself (not with its links or runtime config)."""
    problems: list[Problem] = []
    executor = spec.get("executor") or c.EXECUTOR_KUBESPIN
    if executor not in c.KNOWN_EXECUTORS:
        problems.append(
            Problem(
                "UnknownExecutor",
                f"spec.executor {executor!r} is not known to this operator; use one of "
                f"{', '.join(c.KNOWN_EXECUTORS)} or leave it unset",
                blocking=True,
            )
        )
    if spec.get("enableAutoscaling") and spec.get("replicas") is not None:
        problems.append(
            Problem(
                "ReplicasWithAutoscaling",
                "spec.replicas and spec.enableAutoscaling are both set; remove spec.replicas to let the "
                "autoscaler own the replica count, or set enableAutoscaling: false",
                blocking=True,
            )
        )
    problems.extend(_memory_limit_problems(spec))
    for var in spec.get("variables") or []:
        source = var.get("valueFrom") or {}
        for field, kind, data in (
            ("secretKeyRef", "Secret", secrets),
            ("configMapKeyRef", "ConfigMap", configmaps),
        ):
            ref = source.get(field)
            if not ref or ref.get("optional"):
                continue
            obj = data.get(ref.get("name", ""))
            if obj is None:
                problems.append(
                    Problem(
                        f"{kind}NotFound",
                        f"variable {var.get('name')!r} reads {kind} {ref.get('name')}, which does not exist; "
                        f"create it (pods cannot start without it)",
                    )
                )
            elif ref.get("key") not in obj:
                problems.append(
                    Problem(
                        f"{kind}KeyNotFound",
                        f"variable {var.get('name')!r} reads key {ref.get('key')!r} of {kind} "
                        f"{ref.get('name')}, which has no such key",
                    )
                )
    return problems


def memory_bytes(value: Any) -> int:
    """A Kubernetes quantity ('128Mi', '1G', 1000) as whole bytes."""
    parsed = parse_quantity(str(value))
    if parsed is None:
        raise ValueError(f"{value!r} is not a quantity")
    return int(parsed.to_integral_value())


def _memory_limit_problems(spec: Mapping[str, Any]) -> list[Problem]:
    memory = (spec.get("invocationLimits") or {}).get("memory")
    if memory is None:
        return []
    try:
        per_instance = memory_bytes(memory)
    except ValueError:
        return [
            Problem(
                "InvalidInvocationLimit",
                f"invocationLimits.memory {memory!r} is not a quantity such as 128Mi",
                blocking=True,
            )
        ]
    container_limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    if container_limit is not None and Decimal(per_instance) > parse_quantity(str(container_limit)):
        return [
            Problem(
                "InvalidInvocationLimit",
                f"invocationLimits.memory {memory} exceeds resources.limits.memory {container_limit}",
                blocking=True,
            )
        ]
    return []


# --- objects ---------------------------------------------------------------------------------------


def render_secret(body: Body, runtime_config_toml: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(body, c.runtime_config_secret_name(body["metadata"]["name"])),
        "type": "Opaque",
        "data": {c.RUNTIME_CONFIG_KEY: base64.b64encode(runtime_config_toml.encode()).decode()},
    }


def render_service(body: Body) -> Manifest:
    spec = body.get("spec") or {}
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, name, spec.get("serviceAnnotations")),
        "spec": {
            "type": "ClusterIP",
            "selector": {c.APP_LABEL: name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}],
        },
    }


def _probe(custom: Mapping[str, Any] | None) -> dict[str, Any]:
    custom = custom or {}
    http = custom.get("httpGet") or {}
    get: dict[str, Any] = {"path": http.get("path", c.HEALTH_PATH), "port": "http"}
    if http.get("httpHeaders"):
        get["httpHeaders"] = [dict(h) for h in http["httpHeaders"]]
    probe: dict[str, Any] = {"httpGet": get}
    for key, default in (
        ("initialDelaySeconds", 10),
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe[key] = int(custom.get(key, default))
    return probe


def _env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for var in spec.get("variables") or []:
        entry: dict[str, Any] = {"name": f"SPIN_VARIABLE_{var['name'].upper()}"}
        if var.get("valueFrom"):
            entry["valueFrom"] = var["valueFrom"]
        else:
            entry["value"] = str(var.get("value", ""))
        env.append(entry)
    env.append({"name": "SPIN_HTTP_LISTEN_ADDR", "value": f"0.0.0.0:{c.HTTP_PORT}"})
    env.append({"name": "KUBESPIN_SHUTDOWN_DELAY", "value": str(c.SHUTDOWN_DELAY_S)})
    if spec.get("components"):
        env.append({"name": "SPIN_COMPONENTS_TO_RETAIN", "value": ",".join(spec["components"])})
    memory = (spec.get("invocationLimits") or {}).get("memory")
    if memory is not None:
        env.append({"name": "SPIN_MAX_INSTANCE_MEMORY", "value": str(memory_bytes(memory))})
    return env


PULL_SECRETS_DIR = "/var/run/kubespin/pull-secrets"


def _pull_secret_mounts(
    spec: Mapping[str, Any], volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The shim pulls the app artifact itself, so it needs the imagePullSecrets as files.

    Each Secret is mounted (read-only, as a directory) and ``KUBESPIN_REGISTRY_AUTH`` lists their
    ``.dockerconfigjson`` files; the kubelet's own pull of the shim image still uses imagePullSecrets.
    """
    files = []
    for i, ref in enumerate(spec.get("imagePullSecrets") or []):
        name = ref.get("name")
        if not name:
            continue
        vol = f"kubespin-pull-secret-{i}"
        path = f"{PULL_SECRETS_DIR}/{name}"
        volumes.append({"name": vol, "secret": {"secretName": name}})
        mounts.append({"name": vol, "mountPath": path, "readOnly": True})
        files.append(f"{path}/.dockerconfigjson")
    return [{"name": "KUBESPIN_REGISTRY_AUTH", "value": ":".join(files)}] if files else []


def render_deployment(
    body: Body, bindings: list[Binding], config: RenderConfig, local_inference: LocalInferenceNeed | None = None
) -> Manifest:
    spec = body.get("spec") or {}
    name = body["metadata"]["name"]
    image = spec["image"]
    volumes: list[dict[str, Any]] = [
        {
            "name": c.RUNTIME_CONFIG_VOLUME,
            # A directory mount of the whole Secret: kubelet relinks the file when the Secret changes.
            "secret": {"secretName": c.runtime_config_secret_name(name)},
        }
    ]
    mounts: list[dict[str, Any]] = [
        {"name": c.RUNTIME_CONFIG_VOLUME, "mountPath": c.RUNTIME_CONFIG_DIR, "readOnly": True}
    ]
    for binding in bindings:
        if isinstance(binding.backend, SpinBackend):
            vol = binding.backend.claim_name
            volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": binding.backend.claim_name}})
            mounts.append({"name": vol, "mountPath": binding.backend.mount_dir})
    pull_auth = _pull_secret_mounts(spec, volumes, mounts)
    volumes.extend(dict(v) for v in spec.get("volumes") or [])
    mounts.extend(dict(m) for m in spec.get("volumeMounts") or [])

    checks = spec.get("checks") or {}
    container: dict[str, Any] = {
        "name": "spin",
        "image": config.shim_image,
        "command": [
            "kubespin",
            "up",
            "-f",
            image,
            "--listen",
            f"0.0.0.0:{c.HTTP_PORT}",
            "--runtime-config-file",
            c.RUNTIME_CONFIG_PATH,
        ],
        "ports": [{"name": "http", "containerPort": c.HTTP_PORT, "protocol": "TCP"}],
        "env": _env(spec) + pull_auth,
        "readinessProbe": _probe(checks.get("readiness")),
        "livenessProbe": _probe(checks.get("liveness")),
        "volumeMounts": mounts,
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    resources = spec.get("resources") or {}
    if resources.get("limits") or resources.get("requests"):
        container["resources"] = {k: dict(v) for k, v in resources.items() if v}

    pod_labels = {**(spec.get("podLabels") or {}), **_labels(name)}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": c.TERMINATION_GRACE_S,
    }
    for field in ("serviceAccountName", "affinity"):
        if spec.get(field):
            pod_spec[field] = spec[field]
    selector = node_selector(spec.get("nodeSelector"), local_inference)
    if selector:
        pod_spec["nodeSelector"] = selector
    if spec.get("tolerations"):
        pod_spec["tolerations"] = [dict(t) for t in spec["tolerations"]]
    if spec.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = [dict(s) for s in spec["imagePullSecrets"]]

    template_meta: dict[str, Any] = {"labels": pod_labels}
    if spec.get("podAnnotations"):
        template_meta["annotations"] = dict(spec["podAnnotations"])
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {c.APP_LABEL: name}},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if not spec.get("enableAutoscaling"):
        deployment_spec["replicas"] = int(spec.get("replicas", 1))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body, name, spec.get("deploymentAnnotations")),
        "spec": deployment_spec,
    }


def render_app(
    body: Body,
    bindings: list[Binding],
    secrets: ObjectData,
    configmaps: ObjectData,
    config: RenderConfig,
    local_inference: Callable[[str], LocalInferenceNeed | None] | None = None,
) -> RenderResult:
    """Everything the operator applies for one SpinApp, or the blocking problems that stop it.

    ``local_inference`` decides, from the rendered runtime-config.toml, whether the pods need a node that
    can infer locally (None: not known, no node selector is added)."""
    spec = body.get("spec") or {}
    problems = app_problems(spec, secrets, configmaps)
    toml_text, rc_problems = render_runtime_config(spec, bindings, secrets, configmaps)
    problems.extend(rc_problems)
    if any(p.blocking for p in problems):
        return RenderResult(None, None, None, problems)
    need = local_inference(toml_text) if local_inference is not None else None
    return RenderResult(
        deployment=render_deployment(body, bindings, config, need),
        service=render_service(body),
        secret=render_secret(body, toml_text),
        problems=problems,
        local_inference=need,
    )


def render_store_pvc(store_body: Body, store: StoreView) -> Manifest:
    """The claim of a `spin` store. Owned by the store only when deletionPolicy is Delete."""
    meta: dict[str, Any] = {
        "name": c.store_pvc_name(store.name),
        "namespace": store.namespace,
        "labels": {c.STORE_LABEL: store.name, c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE},
    }
    if store.deletion_policy == "Delete":
        meta["ownerReferences"] = [owner_reference(store_body)]
    spec: dict[str, Any] = {
        "accessModes": [store.spin_access_mode],
        "resources": {"requests": {"storage": store.spin_size}},
    }
    if store.spin_storage_class:
        spec["storageClassName"] = store.spin_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def referenced_objects(spec: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps a SpinApp spec reads (variables, runtime config)."""
    secrets: set[str] = set()
    configmaps: set[str] = set()
    for var in spec.get("variables") or []:
        source = var.get("valueFrom") or {}
        if source.get("secretKeyRef"):
            secrets.add(source["secretKeyRef"].get("name", ""))
        if source.get("configMapKeyRef"):
            configmaps.add(source["configMapKeyRef"].get("name", ""))
    rc = spec.get("runtimeConfig") or {}
    if rc.get("loadFromSecret"):
        secrets.add(rc["loadFromSecret"])
    # The operator reads the app's image with these (to learn its ai_models), as the pods pull it.
    secrets.update(ref.get("name", "") for ref in spec.get("imagePullSecrets") or [])
    entries = [*(rc.get("keyValueStores") or []), *(rc.get("sqliteDatabases") or [])]
    if rc.get("llmCompute"):
        entries.append(rc["llmCompute"])
    for entry in entries:
        for option in entry.get("options") or []:
            source = option.get("valueFrom") or {}
            if source.get("secretKeyRef"):
                secrets.add(source["secretKeyRef"].get("name", ""))
            if source.get("configMapKeyRef"):
                configmaps.add(source["configMapKeyRef"].get("name", ""))
    secrets.discard("")
    configmaps.discard("")
    return secrets, configmaps
