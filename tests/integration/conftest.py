"""Shared fixtures for integration tests: one real dev cluster (etcd + kube-apiserver +
kube-controller-manager + kube-scheduler on 127.0.0.1) per test session.

Why session-scoped: starting the control plane takes seconds to tens of seconds on 2 cores; every
test that needs a Kubernetes API shares one and isolates itself with its own namespace.
Without the binaries the tests skip, unless KUBESPIN_REQUIRE_DEVCLUSTER is set (CI): then a
missing binary is a failure, so a broken build cannot turn the suite green by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubespin.devcluster import BUILD_SCRIPT, DevCluster, binaries_dir, missing_binaries

REQUIRE_ENV = "KUBESPIN_REQUIRE_DEVCLUSTER"


def require_devcluster_binaries() -> None:
    """Skip (or fail, under KUBESPIN_REQUIRE_DEVCLUSTER) when the control plane binaries are missing."""
    missing = missing_binaries()
    if not missing:
        return
    message = (
        f"dev cluster binaries missing in {binaries_dir()}: {', '.join(missing)}; "
        f"build them with `{BUILD_SCRIPT}` (or set KUBESPIN_K8S_BIN)"
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{message} ({REQUIRE_ENV} is set, so this is an error, not a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def devcluster_binaries() -> Path:
    """The directory with the control plane binaries; skips (or fails in CI) when they are missing."""
    require_devcluster_binaries()
    return binaries_dir()


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """A running dev cluster: `.kubeconfig` (admin kubeconfig path) and `.dir` (its state directory)."""
    require_devcluster_binaries()
    cluster = DevCluster(tmp_path_factory.mktemp("devcluster"))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
