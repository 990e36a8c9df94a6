"""End-to-end benchmarks through the local node (issue 6), not pass/fail tests.

Starts its own installation as real processes: dev cluster, `kubespin operator`, `kubespin node`,
redis-server. The app is the prompt A/B app (tests/e2e/scenario.py: py-kv reading label
`promptstore`), run from its path on this machine.

1. apply → first 200: time from creating a SpinApp (the API call `kubectl apply` makes) to the first
   HTTP 200 from the app through the node's port, p50/p90 over --runs runs, with the stages (pod
   created, bound, port published, 200). Peer, interleaved run by run: `kubespin up` of the same app
   started directly (spawn → first 200). Ratio = through the cluster / direct.
2. relink under load: --clients threads send GET /kv/promptstore/prompt back to back while the
   StoreLink is patched from one store to the other (--relinks times, alternating). Per relink: time
   to the runtime-config Secret holding the new store (watch), to the node's ``..data`` swap on disk,
   to the first answer from the new store; failed requests (goal 0) and answers from the old store
   after the first new one. Peer: the shim alone, its runtime-config directory swapped in place with
   the same AtomicWriter, under the same load. Ratio = end to end / shim alone.

Usage: .venv/bin/python bench/e2e_bench.py [--runs 20] [--relinks 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubespin.devcluster import DevCluster  # noqa: E402
from kubespin.node.atomic_writer import FileProjection, write_atomic  # noqa: E402
from tests.e2e import scenario  # noqa: E402
from tests.e2e.harness import KUBESPIN, Cluster, ManagedProcess, wait_for  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

NODE = "kubespin-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- 1. apply -> first 200 -----------------------------------------------------------------------------


def first_200(url: str, deadline: float, path: str = "/kv/default") -> float:
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url + path).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise TimeoutError(f"no 200 from {url}")


def apply_to_200(cluster: Cluster, client: Any, ns: str, image: str, name: str) -> dict[str, float]:
    from kubespin_operator.kube import SpinAppResource
    from lightkube.resources.core_v1 import Pod

    stages: dict[str, float] = {}
    body = scenario.spinapp(image, name=name)
    body["metadata"]["namespace"] = ns
    t0 = time.monotonic()
    client.create(SpinAppResource.from_dict(body))
    deadline = t0 + 120
    url = None
    while url is None and time.monotonic() < deadline:
        for pod in client.list(Pod, namespace=ns, labels={"kubespin.dev/app": name}):
            stages.setdefault("pod created", time.monotonic() - t0)
            if pod.spec.nodeName:
                stages.setdefault("bound to node", time.monotonic() - t0)
            url = (pod.metadata.annotations or {}).get("kubespin.dev/local-url")
            if url:
                stages["port published"] = time.monotonic() - t0
        if url is None:
            time.sleep(0.01)
    if url is None:
        raise TimeoutError(f"app {name}: no pod URL")
    stages["first 200"] = first_200(url, deadline) - t0
    client.delete(SpinAppResource, name, namespace=ns)
    wait_for(lambda: not list(client.list(Pod, namespace=ns, labels={"kubespin.dev/app": name})), 60, "pods gone")
    return stages


def direct_to_200(app_dir: Path, work: Path) -> float:
    port = free_port()
    t0 = time.monotonic()
    with (work / f"direct-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [*KUBESPIN, "up", "-f", str(app_dir), "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log, cwd=work
        )
    try:
        return first_200(f"http://127.0.0.1:{port}", t0 + 120) - t0
    finally:
        proc.terminate()
        proc.wait(10)


def bench_apply(cluster: Cluster, client: Any, image: str, app_dir: Path, work: Path, runs: int) -> None:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    # One warm-up of each (wasm compile cache, Python bytecode): not counted.
    apply_to_200(cluster, client, ns, image, "warmup")
    direct_to_200(app_dir, work)
    node_runs: list[dict[str, float]] = []
    direct_runs: list[float] = []
    for i in range(runs):
        node_runs.append(apply_to_200(cluster, client, ns, image, f"app-{i}"))
        direct_runs.append(direct_to_200(app_dir, work))
    total = [r["first 200"] for r in node_runs]
    print(f"\n1. apply -> first 200 through the local node ({runs} runs)")
    for stage in ("pod created", "bound to node", "port published", "first 200"):
        values = [r[stage] for r in node_runs if stage in r]
        print(f"   {stage:16} p50 {ms(statistics.median(values)):>8}  p90 {ms(pct(values, 90)):>8}")
    direct = statistics.median(direct_runs)
    print(f"   peer: kubespin up directly, spawn -> first 200: p50 {ms(direct)}  p90 {ms(pct(direct_runs, 90))}")
    print(f"   ratio (p50, cluster / direct): {statistics.median(total) / direct:.2f}")


# --- 2. relink under load ------------------------------------------------------------------------------


@dataclass
class Load:
    """Client threads hammering one URL; every answer is recorded with its time."""

    url: str
    clients: int
    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    now = time.monotonic()
                    with self._lock:
                        if response.status_code == 200:
                            self.answers.append((now, response.text))
                        else:
                            self.failures.append((now, f"{response.status_code} {response.text[:80]}"))
                except httpx.HTTPError as err:
                    with self._lock:
                        self.failures.append((time.monotonic(), repr(err)))

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def first_answer(self, text: str, after: float) -> float | None:
        with self._lock:
            return next((t for t, body in self.answers if t >= after and body == text), None)

    def stale_after(self, old: str, first_new: float) -> int:
        with self._lock:
            return sum(1 for t, body in self.answers if t > first_new and body == old)


def one_relink(
    load: Load, switch: Callable[[], None], old: str, new: str, extra: dict[str, Callable[[], bool]]
) -> dict:
    t0 = time.monotonic()
    switch()
    seen: dict[str, float] = {}
    deadline = t0 + 30
    while time.monotonic() < deadline:
        for name, probe in extra.items():
            if name not in seen and probe():
                seen[name] = time.monotonic() - t0
        first = load.first_answer(new, t0)
        if first is not None and len(seen) == len(extra):
            seen["first new answer"] = first - t0
            break
        time.sleep(0.005)
    else:
        raise TimeoutError(f"no answer {new!r} within 30 s")
    time.sleep(0.3)
    seen["old answers after the first new"] = load.stale_after(old, t0 + seen["first new answer"])
    return seen


def report_relinks(title: str, runs: list[dict], load: Load, requests_before: int) -> float:
    print(f"\n{title}")
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key.startswith("old answers"):
            print(f"   {key:32} total {sum(values)}")
        else:
            print(f"   {key:32} p50 {ms(statistics.median(values)):>8}  max {ms(max(values)):>8}")
    served = len(load.answers) - requests_before
    print(f"   requests served during the runs: {served}, failed: {len(load.failures)}")
    for failure in load.failures[:5]:
        print(f"     failure: {failure[1]}")
    return statistics.median([r["first new answer"] for r in runs])


def bench_relink(
    cluster: Cluster, client: Any, image: str, app_dir: Path, redis: RedisServer, work: Path, relinks: int, clients: int
) -> None:
    from kubespin_operator.kube import LinkResource
    from lightkube.resources.core_v1 import Secret
    from lightkube.types import PatchType

    ns = f"relink-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    for db, store in enumerate(scenario.STORES, start=1):
        cluster.cli("kv", "create", store, "--redis-url", redis.url(db), "-n", ns)
        cluster.cli("kv", "set", "--store", store, f"{scenario.KEY}={scenario.PROMPTS[store]}", "-n", ns)
    cluster.apply(ns, scenario.spinapp(image, checks=scenario.fast_checks()))
    (url,) = cluster.ready_urls(ns, scenario.APP_NAME, 1)
    cluster.apply(ns, scenario.storelink("case-a"))
    wait_for(lambda: httpx.get(f"{url}/kv/promptstore/prompt").text == scenario.PROMPTS["case-a"], 30, "answer A")
    (pod,) = cluster.app_pods(ns, scenario.APP_NAME)
    volume = (
        work / "node" / "pods" / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~secret" / "kubespin-runtime-config"
    )

    def secret_has(store: str) -> bool:
        secret = client.get(Secret, "chat-runtime-config", namespace=ns)
        text = base64.b64decode(secret.data["runtime-config.toml"]).decode()
        return redis.url(scenario.STORES.index(store) + 1) in text

    def disk_has(store: str) -> bool:
        text = (volume / "runtime-config.toml").read_text()
        return redis.url(scenario.STORES.index(store) + 1) in text

    runs = []
    with Load(f"{url}/kv/promptstore/prompt", clients) as load:
        time.sleep(1)
        before = len(load.answers)
        current = "case-a"
        for _ in range(relinks):
            target = "case-b" if current == "case-a" else "case-a"

            def switch(target: str = target) -> None:
                client.patch(
                    LinkResource,
                    scenario.LINK_NAME,
                    {"spec": {"store": target}},
                    namespace=ns,
                    patch_type=PatchType.MERGE,
                )

            runs.append(
                one_relink(
                    load,
                    switch,
                    scenario.PROMPTS[current],
                    scenario.PROMPTS[target],
                    {
                        "Secret holds the new store": lambda target=target: secret_has(target),
                        "node swapped ..data on disk": lambda target=target: disk_has(target),
                    },
                )
            )
            current = target
            time.sleep(0.5)
    e2e = report_relinks(
        f"2. relink under load ({relinks} relinks, {clients} clients, through the node)", runs, load, before
    )

    # Peer: the shim alone, its runtime-config directory swapped by the same AtomicWriter.
    rc_dir = work / "peer-rc"
    tables = {
        s: f'[key_value_store.promptstore]\ntype = "redis"\nurl = "{redis.url(i)}"\n'
        for i, s in enumerate(scenario.STORES, 1)
    }
    write_atomic(rc_dir, {"runtime-config.toml": FileProjection(tables["case-a"].encode())})
    port = free_port()
    with (work / "peer.log").open("wb") as log:
        proc = subprocess.Popen(
            [*KUBESPIN, "up", "-f", str(app_dir), "--listen", f"127.0.0.1:{port}",
             "--runtime-config-file", str(rc_dir / "runtime-config.toml")],
            stdout=log, stderr=log, cwd=work,
        )  # fmt: skip
    try:
        peer_url = f"http://127.0.0.1:{port}/kv/promptstore/prompt"
        wait_for(lambda: httpx.get(peer_url).text == scenario.PROMPTS["case-a"], 60, "peer answers A")
        peer_runs = []
        with Load(peer_url, clients) as load:
            time.sleep(1)
            before = len(load.answers)
            current = "case-a"
            for _ in range(relinks):
                target = "case-b" if current == "case-a" else "case-a"
                peer_runs.append(
                    one_relink(
                        load,
                        lambda target=target: write_atomic(
                            rc_dir, {"runtime-config.toml": FileProjection(tables[target].encode())}
                        ),
                        scenario.PROMPTS[current],
                        scenario.PROMPTS[target],
                        {},
                    )
                )
                current = target
                time.sleep(0.5)
        peer = report_relinks("   peer: the shim alone, runtime-config dir swapped in place", peer_runs, load, before)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"   ratio (p50 first new answer, end to end / shim alone): {e2e / peer:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--relinks", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    from lightkube import Client, KubeConfig

    work = Path(tempfile.mkdtemp(prefix="kubespin-e2e-bench-"))
    app_dir = scenario.prompt_app(work / "prompt-kv")
    dev = DevCluster(work / "devcluster").up()
    procs: list[ManagedProcess] = []
    redis = RedisServer().start()
    try:
        cluster = Cluster(dev.kubeconfig, local=True, work=work, node_name=NODE)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for plural in ("spinapps", "keyvaluestores", "storelinks"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.kubespin.dev", "--timeout=60s")
        kubeconfig = str(dev.kubeconfig)
        operator_argv = [*KUBESPIN, "operator", "--kubeconfig", kubeconfig]
        node_argv = [*KUBESPIN, "node", "--kubeconfig", kubeconfig, "--name", NODE, "--dir", str(work / "node")]
        procs.append(ManagedProcess("operator", operator_argv, work / "operator.log").start())
        procs.append(ManagedProcess("node", [*node_argv, "--no-llm-label"], work / "node.log").start())
        ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        wait_for(lambda: "True" in cluster.kubectl("get", "node", NODE, "-o", ready, check=False), 60, "node Ready")
        client = Client(config=KubeConfig.from_file(dev.kubeconfig), field_manager="kubespin-bench")
        print(
            f"machine: {os.cpu_count()} CPUs; app {app_dir} (py-kv, {(app_dir / 'app.wasm').stat().st_size >> 20} MB)"
        )
        bench_apply(cluster, client, str(app_dir), app_dir, work, args.runs)
        bench_relink(cluster, client, str(app_dir), app_dir, redis, work, args.relinks, args.clients)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.cleanup()
        dev.down()


if __name__ == "__main__":
    main()
