"""Operator benchmarks against a real kube-apiserver (the dev cluster), not pass/fail tests.

Measures, with `kubespin operator` running as a real process:
  1. apply → Deployment: time from creating a SpinApp to its Deployment existing (watch), p50/p99.
  2. relink → Secret: time from editing a StoreLink's store to the runtime-config Secret holding the new
     binding (watch), p50/p99.
  3. N SpinApps with one StoreLink each created at once: time until every Secret holds its binding and
     every Deployment exists, the operator's peak RSS and CPU, and the API writes of every client during
     it (the controller-manager's share included; --without-controllers runs the API server alone, as
     controller-runtime's envtest does, to see what the operator itself costs).
Peer, measured in the same run: the API server's own floor for the same observation (create a
Deployment / patch a Secret directly and see it through a watch). Ratios are operator / peer.

Goals (issue 4): relink p50 < 200 ms; 1000 apps converge < 60 s with the operator under 250 MB.

Usage:
  .venv/bin/python bench/operator_bench.py                 # starts its own dev cluster
  .venv/bin/python bench/operator_bench.py --kubeconfig K  # uses a running cluster
  options: --runs 100 --apps 1000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from kubespin_operator import constants as c
from kubespin_operator.kube import LinkResource, SpinAppResource, StoreResource
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Secret, Service
from lightkube.types import PatchType

from kubespin.devcluster import find_kubectl

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, values: list[float], peer: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "runs": len(values),
        "p50_ms": round(pct(values, 50) * 1000, 1),
        "p99_ms": round(pct(values, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }
    if peer:
        out["peer_p50_ms"] = round(pct(peer, 50) * 1000, 1)
        out["ratio_p50"] = round(pct(values, 50) / pct(peer, 50), 2)
    return out


class Watcher:
    """A watch in a thread: each event (type, object) goes to a queue with its arrival time."""

    def __init__(self, config: KubeConfig, resource: Any, namespace: str) -> None:
        self.events: queue.Queue[tuple[float, str, Any]] = queue.Queue()
        self._client = Client(config=config)
        self._resource = resource
        self._namespace = namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # let the watch connect before anything is measured

    def _run(self) -> None:
        try:
            for event_type, obj in self._client.watch(self._resource, namespace=self._namespace):
                self.events.put((time.perf_counter(), event_type, obj))
        except Exception:  # the cluster went away at the end of the run: nothing left to measure
            return

    def wait(self, match: Callable[[str, Any], bool], timeout: float = 30) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError("no matching watch event")
            stamp, event_type, obj = self.events.get(timeout=remaining)
            if match(event_type, obj):
                return stamp


def secret_url(obj: Any, label: str) -> str | None:
    import tomllib

    raw = (obj.data or {}).get(c.RUNTIME_CONFIG_KEY)
    if raw is None:
        return None
    doc = tomllib.loads(base64.b64decode(raw).decode())
    return (doc.get("key_value_store", {}).get(label) or {}).get("url")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def operator_process(kubeconfig: Path, log: Path, extra: list[str]) -> Iterator[psutil.Process]:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "kubespin"),
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"operator did not become live; see {log}")
            yield psutil.Process(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def cluster(kubeconfig: str | None, without_controllers: bool = False) -> Iterator[Path]:
    if kubeconfig:
        yield Path(kubeconfig)
        return
    from kubespin.devcluster import DevCluster
    from kubespin.devcluster_components import CONTROLLER_MANAGER, SCHEDULER

    with tempfile.TemporaryDirectory(prefix="kubespin-bench-") as tmp:
        dc = DevCluster(Path(tmp) / "cluster")
        dc.up()
        if without_controllers:
            # As controller-runtime's envtest runs: etcd + kube-apiserver only. Deployments then get no
            # ReplicaSets, Pods, Endpoints or scheduling: the API server serves the operator alone.
            for comp in dc.status().components:
                if comp.name in (CONTROLLER_MANAGER, SCHEDULER) and comp.pid:
                    os.kill(comp.pid, signal.SIGTERM)
        try:
            yield dc.kubeconfig
        finally:
            dc.down()


def new_namespace(client: Client) -> str:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


def spinapp(name: str, ns: str) -> Any:
    return SpinAppResource(
        apiVersion=c.API_VERSION,
        kind=c.SPINAPP_KIND,
        metadata={"name": name, "namespace": ns},
        spec={"image": "registry.test/app:v1"},
    )


def bench_apply_to_deployment(client: Client, config: KubeConfig, runs: int) -> dict[str, Any]:
    ns = new_namespace(client)
    deployments = Watcher(config, Deployment, ns)
    times, peer = [], []
    for i in range(runs):
        name = f"a{i}"
        start = time.perf_counter()
        client.create(spinapp(name, ns))
        seen = deployments.wait(lambda t, o, name=name: t == "ADDED" and o.metadata.name == name)
        times.append(seen - start)
    # Peer: the API server's own create → watch latency for a Deployment of the same shape.
    template = client.get(Deployment, "a0", namespace=ns)
    for i in range(runs):
        name = f"peer{i}"
        body = template.to_dict()
        body["metadata"] = {"name": name, "namespace": ns}
        body.pop("status", None)
        start = time.perf_counter()
        client.create(Deployment.from_dict(body))
        seen = deployments.wait(lambda t, o, name=name: t == "ADDED" and o.metadata.name == name)
        peer.append(seen - start)
    client.delete(Namespace, ns)
    return summary("apply SpinApp -> Deployment exists", times, peer)


def bench_relink(client: Client, config: KubeConfig, runs: int, redis_url: str) -> dict[str, Any]:
    ns = new_namespace(client)
    for store, db in (("sa", 1), ("sb", 2)):
        client.create(
            StoreResource(
                apiVersion=c.API_VERSION,
                kind=c.STORE_KIND,
                metadata={"name": store, "namespace": ns},
                spec={"redis": {"url": f"{redis_url}/{db}"}},
            )
        )
    client.create(spinapp("relinked", ns))
    secrets = Watcher(config, Secret, ns)
    client.create(
        LinkResource(
            apiVersion=c.API_VERSION,
            kind=c.LINK_KIND,
            metadata={"name": "l", "namespace": ns},
            spec={"app": "relinked", "label": "kv", "store": "sa"},
        )
    )
    secret_name = c.runtime_config_secret_name("relinked")
    secrets.wait(lambda t, o: o.metadata.name == secret_name and secret_url(o, "kv") == f"{redis_url}/1")
    times = []
    for i in range(runs):
        target, db = ("sb", 2) if i % 2 == 0 else ("sa", 1)
        want = f"{redis_url}/{db}"
        start = time.perf_counter()
        client.patch(LinkResource, "l", {"spec": {"store": target}}, namespace=ns, patch_type=PatchType.MERGE)
        seen = secrets.wait(lambda t, o, want=want: o.metadata.name == secret_name and secret_url(o, "kv") == want)
        times.append(seen - start)
    # Peer: patching a Secret directly and seeing it through the same watch.
    client.create(Secret(metadata=ObjectMeta(name="peer", namespace=ns), stringData={"v": "0"}))
    peer = []
    for i in range(runs):
        start = time.perf_counter()
        client.patch(Secret, "peer", {"stringData": {"v": str(i + 1)}}, namespace=ns)
        want = base64.b64encode(str(i + 1).encode()).decode()
        seen = secrets.wait(lambda t, o, want=want: o.metadata.name == "peer" and (o.data or {}).get("v") == want)
        peer.append(seen - start)
    client.delete(Namespace, ns)
    return summary("StoreLink edit -> Secret holds new binding", times, peer)


def api_requests(kubeconfig: Path) -> dict[str, float]:
    """The API server's request counters (apiserver_request_total) summed per "VERB resource/subresource"."""
    text = subprocess.run(
        [str(find_kubectl()), "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        labels = {k: v.strip('"') for k, v in labels.items()}
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = f"{labels.get('verb', '?')} {resource}"
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def bench_many_apps(
    client: Client, config: KubeConfig, n: int, redis_url: str, proc: psutil.Process, kubeconfig: Path
) -> dict[str, Any]:
    ns = new_namespace(client)
    client.create(
        StoreResource(
            apiVersion=c.API_VERSION,
            kind=c.STORE_KIND,
            metadata={"name": "shared", "namespace": ns},
            spec={"redis": {"url": f"{redis_url}/3"}},
        )
    )
    secrets = Watcher(config, Secret, ns)
    deployments = Watcher(config, Deployment, ns)
    peak = proc.memory_info().rss
    cpu_before = sum(proc.cpu_times()[:2])
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    requests_before = api_requests(kubeconfig)
    start = time.perf_counter()

    # Created at once, as `kubectl apply` of a large manifest from a few clients would: 8 in flight.
    def create_pair(i: int) -> None:
        link_obj = LinkResource(
            apiVersion=c.API_VERSION,
            kind=c.LINK_KIND,
            metadata={"name": f"l{i}", "namespace": ns},
            spec={"app": f"m{i}", "label": "kv", "store": "shared"},
        )
        first, second = (link_obj, spinapp(f"m{i}", ns)) if i % 2 == 0 else (spinapp(f"m{i}", ns), link_obj)
        client.create(first)
        client.create(second)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create_pair, range(n)))
    created = time.perf_counter() - start
    want = f"{redis_url}/3"
    bound: set[str] = set()
    deadline = time.perf_counter() + 600
    while len(bound) < n and time.perf_counter() < deadline:
        try:
            _, _, obj = secrets.events.get(timeout=deadline - time.perf_counter())
        except queue.Empty:
            break
        if secret_url(obj, "kv") == want:
            bound.add(obj.metadata.name)
    secrets_done = time.perf_counter() - start
    rendered: set[str] = set()
    while len(rendered) < n and time.perf_counter() < deadline:
        try:
            _, _, obj = deployments.events.get(timeout=deadline - time.perf_counter())
        except queue.Empty:
            break
        rendered.add(obj.metadata.name)
    converged = time.perf_counter() - start
    cpu_used = sum(proc.cpu_times()[:2]) - cpu_before
    requests_after = api_requests(kubeconfig)
    writes = {
        key: int(requests_after[key] - requests_before.get(key, 0.0))
        for key in requests_after
        if key.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "APPLY", "DELETE", "CREATE", "UPDATE")
        and requests_after[key] - requests_before.get(key, 0.0) >= 1
    }
    stop.set()
    sampler.join()
    client.delete(Namespace, ns)
    return {
        "name": f"{n} SpinApps + StoreLinks created at once",
        "created_in_s": round(created, 1),
        "converged_in_s": round(converged, 1),
        "converged_after_last_create_s": round(converged - created, 1),
        "all_secrets_bound_s": round(secrets_done, 1),
        "bound": len(bound),
        "deployments": len(rendered),
        "operator_peak_rss_mb": round(peak / 2**20, 1),
        "operator_cpu_s": round(cpu_used, 1),
        # Every writer's requests (this bench, the operator, controller-manager, scheduler), by verb/resource.
        "api_writes_during": dict(sorted(writes.items(), key=lambda kv: -kv[1])),
    }


