"""The API permissions `kubespin operator` uses, as (API group, resource, verbs).

The Helm chart's ClusterRole must grant these and nothing broader; a unit test compares the two, and an
integration test runs the operator under exactly these rules as a ServiceAccount.
"""

from __future__ import annotations

from kubespin_operator import constants as c

REQUIRED: list[tuple[str, str, tuple[str, ...]]] = [
    (c.GROUP, c.SPINAPP_PLURAL, ("get", "list", "watch")),
    (c.GROUP, c.LINK_PLURAL, ("get", "list", "watch")),
    (c.GROUP, c.STORE_PLURAL, ("get", "list", "watch", "patch")),  # patch: the finalizer
    (c.GROUP, f"{c.SPINAPP_PLURAL}/status", ("get", "patch")),
    (c.GROUP, f"{c.STORE_PLURAL}/status", ("get", "patch")),
    (c.GROUP, f"{c.LINK_PLURAL}/status", ("get", "patch")),
    (c.GROUP, f"{c.SPINAPP_PLURAL}/finalizers", ("update",)),  # blockOwnerDeletion owner references
    (c.GROUP, f"{c.STORE_PLURAL}/finalizers", ("update",)),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch")),
    ("", "services", ("get", "create", "patch")),
    ("", "persistentvolumeclaims", ("get", "list", "watch", "create", "patch")),
    ("", "secrets", ("get", "list", "watch", "create", "patch")),
    ("", "configmaps", ("get", "list", "watch")),
    ("", "events", ("create", "patch")),
    ("events.k8s.io", "events", ("create", "patch")),
    ("", "namespaces", ("list", "watch")),
    ("", "nodes", ("list",)),  # are there nodes able to infer locally (kubespin.dev/llm-local=true)?
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
]


def required_grants() -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for group, resource, verbs in REQUIRED for verb in verbs}


def grants_of(rules: list[dict]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples a ClusterRole's rules grant; wildcards are kept as '*'."""
    out: set[tuple[str, str, str]] = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb))
    return out
