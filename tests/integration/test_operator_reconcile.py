# ruff: noqa: F811  (pytest fixtures are imported from test_operator_support and used as arguments)
"""The operator against a real kube-apiserver + kube-controller-manager (the session's dev cluster).

One `kubespin operator` process serves the whole module; each test works in its own namespace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubespin_operator import constants as c
from kubespin_operator.kube import LinkResource, SpinAppResource, StoreResource
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Event, Pod, Secret, Service
from lightkube.types import PatchType
from test_operator_support import (  # noqa: F401  (fixtures)
    Cluster,
    OperatorProcess,
    cluster,
    condition,
    events_for,
    get,
    has_condition,
    kv_tables,
    link,
    ns,
    operator,
    redis_url,
    spinapp,
    store,
    wait_for,
)

pytestmark = pytest.mark.integration


def deployment(cluster: Cluster, ns: str, name: str) -> Any:
    return get_or_none(cluster, Deployment, ns, name)


def claim_volumes(dep: Any, claim_name: str) -> list[Any]:
    volumes = dep.spec.template.spec.volumes or [] if dep is not None else []
    return [v for v in volumes if v.name == claim_name]


def get_or_none(cluster: Cluster, kind: Any, ns: str, name: str) -> Any:
    try:
        return cluster.client.get(kind, name, namespace=ns)
    except ApiError:
        return None


def test_spinapp_renders_owned_deployment_service_and_secret(
    cluster: Cluster, operator: OperatorProcess, ns: str
) -> None:
    created = cluster.client.create(spinapp("hello", ns, replicas=2, variables=[{"name": "greeting", "value": "hi"}]))
    dep = wait_for(lambda: deployment(cluster, ns, "hello"), what="Deployment")
    uid = created.metadata.uid
    container = dep.spec.template.spec.containers[0]
    assert container.image == "example.test/kubespin-shim:test"
    assert container.command == [
        "kubespin",
        "up",
        "-f",
        "registry.test/app:v1",
        "--listen",
        "0.0.0.0:80",
        "--runtime-config-file",
        c.RUNTIME_CONFIG_PATH,
    ]
    assert {e.name: e.value for e in container.env}["SPIN_VARIABLE_GREETING"] == "hi"
    mount = next(m for m in container.volumeMounts if m.name == c.RUNTIME_CONFIG_VOLUME)
    assert mount.mountPath == c.RUNTIME_CONFIG_DIR and mount.subPath is None
    assert dep.spec.replicas == 2
    # The operator applies the three objects concurrently, so the Deployment may be seen first.
    svc = wait_for(lambda: get_or_none(cluster, Service, ns, "hello"), what="Service")
    secret = wait_for(lambda: get_or_none(cluster, Secret, ns, "hello-runtime-config"), what="Secret")
    for obj in (dep, svc, secret):
        (ref,) = obj.metadata.ownerReferences
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("SpinApp", "hello", uid, True)

    # The real ReplicaSet controller acts on what the operator rendered: pods exist (but never run).
    wait_for(lambda: len(list(cluster.client.list(Pod, namespace=ns, labels={c.APP_LABEL: "hello"}))) == 2, what="pods")

    app = wait_for(
        lambda: has_condition(cluster, SpinAppResource, "hello", ns, "Ready", "False", "DeploymentUnavailable"),
        what="Ready=False (no kubelet, pods never become ready)",
    )
    status = app["status"]
    assert status["observedGeneration"] == app["metadata"]["generation"]
    assert status["selector"] == f"{c.APP_LABEL}=hello"
    assert status["runtimeConfigSecret"] == "hello-runtime-config"
    assert condition(app, "Degraded")["status"] == "False"
    assert condition(app, "Progressing")["status"] == "True"


def test_prompt_ab_story_relinks_without_rollout(
    cluster: Cluster, operator: OperatorProcess, ns: str, redis_url: str
) -> None:
    cl = cluster.client
    cl.create(store("case-a", ns, redis={"url": f"{redis_url}/1"}))
    cl.create(store("case-b", ns, redis={"url": f"{redis_url}/2"}))
    cl.create(spinapp("chat", ns))
    dep = wait_for(lambda: deployment(cluster, ns, "chat"), what="Deployment")
    wait_for(lambda: kv_tables(cluster, ns, "chat") == {}, what="empty runtime config")
    generation, template = dep.metadata.generation, dep.spec.template.to_dict()

    # link → case-a
    cl.create(link("prompt", ns, "chat", "promptstore", "case-a"))
    wait_for(
        lambda: kv_tables(cluster, ns, "chat") == {"promptstore": {"type": "redis", "url": f"{redis_url}/1"}},
        what="binding to case-a",
    )
    # relink → case-b: only the Secret changes
    cl.patch(LinkResource, "prompt", {"spec": {"store": "case-b"}}, namespace=ns, patch_type=PatchType.MERGE)
    wait_for(
        lambda: kv_tables(cluster, ns, "chat") == {"promptstore": {"type": "redis", "url": f"{redis_url}/2"}},
        what="binding to case-b",
    )
    # both, under two labels
    cl.create(link("prompt-a", ns, "chat", "promptstore-a", "case-a"))
    wait_for(
        lambda: (
            kv_tables(cluster, ns, "chat")
            == {
                "promptstore": {"type": "redis", "url": f"{redis_url}/2"},
                "promptstore-a": {"type": "redis", "url": f"{redis_url}/1"},
            }
        ),
        what="two labels bound",
    )
    app = wait_for(
        lambda: (
            (a := get(cluster, SpinAppResource, "chat", ns)) and len(a["status"].get("keyValueStores") or []) == 2 and a
        ),
        what="status lists both labels",
    )
    assert {(s["label"], s["store"], s["storeLink"]) for s in app["status"]["keyValueStores"]} == {
        ("promptstore", "case-b", "prompt"),
        ("promptstore-a", "case-a", "prompt-a"),
    }
    store_a = wait_for(
        lambda: has_condition(cluster, StoreResource, "case-a", ns, "Ready", "True", "Reachable"),
        what="case-a Ready (PING answered)",
    )
    wait_for(
        lambda: (
            get(cluster, StoreResource, "case-a", ns)["status"].get("linkedApps")
            == [{"app": "chat", "label": "promptstore-a", "storeLink": "prompt-a"}]
        ),
        what="case-a lists the app linked to it",
    )
    assert store_a["status"]["backend"] == "redis"

    # unlink
    cl.delete(LinkResource, "prompt", namespace=ns)
    cl.delete(LinkResource, "prompt-a", namespace=ns)
    wait_for(lambda: kv_tables(cluster, ns, "chat") == {}, what="unlinked")

    # No rollout at any point: the pod template and generation never changed, one ReplicaSet only.
    dep = deployment(cluster, ns, "chat")
    assert dep.metadata.generation == generation
    assert dep.spec.template.to_dict() == template
    assert len(list(cl.list(ReplicaSet, namespace=ns))) == 1
    wait_for(
        lambda: {"Linked", "Relinked", "Unlinked"} <= {e.reason for e in events_for(cluster, ns, "chat")},
        what="Linked, Relinked and Unlinked Events on the app",
    )


def test_second_link_for_a_label_conflicts_and_has_no_effect(
    cluster: Cluster, operator: OperatorProcess, ns: str, redis_url: str
) -> None:
    cl = cluster.client
    cl.create(store("one", ns, redis={"url": f"{redis_url}/3"}))
    cl.create(store("two", ns, redis={"url": f"{redis_url}/4"}))
    cl.create(spinapp("app", ns))
    cl.create(link("first", ns, "app", "kv", "one"))
    wait_for(lambda: has_condition(cluster, LinkResource, "first", ns, "Ready", "True", "Bound"), what="first bound")
    cl.create(link("second", ns, "app", "kv", "two"))
    second = wait_for(
        lambda: has_condition(cluster, LinkResource, "second", ns, "Conflict", "True"), what="Conflict condition"
    )
    assert "first" in condition(second, "Conflict")["message"]
    assert condition(second, "Ready")["status"] == "False"
    assert kv_tables(cluster, ns, "app") == {"kv": {"type": "redis", "url": f"{redis_url}/3"}}
    wait_for(lambda: any(e.reason == "Conflict" for e in events_for(cluster, ns, "second")), what="Conflict Event")
    # Deleting the winner lets the other link take effect by itself.
    cl.delete(LinkResource, "first", namespace=ns)
    wait_for(lambda: kv_tables(cluster, ns, "app") == {"kv": {"type": "redis", "url": f"{redis_url}/4"}})
    wait_for(lambda: has_condition(cluster, LinkResource, "second", ns, "Ready", "True", "Bound"))


def test_link_to_missing_app_and_store_takes_effect_when_they_appear(
    cluster: Cluster, operator: OperatorProcess, ns: str, redis_url: str
) -> None:
    cl = cluster.client
    cl.create(link("early", ns, "later-app", "kv", "later-store"))
    wait_for(lambda: has_condition(cluster, LinkResource, "early", ns, "Ready", "False", "StoreNotFound"))
    cl.create(store("later-store", ns, redis={"url": f"{redis_url}/5"}))
    wait_for(lambda: has_condition(cluster, LinkResource, "early", ns, "Ready", "False", "AppNotFound"))
    cl.create(spinapp("later-app", ns))
    wait_for(lambda: has_condition(cluster, LinkResource, "early", ns, "Ready", "True", "Bound"))
    wait_for(lambda: kv_tables(cluster, ns, "later-app") == {"kv": {"type": "redis", "url": f"{redis_url}/5"}})


def test_store_deletion_is_held_while_linked(
    cluster: Cluster, operator: OperatorProcess, ns: str, redis_url: str
) -> None:
    cl = cluster.client
    cl.create(store("held", ns, redis={"url": f"{redis_url}/6"}))
    cl.create(spinapp("user", ns))
    cl.create(link("uses-held", ns, "user", "kv", "held"))
    wait_for(
        lambda: c.STORE_FINALIZER in (get(cluster, StoreResource, "held", ns)["metadata"].get("finalizers") or []),
        what="finalizer on the store",
    )
    wait_for(lambda: kv_tables(cluster, ns, "user") == {"kv": {"type": "redis", "url": f"{redis_url}/6"}})
    cl.delete(StoreResource, "held", namespace=ns)
    held = wait_for(
        lambda: has_condition(cluster, StoreResource, "held", ns, "DeletionBlocked", "True", "StillLinked"),
        what="DeletionBlocked",
    )
    assert "uses-held" in condition(held, "DeletionBlocked")["message"]
    blocked = wait_for(
        lambda: [e for e in events_for(cluster, ns, "held") if e.reason == "StillLinked"], what="StillLinked Event"
    )
    assert "uses-held" in blocked[0].message
    # The app keeps its binding while the store waits.
    assert kv_tables(cluster, ns, "user") == {"kv": {"type": "redis", "url": f"{redis_url}/6"}}

    cl.delete(LinkResource, "uses-held", namespace=ns)

    def gone() -> bool:
        try:
            cl.get(StoreResource, "held", namespace=ns)
        except ApiError as err:
            return err.status.code == 404
        return False

    wait_for(gone, what="store deleted once unlinked")
    wait_for(lambda: kv_tables(cluster, ns, "user") == {}, what="binding removed")


def test_deleting_the_app_garbage_collects_what_it_owned(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cl = cluster.client
    cl.create(spinapp("short-lived", ns))
    wait_for(lambda: deployment(cluster, ns, "short-lived"), what="Deployment")
    wait_for(lambda: kv_tables(cluster, ns, "short-lived") is not None, what="Secret")
    cl.delete(SpinAppResource, "short-lived", namespace=ns)

    def all_gone() -> bool:
        left = []
        for res, name in (
            (Deployment, "short-lived"),
            (Service, "short-lived"),
            (Secret, "short-lived-runtime-config"),
        ):
            try:
                cl.get(res, name, namespace=ns)
                left.append(name)
            except ApiError as err:
                if err.status.code != 404:
                    raise
        return not left

    # The real garbage collector in kube-controller-manager does this, through the owner references.
    wait_for(all_gone, timeout=60, what="owned objects garbage-collected")


def test_kubectl_scale_targets_the_spinapp(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.client.create(spinapp("scaled", ns, replicas=1))
    wait_for(lambda: deployment(cluster, ns, "scaled"), what="Deployment")
    cluster.kubectl("-n", ns, "scale", "spinapp/scaled", "--replicas=3")
    wait_for(lambda: (d := deployment(cluster, ns, "scaled")) and d.spec.replicas == 3, what="Deployment scaled")
    scale = json.loads(cluster.kubectl("-n", ns, "get", "spinapp/scaled", "--subresource=scale", "-o", "json").stdout)
    assert scale["spec"]["replicas"] == 3
    # status.replicas follows the Deployment (pods exist, none ready without a kubelet)
    wait_for(
        lambda: (
            json.loads(cluster.kubectl("-n", ns, "get", "spinapp/scaled", "--subresource=scale", "-o", "json").stdout)[
                "status"
            ].get("replicas")
            == 3
        ),
        what="scale status replicas",
    )
    assert scale["status"]["selector"] == f"{c.APP_LABEL}=scaled"


def _play_kubelet(cluster: Cluster, ns: str, app: str) -> int:
    """Mark the app's pods Running and Ready: the status write a kubelet makes once probes pass."""
    pods = list(cluster.client.list(Pod, namespace=ns, labels={c.APP_LABEL: app}))
    for pod in pods:
        if pod.metadata.deletionTimestamp:
            continue
        cluster.client.patch(
            Pod.Status,
            pod.metadata.name,
            {
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Initialized", "status": "True"},
                        {"type": "ContainersReady", "status": "True"},
                        {"type": "Ready", "status": "True"},
                    ],
                }
            },
            namespace=ns,
        )
    return len(pods)


