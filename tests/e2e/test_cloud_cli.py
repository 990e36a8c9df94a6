"""The links-and-labels CLI under RBAC: a user sees and changes only what Kubernetes lets them, and store
data follows the store's Secret (no kubespin endpoint that would bypass RBAC)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import scenario
from tests.e2e.harness import KUBESPIN, Cluster


def role(ns: str, secret_names: list[str]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["kubespin.dev"],
            "resources": ["spinapps", "keyvaluestores", "storelinks"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    ]
    if secret_names:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": secret_names})
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "kv-viewer", "namespace": ns},
        "rules": rules,
    }


def viewer_kubeconfig(cluster: Cluster, ns: str, path: Path) -> Path:
    """A kubeconfig for ServiceAccount `viewer` (a bearer token, as a person's credentials would be)."""
    cluster.kubectl("create", "serviceaccount", "viewer", "-n", ns)
    cluster.kubectl("create", "rolebinding", "viewer", "--role=kv-viewer", f"--serviceaccount={ns}:viewer", "-n", ns)
    token = cluster.kubectl("create", "token", "viewer", "-n", ns, "--duration=10m").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [{"name": "viewer", "context": {"cluster": server["name"], "user": "viewer", "namespace": ns}}],
        "current-context": "viewer",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def as_viewer(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBESPIN, *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_store_data_needs_the_right_to_read_the_stores_secret(
    cluster: Cluster, ns: str, prompt_stores: dict[str, str], tmp_path: Path
) -> None:
    cluster.apply(ns, role(ns, []))
    kubeconfig = viewer_kubeconfig(cluster, ns, tmp_path / "viewer.kubeconfig")

    listing = as_viewer(kubeconfig, "kv", "list")
    assert listing.returncode == 0, listing.stderr
    assert "case-a" in listing.stdout and "case-b" in listing.stdout

    denied = as_viewer(kubeconfig, "kv", "get", "--store", "case-a", scenario.KEY)
    assert denied.returncode != 0
    assert "Secret kvstore-case-a-redis" in denied.stderr and "not allowed" in denied.stderr, denied.stderr
    assert scenario.PROMPTS["case-a"] not in denied.stdout + denied.stderr
    assert "redis://" not in denied.stderr, "an error must not reveal the URL"

    write = as_viewer(kubeconfig, "kv", "set", "--store", "case-a", f"{scenario.KEY}=hijacked")
    assert write.returncode != 0 and "not allowed" in write.stderr

    link = as_viewer(kubeconfig, "link", "key-value", "x", "--app", "nope", "--store", "case-a")
    assert link.returncode != 0 and "SpinApp nope does not exist" in link.stderr

    # Granting `get` on exactly one store's Secret opens exactly that store's data.
    cluster.apply(ns, role(ns, ["kvstore-case-a-redis"]))
    allowed = as_viewer(kubeconfig, "kv", "get", "--store", "case-a", scenario.KEY)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == scenario.PROMPTS["case-a"]
    still_denied = as_viewer(kubeconfig, "kv", "get", "--store", "case-b", scenario.KEY)
    assert still_denied.returncode != 0 and "kvstore-case-b-redis" in still_denied.stderr
    assert cluster.cli("kv", "get", "--store", "case-a", scenario.KEY, "-n", ns).stdout == scenario.PROMPTS["case-a"]


def test_cli_errors_name_the_object_and_the_next_step(cluster: Cluster, ns: str, prompt_stores: dict[str, str]) -> None:
    missing_store = cluster.cli(
        "link", "key-value", "promptstore", "--app", "chat", "--store", "case-z", "-n", ns, check=False
    )
    assert missing_store.returncode != 0
    assert "KeyValueStore case-z does not exist" in missing_store.stderr
    assert "kubespin kv create case-z" in missing_store.stderr
    no_link = cluster.cli("unlink", "key-value", "promptstore", "--app", "chat", "-n", ns, check=False)
    assert no_link.returncode != 0 and "has no link for key-value label promptstore" in no_link.stderr
    bad_url = cluster.cli("kv", "create", "x", "--redis-url", "http://example.test", "-n", ns, check=False)
    assert bad_url.returncode != 0 and "redis://" in bad_url.stderr
    absent = cluster.cli("kv", "get", "--store", "case-a", "no-such-key", "-n", ns, check=False)
    assert absent.returncode != 0 and "has no key 'no-such-key'" in absent.stderr
    spin = cluster.cli("kv", "create", "local-db", "-n", ns)
    assert "spin" in spin.stdout
    refused = cluster.cli("kv", "get", "--store", "local-db", "k", "-n", ns, check=False)
    assert refused.returncode != 0 and "`spin` store" in refused.stderr and "kubectl exec" in refused.stderr
    # The plugin entry point is the same CLI.
    plugin = subprocess.run(
        [str(Path(KUBESPIN[0]).parent / "kubectl-spin"), "kv", "list", "-n", ns],
        capture_output=True,
        text=True,
        timeout=60,
        env=cluster.env(),
    )
    assert plugin.returncode == 0 and "local-db" in plugin.stdout, plugin.stderr
