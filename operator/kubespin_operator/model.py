"""Plain values the renderers work on: what a store is, what a link says, what went wrong.

They are built from the raw API objects by the `from_body` constructors and carry no client, so the
render and linking functions stay pure and testable without a cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kubespin_operator import constants as c

Body = Mapping[str, Any]
#: Decoded data of the Secrets (or ConfigMaps) an app or store references: name → key → value.
ObjectData = Mapping[str, Mapping[str, str]]

REDIS_SCHEMES = ("redis", "rediss", "unix")


class InvalidSpec(ValueError):
    """Input a person has to fix. The message says what is wrong and how to fix it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Problem:
    """A reason to report Degraded. `blocking` problems stop the operator from applying the app."""

    reason: str
    message: str
    blocking: bool = False


@dataclass(frozen=True)
class RedisBackend:
    url: str
    kind: str = "redis"


@dataclass(frozen=True)
class SpinBackend:
    """SQLite on a PersistentVolumeClaim; the claim is mounted at mount_dir in the app's pods."""

    claim_name: str
    mount_dir: str
    access_mode: str
    kind: str = "spin"

    @property
    def db_path(self) -> str:
        return f"{self.mount_dir}/kv.db"


Backend = RedisBackend | SpinBackend


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class StoreView:
    """A KeyValueStore as the renderers need it. The Redis URL, when it comes from a Secret, is not
    known here; `resolve_backend` looks it up."""

    name: str
    namespace: str
    uid: str
    deleting: bool
    deletion_policy: str
    redis_url: str | None = None
    redis_url_ref: SecretKeyRef | None = None
    spin_size: str | None = None
    spin_storage_class: str | None = None
    spin_access_mode: str = "ReadWriteOnce"

    @property
    def backend_kind(self) -> str:
        return "spin" if self.spin_size is not None else "redis"

    @classmethod
    def from_body(cls, body: Body) -> StoreView:
        meta = body.get("metadata", {})
        spec = body.get("spec") or {}
        redis = spec.get("redis")
        spin = spec.get("spin")
        ref = None
        url = None
        if redis is not None:
            url = redis.get("url")
            sel = (redis.get("urlFrom") or {}).get("secretKeyRef")
            if sel:
                ref = SecretKeyRef(sel.get("name", ""), sel.get("key", ""))
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            deleting=bool(meta.get("deletionTimestamp")),
            deletion_policy=spec.get("deletionPolicy", "Retain"),
            redis_url=url,
            redis_url_ref=ref,
            spin_size=str(spin["size"]) if spin and "size" in spin else None,
            spin_storage_class=(spin or {}).get("storageClassName"),
            spin_access_mode=(spin or {}).get("accessMode", "ReadWriteOnce"),
        )

    def referenced_secrets(self) -> set[str]:
        return {self.redis_url_ref.name} if self.redis_url_ref else set()


def validate_redis_url(url: str, store: str) -> None:
    """Reject URLs that Spin's redis store cannot open. The URL is never echoed: it may hold a password."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in REDIS_SCHEMES or not port_ok:
        raise InvalidSpec(
            "InvalidRedisURL",
            f"KeyValueStore {store}: the Redis URL is not a redis://, rediss:// or unix:// URL with a valid "
            "port (the URL is not shown because it may contain a password)",
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise InvalidSpec("InvalidRedisURL", f"KeyValueStore {store}: the Redis URL has no host")


def resolve_backend(store: StoreView, secrets: ObjectData) -> Backend:
    """The concrete backend of a store; raises InvalidSpec when it cannot be used as written."""
    if store.spin_size is not None:
        return SpinBackend(
            claim_name=c.store_pvc_name(store.name),
            mount_dir=f"{c.SPIN_STORE_ROOT}/{store.name}",
            access_mode=store.spin_access_mode,
        )
    if store.redis_url_ref is not None:
        ref = store.redis_url_ref
        data = secrets.get(ref.name)
        if data is None:
            raise InvalidSpec(
                "SecretNotFound",
                f"KeyValueStore {store.name}: Secret {ref.name} (spec.redis.urlFrom) does not exist; create it",
            )
        if ref.key not in data:
            raise InvalidSpec(
                "SecretKeyNotFound",
                f"KeyValueStore {store.name}: Secret {ref.name} has no key {ref.key!r} (spec.redis.urlFrom)",
            )
        url = data[ref.key].strip()
    elif store.redis_url:
        url = store.redis_url
    else:
        raise InvalidSpec("NoBackend", f"KeyValueStore {store.name}: set spec.redis.url, urlFrom or spec.spin")
    validate_redis_url(url, store.name)
    return RedisBackend(url=url)


@dataclass(frozen=True)
class LinkView:
    name: str
    namespace: str
    uid: str
    app: str
    label: str
    store: str
    created: str  # RFC 3339 creationTimestamp; sorts chronologically as a string
    generation: int = 0

    @classmethod
    def from_body(cls, body: Body) -> LinkView:
        meta = body.get("metadata", {})
        spec = body.get("spec") or {}
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            app=spec.get("app", ""),
            label=spec.get("label", ""),
            store=spec.get("store", ""),
            created=meta.get("creationTimestamp", ""),
            generation=int(meta.get("generation", 0) or 0),
        )

    @property
    def order_key(self) -> tuple[str, str]:
        """Oldest link wins a (app, label) conflict; the name breaks ties deterministically."""
        return (self.created, self.name)


@dataclass(frozen=True)
class Binding:
    """A key-value label bound to a store, through a link (or inline runtime config when link is '')."""

    label: str
    store: str
    link: str
    backend: Backend


@dataclass
class RenderResult:
    """What the renderers produced for one app, and what is wrong with its input."""

    deployment: dict[str, Any] | None
    service: dict[str, Any] | None
    secret: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    local_inference: Any = None  # a local_inference.LocalInferenceNeed when it was decided

    @property
    def blocked(self) -> bool:
        return any(p.blocking for p in self.problems)


def decode_secret_data(secret: Body) -> dict[str, str]:
    """Secret `data` (base64) and `stringData` as text; undecodable values are skipped."""
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    for key, value in (secret.get("stringData") or {}).items():
        out[key] = value
    return out
