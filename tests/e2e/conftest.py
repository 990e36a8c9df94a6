"""Session fixtures for the e2e suite: a whole kubespin installation on this machine, or $KUBECONFIG's.

Local mode starts, as real processes: the dev cluster (etcd, kube-apiserver, controller-manager,
scheduler), the CRDs, `kubespin operator`, `kubespin node` and a redis-server. Without the cluster
binaries the suite skips (fails under KUBESPIN_REQUIRE_DEVCLUSTER). External mode is described in
tests/e2e/harness.py and docs/node.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import scenario
from tests.e2e.harness import KUBESPIN, REPO, Cluster, Installation, ManagedProcess, namespace, wait_for

EXTERNAL_ENV = "KUBESPIN_E2E_USE_KUBECONFIG"
NODE_NAME = "kubespin-e2e"


def external() -> bool:
    return bool(os.environ.get(EXTERNAL_ENV))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if external() and item.get_closest_marker("local_only"):
                item.add_marker(pytest.mark.skip(reason="needs the local processes (devcluster, node, redis)"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_only: needs local processes (skipped against $KUBECONFIG's cluster)")


@pytest.fixture(scope="session")
def prompt_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return scenario.prompt_app(tmp_path_factory.mktemp("apps") / "prompt-kv")
    except scenario.AppNotBuilt as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Installation]]:
    if external():
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            pytest.fail(f"{EXTERNAL_ENV} is set but KUBECONFIG is not", pytrace=False)
        cluster = Cluster(Path(kubeconfig), local=False, work=tmp_path_factory.mktemp("e2e"))
        yield cluster, Installation(None, None, None)
        cluster.close()
        return

    from kubespin.devcluster import DevCluster
    from tests.integration.conftest import require_devcluster_binaries
    from tests.redis_server import RedisServer, RedisServerError

    require_devcluster_binaries()
    work = tmp_path_factory.mktemp("e2e")
    dev = DevCluster(work / "devcluster").up()
    processes: list[ManagedProcess] = []
    redis = None
    try:
        cluster = Cluster(dev.kubeconfig, local=True, work=work, node_name=NODE_NAME)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for plural in ("spinapps", "keyvaluestores", "storelinks"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.kubespin.dev", "--timeout=60s")
        try:
            redis = RedisServer().start()
        except RedisServerError as err:
            pytest.fail(str(err), pytrace=False)
        operator = ManagedProcess(
            "operator", [*KUBESPIN, "operator", "--kubeconfig", str(dev.kubeconfig)], work / "operator.log"
        ).start()
        node = ManagedProcess(
            "node",
            [
                *KUBESPIN,
                "node",
                "--kubeconfig",
                str(dev.kubeconfig),
                "--name",
                NODE_NAME,
                "--dir",
                str(work / "node"),
                "--no-llm-label",
            ],
            work / "node.log",
        ).start()
        processes += [operator, node]
        wait_for(
            lambda: (
                "True"
                in cluster.kubectl(
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    check=False,
                )
            ),
            60,
            f"node {NODE_NAME} Ready\n{node.log_tail()}",
        )
        yield cluster, Installation(operator, node, redis)
    finally:
        for proc in reversed(processes):
            proc.stop()
        if redis is not None:
            redis.cleanup()
        dev.down()


@pytest.fixture(scope="session")
def cluster(installation: tuple[Cluster, Installation]) -> Cluster:
    return installation[0]


@pytest.fixture(scope="session")
def procs(installation: tuple[Cluster, Installation]) -> Installation:
    return installation[1]


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with namespace(cluster, f"e2e-{uuid.uuid4().hex[:8]}") as name:
        yield name


@pytest.fixture(scope="session")
def registry_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real OCI registry on 127.0.0.1 (go-containerregistry's, built by scripts/build-registry)."""
    if external():
        yield None
        return
    from tests.registry_server import start_registry

    with start_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server.address


@pytest.fixture(scope="session")
def app_image(prompt_app_dir: Path, registry_address: str | None, installation: tuple[Cluster, Installation]) -> str:
    """spec.image of the prompt app: pushed to the local registry with `kubespin registry push` and pulled
    by the shim the node runs (by digest); in external mode, KUBESPIN_E2E_APP_IMAGE."""
    if external():
        image = os.environ.get("KUBESPIN_E2E_APP_IMAGE")
        if not image:
            pytest.skip("external mode needs KUBESPIN_E2E_APP_IMAGE (the prompt app pushed to a registry)")
        return image
    cluster = installation[0]
    pushed = cluster.cli("registry", "push", str(prompt_app_dir), f"{registry_address}/e2e/prompt-kv:v1", timeout=120)
    reference = pushed.stdout.strip().splitlines()[-1]
    assert "@sha256:" in reference, pushed.stdout
    return reference


@pytest.fixture(scope="session")
def redis_base(procs: Installation) -> str:
    """``redis://host:port`` of the Redis behind the test stores (the pods and this process both use it)."""
    if procs.redis is not None:
        return str(procs.redis.url(0)).rsplit("/", 1)[0]  # type: ignore[attr-defined]
    url = os.environ.get("KUBESPIN_E2E_REDIS_URL")
    if not url:
        pytest.skip(
            "external mode needs KUBESPIN_E2E_REDIS_URL: a Redis reachable from the pods and from this machine, "
            "without a /db suffix"
        )
    return url.rstrip("/")


_next_db = iter(range(1, 10_000))


@pytest.fixture
def prompt_stores(cluster: Cluster, ns: str, redis_base: str) -> dict[str, str]:
    """Stores case-a and case-b (created and seeded with the CLI); returns store -> Redis URL."""
    urls = {}
    for store in scenario.STORES:
        urls[store] = f"{redis_base}/{1 + next(_next_db) % 15}"
        cluster.cli("kv", "create", store, "--redis-url", urls[store], "-n", ns)
        cluster.cli("kv", "set", "--store", store, f"{scenario.KEY}={scenario.PROMPTS[store]}", "-n", ns)
    return urls