def test_kubectl_wait_for_ready(cluster: Cluster, operator: OperatorProcess, ns: str) -> None:
    cluster.client.create(spinapp("waited", ns, replicas=1))
    wait_for(lambda: len(list(cluster.client.list(Pod, namespace=ns, labels={c.APP_LABEL: "waited"}))) == 1, what="pod")
    # Without a kubelet the pod never becomes ready, and kubectl wait times out.
    proc = cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "spinapp/waited", "--timeout=3s", check=False)
    assert proc.returncode != 0
    # Play the kubelet; the real ReplicaSet and Deployment controllers then report it available.
    _play_kubelet(cluster, ns, "waited")
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "spinapp/waited", "--timeout=60s")
    app = get(cluster, SpinAppResource, "waited", ns)
    assert app["status"]["readyReplicas"] == 1
    assert condition(app, "Ready")["reason"] == "DeploymentAvailable"
    assert condition(app, "Progressing")["status"] == "False"


def test_bad_input_is_degraded_with_an_event_and_others_are_served(
    cluster: Cluster, operator: OperatorProcess, ns: str
) -> None:
    cl = cluster.client
    cl.create(spinapp("bad-executor", ns, executor="wagi"))
    cl.create(spinapp("both", ns, replicas=2, enableAutoscaling=True))
    cl.create(
        spinapp(
            "needs-secret",
            ns,
            variables=[{"name": "token", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}}],
        )
    )
    cl.create(store("badurl", ns, redis={"url": "http://not-redis"}))
    cl.create(spinapp("good", ns))
    cl.create(link("to-bad", ns, "good", "kv", "badurl"))

    bad = wait_for(
        lambda: has_condition(cluster, SpinAppResource, "bad-executor", ns, "Degraded", "True", "UnknownExecutor")
    )
    assert "wagi" in condition(bad, "Degraded")["message"]
    assert condition(bad, "Ready")["status"] == "False"
    assert deployment(cluster, ns, "bad-executor") is None
    wait_for(
        lambda: any(
            e.reason == "UnknownExecutor" and e.type == "Warning" for e in events_for(cluster, ns, "bad-executor")
        ),
        what="UnknownExecutor Warning Event",
    )
    wait_for(lambda: has_condition(cluster, SpinAppResource, "both", ns, "Degraded", "True", "ReplicasWithAutoscaling"))
    wait_for(lambda: has_condition(cluster, StoreResource, "badurl", ns, "Degraded", "True", "InvalidRedisURL"))
    wait_for(lambda: has_condition(cluster, LinkResource, "to-bad", ns, "Ready", "False", "InvalidRedisURL"))
    wait_for(lambda: has_condition(cluster, SpinAppResource, "good", ns, "Degraded", "True", "InvalidRedisURL"))
    # ... and the operator keeps serving: "good" is rendered, without the unusable store.
    wait_for(lambda: deployment(cluster, ns, "good"), what="good app rendered")
    assert kv_tables(cluster, ns, "good") == {}

    # A variable's missing Secret is reported; creating the Secret clears it (the Secret is watched).
    wait_for(lambda: has_condition(cluster, SpinAppResource, "needs-secret", ns, "Degraded", "True", "SecretNotFound"))
    cl.create(Secret(metadata=ObjectMeta(name="tok", namespace=ns), stringData={"t": "value"}))
    wait_for(lambda: has_condition(cluster, SpinAppResource, "needs-secret", ns, "Degraded", "False"))
    # Fixing the executor recovers the app.
    cl.patch(SpinAppResource, "bad-executor", {"spec": {"executor": None}}, namespace=ns, patch_type=PatchType.MERGE)
    wait_for(lambda: deployment(cluster, ns, "bad-executor"), what="recovered app rendered")
    wait_for(lambda: has_condition(cluster, SpinAppResource, "bad-executor", ns, "Degraded", "False"))