def bench_many_floor(client: Client, n: int, redis_url: str) -> dict[str, Any]:
    """Peer for the N-apps run: the same object writes without the operator. A plain Python client (lightkube)
    server-side-applies the same Secret, Service and Deployment per app (rendered by the operator's own
    pure renderers) and patches a status, 32 requests in flight as the operator's 32 workers; no watch,
    no Events, no links. What is left between this and the operator is the operator's own cost."""
    from kubespin_operator.model import Binding, RedisBackend
    from kubespin_operator.render import RenderConfig, render_app

    ns = new_namespace(client)
    config = RenderConfig()

    def one(i: int) -> None:
        app = spinapp(f"f{i}", ns)
        created = client.create(app)
        body = created.to_dict()
        binding = Binding("kv", "shared", f"l{i}", RedisBackend(f"{redis_url}/3"))
        result = render_app(body, [binding], {}, {}, config)
        for manifest in (result.secret, result.service, result.deployment):
            assert manifest is not None
            resource = {"Secret": Secret, "Service": Service, "Deployment": Deployment}[manifest["kind"]]
            client.apply(resource.from_dict(manifest), field_manager="kubespin-bench-floor", force=True)
        client.patch(
            SpinAppResource.Status,
            f"f{i}",
            {"status": {"observedGeneration": 1, "replicas": 0}},
            namespace=ns,
            patch_type=PatchType.MERGE,
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, range(n)))
    seconds = time.perf_counter() - start
    client.delete(Namespace, ns)
    return {"name": f"peer: {n} apps' objects applied directly (API server floor)", "seconds": round(seconds, 1)}


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        try:
            yield f"redis://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--operator-arg", action="append", default=[], help="extra `kubespin operator` argument")
    parser.add_argument("--skip", action="append", default=[], choices=["apply", "relink", "many"])
    parser.add_argument(
        "--without-controllers",
        action="store_true",
        help="stop kube-controller-manager and kube-scheduler after start (envtest-style API server only)",
    )
    args = parser.parse_args()
    results = []
    with cluster(args.kubeconfig, args.without_controllers) as kubeconfig, redis_server() as redis_url:
        config = KubeConfig.from_file(kubeconfig)
        client = Client(config=config, field_manager="kubespin-bench")
        subprocess.run(
            [str(find_kubectl()), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", str(REPO / "crds")],
            check=True,
            capture_output=True,
        )
        log = Path(tempfile.gettempdir()) / f"kubespin-bench-operator-{os.getpid()}.log"
        with operator_process(kubeconfig, log, args.operator_arg) as proc:
            if "apply" not in args.skip:
                results.append(bench_apply_to_deployment(client, config, args.runs))
                print(json.dumps(results[-1]), flush=True)
            if "relink" not in args.skip:
                results.append(bench_relink(client, config, args.runs, redis_url))
                print(json.dumps(results[-1]), flush=True)
            if "many" not in args.skip:
                results.append(bench_many_apps(client, config, args.apps, redis_url, proc, kubeconfig))
                print(json.dumps(results[-1]), flush=True)
                # Its own client with a long timeout: with the controllers running, single writes can take
                # longer than lightkube's default 10 s while the API server is saturated.
                patient = Client(config=config, field_manager="kubespin-bench", timeout=120)
                floor = bench_many_floor(patient, args.apps, redis_url)
                floor["ratio_operator_over_floor"] = round(results[-1]["converged_in_s"] / floor["seconds"], 2)
                results.append(floor)
                print(json.dumps(results[-1]), flush=True)
        print(f"operator log: {log}", file=sys.stderr)


if __name__ == "__main__":
    main()
