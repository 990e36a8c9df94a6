"""`kv get` / `kv set`: store data, read and written with the caller's own Kubernetes permissions.

There is no kubespin data endpoint. For a Redis store the CLI needs the store's URL, and obtains it
the way the operator does: from ``spec.redis.urlFrom`` (a Secret the caller must be allowed to
``get``) or from ``spec.redis.url`` (readable by anyone who can ``get`` the KeyValueStore; this is
why `kv create --redis-url` puts the URL in a Secret). Then it talks to Redis directly, as the app
does: Spin's Redis key-value store keeps each key under its own name in the URL's database.

A ``spin`` store is SQLite on a PersistentVolumeClaim that only the app's pod mounts. Reaching it
would need a process inside that pod (``kubectl exec``, RBAC ``pods/exec``); the CLI does not do
that and says so rather than pretending.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lightkube.resources.core_v1 import Secret

from kubespin.cloud_cli.kube import CliError, KeyValueStore, Session


@dataclass(frozen=True)
class RedisTarget:
    store: str
    url: str

    @property
    def where(self) -> str:
        """host:port/db, never the password."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def redis_target(session: Session, store_name: str) -> RedisTarget:
    store = session.get(
        KeyValueStore,
        store_name,
        f"KeyValueStore {store_name}",
        hint=f"create it with `kubespin kv create {store_name} --redis-url URL`; `kubespin kv list` shows the stores",
    )
    return redis_target_of(session, store)


def redis_target_of(session: Session, store: Mapping[str, Any]) -> RedisTarget:
    name = store["metadata"]["name"]
    spec = store.get("spec") or {}
    if "spin" in spec:
        raise CliError(
            f"KeyValueStore {name} is a `spin` store: SQLite on PersistentVolumeClaim kvstore-{name}, mounted only by "
            "its app's pod, so this CLI cannot read or write it. Use the app itself, or `kubectl exec` into its pod "
            "(needs RBAC pods/exec), or use a Redis store (`kubespin kv create NAME --redis-url URL`) for CLI access."
        )
    redis = spec.get("redis") or {}
    if redis.get("url"):
        return RedisTarget(name, str(redis["url"]))
    ref = (redis.get("urlFrom") or {}).get("secretKeyRef") or {}
    if not ref.get("name"):
        raise CliError(f"KeyValueStore {name} has no Redis URL (spec.redis.url or spec.redis.urlFrom); fix the store")
    secret = session.get(
        Secret,
        ref["name"],
        f"Secret {ref['name']} (the Redis URL of store {name})",
        hint="create it, or fix spec.redis.urlFrom of the store",
    )
    data = secret.get("data") or {}
    if ref.get("key") not in data:
        raise CliError(f"Secret {ref['name']} has no key {ref.get('key')!r} (spec.redis.urlFrom of store {name})")
    return RedisTarget(name, base64.b64decode(data[ref["key"]]).decode().strip())


def _client(target: RedisTarget) -> Any:
    import redis

    return redis.Redis.from_url(target.url, socket_timeout=5, socket_connect_timeout=5)


def _unreachable(target: RedisTarget, err: Exception) -> CliError:
    return CliError(
        f"cannot reach the Redis of store {target.store} at {target.where} from this machine ({err}); if it is "
        "only reachable inside the cluster, forward it (kubectl port-forward) and use a store URL that works here"
    )


def kv_set(target: RedisTarget, pairs: Mapping[str, str]) -> None:
    import redis

    try:
        _client(target).mset(dict(pairs))
    except redis.RedisError as err:
        raise _unreachable(target, err) from err


def kv_get(target: RedisTarget, key: str) -> bytes | None:
    import redis

    try:
        value = _client(target).get(key)
    except redis.RedisError as err:
        raise _unreachable(target, err) from err
    return None if value is None else bytes(value)