def test_credentials_stay_in_secrets(cluster: Cluster, operator: OperatorProcess, ns: str, redis_url: str) -> None:
    cl = cluster.client
    password = "s3cr3t-pa55word"
    # The test Redis has no password, so PING with this URL fails with an AUTH error: the store reports
    # Unreachable, and that message must not carry the password either.
    url = redis_url.replace("redis://", f"redis://:{password}@") + "/7"
    cl.create(Secret(metadata=ObjectMeta(name="redis-cred", namespace=ns), stringData={"url": url}))
    cl.create(store("secret-store", ns, redis={"urlFrom": {"secretKeyRef": {"name": "redis-cred", "key": "url"}}}))
    cl.create(spinapp("private", ns))
    cl.create(link("private-kv", ns, "private", "kv", "secret-store"))
    wait_for(lambda: kv_tables(cluster, ns, "private") == {"kv": {"type": "redis", "url": url}}, what="bound")
    wait_for(
        lambda: (
            has_condition(cluster, StoreResource, "secret-store", ns, "Ready", "False", "Unreachable")
            or has_condition(cluster, StoreResource, "secret-store", ns, "Ready", "True")
        ),
        what="store checked",
    )

    everything = [
        json.dumps(get(cluster, res, name, ns).get("status"))
        for res, name in ((SpinAppResource, "private"), (StoreResource, "secret-store"), (LinkResource, "private-kv"))
    ]
    everything += [e.message or "" for e in cluster.client.list(Event, namespace=ns)]
    everything.append(operator.log_text())
    leaks = [text for text in everything if password in text]
    assert not leaks, f"password leaked outside Secrets: {leaks[:1]}"


def test_spin_store_gets_a_claim_and_binds_only_to_a_single_replica_app(
    cluster: Cluster, operator: OperatorProcess, ns: str
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim

    cl = cluster.client
    cl.create(store("local", ns, spin={"size": "1Gi", "storageClassName": "manual"}, deletionPolicy="Delete"))
    claim_name = c.store_pvc_name("local")
    claim = wait_for(lambda: cl.get(PersistentVolumeClaim, claim_name, namespace=ns), what="PVC created")
    (owner,) = claim.metadata.ownerReferences  # deletionPolicy: Delete → the store owns its claim
    assert owner.kind == c.STORE_KIND and owner.name == "local"
    assert claim.spec.accessModes == ["ReadWriteOnce"] and claim.spec.storageClassName == "manual"
    wait_for(lambda: has_condition(cluster, StoreResource, "local", ns, "Ready", "False", "ClaimPending"))

    # A matching PersistentVolume: the real PV controller binds the claim, and the store turns Ready.
    pv_name = f"pv-{ns}"
    cl.create(
        PersistentVolume.from_dict(
            {
                "metadata": {"name": pv_name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual",
                    "hostPath": {"path": f"/tmp/{pv_name}"},
                },
            }
        )
    )
    try:
        wait_for(
            lambda: has_condition(cluster, StoreResource, "local", ns, "Ready", "True", "ClaimBound"),
            timeout=60,
            what="claim bound by the PV controller",
        )
        cl.create(spinapp("single", ns, replicas=1))
        cl.create(spinapp("many", ns, replicas=3))
        cl.create(link("single-kv", ns, "single", "kv", "local"))
        cl.create(link("many-kv", ns, "many", "kv", "local"))
        wait_for(
            lambda: (
                kv_tables(cluster, ns, "single") == {"kv": {"type": "spin", "path": f"{c.SPIN_STORE_ROOT}/local/kv.db"}}
            ),
            what="spin binding",
        )
        # The Secret and the Deployment are applied concurrently: wait for the claim's volume too.
        volumes = wait_for(
            lambda: claim_volumes(deployment(cluster, ns, "single"), claim_name), what="claim volume in the Deployment"
        )
        assert volumes[0].persistentVolumeClaim.claimName == claim_name
        refused = wait_for(lambda: has_condition(cluster, LinkResource, "many-kv", ns, "Ready", "False", "Refused"))
        assert "replicas" in condition(refused, "Ready")["message"]
        assert kv_tables(cluster, ns, "many") == {}
    finally:
        cl.delete(PersistentVolume, pv_name)
