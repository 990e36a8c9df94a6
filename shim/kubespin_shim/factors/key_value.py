"""The key-value factor: ``fermyon:spin/key-value@2.0.0`` and ``wasi:keyvalue/{store,atomics,batch}``.

Both interfaces open stores *by label* over the same backends. A component may open only the
labels in its ``key_value_stores`` (else ``access-denied``); ``default`` is always bound (a SQLite
file in the state directory); any other label needs ``[key_value_store.<label>]`` in the runtime
config (else ``no-such-store``). Unlike Spin, an unbound label does not stop the app from starting:
in Kubernetes the store link may arrive after the app, so the label is logged once and served as
soon as a runtime config binds it (see shared DESIGN.md).

Runtime-config changes go through :meth:`KeyValueFactor.stage`: the new bindings are validated
(unknown store types and bad URLs refuse the whole file) and committed together with the other
factors; each request keeps the bindings it started with (:mod:`kubespin_shim.kv.bindings`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, HostResource, Ok, Variant
from kubespin_shim.kv.base import BackendError, KeyValueBackend, KeyValueStore
from kubespin_shim.kv.bindings import Lease, LiveBindings
from kubespin_shim.kv.config import (
    key_value_specs,
    make_kv_backend,
    prepare_directories,
    resolve_state_dir,
)
from kubespin_shim.kv.warnings import LabelWarnings
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime_config import RuntimeConfig

log = logging.getLogger("kubespin.shim.kv")

KEY = "key-value"
#: Spin's DEFAULT_STORE_TABLE_CAPACITY: stores one instance may hold open at once.
STORE_TABLE_CAPACITY = 256

ACCESS_DENIED = Err(Variant("access-denied"))
NO_SUCH_STORE = Err(Variant("no-such-store"))
STORE_TABLE_FULL = Err(Variant("store-table-full"))


class KeyValueFactor:
    name = "key-value"
    interfaces: list[Interface] = []

    def __init__(self, app: AppManifest, *, state_dir: Path | None = None) -> None:
        self.app = app
        self._cli_state_dir = state_dir
        self.live: LiveBindings[KeyValueBackend] = LiveBindings("key-value store")
        self._allowed = {c.id: frozenset(c.key_value_stores) for c in app.components.values()}
        self._used = set().union(*self._allowed.values())
        self._no_stores: dict[str, KvRequest] = {}  # per component without labels: see prepare()
        self._warnings = LabelWarnings(log)

    @classmethod
    def from_app(cls, app: AppManifest, runtime_config: RuntimeConfig, *, state_dir: Path | None) -> KeyValueFactor:
        factor = cls(app, state_dir=state_dir)
        factor.stage(runtime_config)()
        return factor

    def stage(self, rc: RuntimeConfig) -> Callable[[], None]:
        """Validate ``[key_value_store.*]`` and prepare (lazy) backends; the commit switches to them."""
        state_dir = resolve_state_dir(rc, self._cli_state_dir, self.app.base_dir)
        specs = key_value_specs(rc, state_dir)
        prepare_directories(rc, "key_value_store", specs, self._used, "key-value store")
        return self.live.stage(
            rc, "key_value_store", specs, make_kv_backend, self._allowed, "no-such-store"
        )

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        allowed = self._allowed.get(component.id)
        if allowed is None:
            allowed = self._allowed[component.id] = frozenset(component.key_value_stores)
        if not allowed:
            # A component that lists no labels can open nothing: it needs no hold on the bindings, and
            # its requests share one view that refuses every open (this runs on every request).
            shared = self._no_stores.get(component.id)
            if shared is None:
                shared = self._no_stores[component.id] = KvRequest(self, component.id, allowed, None)
            ctx.extras[KEY] = shared
            return
        ctx.extras[KEY] = KvRequest(self, component.id, allowed, self.live.acquire())

    def warn_once(self, component: str, label: str, kind: str, message: str) -> None:
        self._warnings.warn_once(component, label, kind, message)

    def close(self) -> None:
        self.live.close()


class KvRequest:
    """One request's view: which labels it may open, and the bindings it started with."""

    __slots__ = ("allowed", "component_id", "factor", "lease", "open_stores")

    def __init__(
        self, factor: KeyValueFactor, component_id: str, allowed: frozenset[str], lease: Lease[Any] | None
    ) -> None:
        self.factor = factor
        self.component_id = component_id
        self.allowed = allowed
        self.lease = lease
        self.open_stores = 0

    def open(self, label: str) -> KeyValueStore | Err:
        if label not in self.allowed:
            self.factor.warn_once(
                self.component_id, label, "denied",
                f"component {self.component_id!r} tried to open key-value store {label!r}, which is not in its "
                f"key_value_stores {sorted(self.allowed)}: access-denied (add {label!r} to "
                f"component.{self.component_id}.key_value_stores in spin.toml to allow it)",
            )
            return ACCESS_DENIED
        assert self.lease is not None  # allowed is non-empty, so prepare() took a lease
        backend = self.lease.generation.backend(label)
        if backend is None:
            self.factor.warn_once(
                self.component_id, label, "unbound",
                f"component {self.component_id!r} opened key-value store {label!r}, which the runtime config "
                f"does not define: no-such-store (add [key_value_store.{label}] to the runtime config)",
            )
            return NO_SUCH_STORE
        if self.open_stores >= STORE_TABLE_CAPACITY:
            return STORE_TABLE_FULL
        self.open_stores += 1
        return backend.store(label)


def _other(e: BackendError) -> Err:
    return Err(Variant("other", str(e)))


class _StoreHandle(HostResource):
    """A guest's open store/bucket handle."""

    def __init__(self, store: KeyValueStore, label: str, request: KvRequest) -> None:
        self.store = store
        self.label = label
        self._request: KvRequest | None = request

    def close(self) -> None:
        if self._request is not None:
            self._request.open_stores -= 1
            self._request = None

    def get(self, key: str) -> Ok | Err:
        try:
            return Ok(self.store.get(key))
        except BackendError as e:
            return _other(e)

    def set(self, key: str, value: bytes) -> Ok | Err:
        try:
            self.store.set(key, value)
            return Ok()
        except BackendError as e:
            return _other(e)

    def delete(self, key: str) -> Ok | Err:
        try:
            self.store.delete(key)
            return Ok()
        except BackendError as e:
            return _other(e)

    def exists(self, key: str) -> Ok | Err:
        try:
            return Ok(self.store.exists(key))
        except BackendError as e:
            return _other(e)


class SpinStore(_StoreHandle):
    """``fermyon:spin/key-value`` ``store``."""

    def get_keys(self) -> Ok | Err:
        try:
            return Ok(self.store.keys())
        except BackendError as e:
            return _other(e)


class WasiBucket(_StoreHandle):
    """``wasi:keyvalue/store`` ``bucket``."""

    def list_keys(self, cursor: str | None) -> Ok | Err:
        """All keys in one page (``cursor`` none in the answer). A cursor, which we never hand out but a
        guest may invent, continues after that key in sorted order."""
        try:
            keys = self.store.keys()
        except BackendError as e:
            return _other(e)
        if cursor is not None:
            keys = [k for k in keys if k > cursor]
        return Ok({"keys": keys, "cursor": None})


class Cas(HostResource):
    """``wasi:keyvalue/atomics`` ``cas``: the value seen when the handle was made (or last ``current``)."""

    def __init__(self, bucket: WasiBucket, key: str, expected: bytes | None) -> None:
        self.bucket = bucket
        self.key = key
        self.expected = expected

    def current(self) -> Ok | Err:
        try:
            self.expected = self.bucket.store.get(self.key)
        except BackendError as e:
            return _other(e)
        return Ok(self.expected)


# ------------------------------------------------------------------------------------------
# fermyon:spin/key-value@2.0.0

spin_key_value = Interface("fermyon:spin/key-value")
spin_key_value.resource("store", SpinStore, ["get", "set", "delete", "exists", "get-keys"])


@spin_key_value.func("[static]store.open")
def spin_open(ctx: CallContext, label: str) -> Ok | Err:
    req: KvRequest = ctx.extras[KEY]
    store = req.open(label)
    if isinstance(store, Err):
        return store
    return Ok(SpinStore(store, label, req))


# ------------------------------------------------------------------------------------------
# wasi:keyvalue/store, atomics, batch @0.2.0-draft2

wasi_store = Interface("wasi:keyvalue/store")
wasi_store.resource("bucket", WasiBucket, ["get", "set", "delete", "exists", "list-keys"])


@wasi_store.func("open")
def wasi_open(ctx: CallContext, identifier: str) -> Ok | Err:
    req: KvRequest = ctx.extras[KEY]
    store = req.open(identifier)
    if isinstance(store, Err):
        return Err(Variant("other", "too many stores open")) if store is STORE_TABLE_FULL else store
    return Ok(WasiBucket(store, identifier, req))


wasi_atomics = Interface("wasi:keyvalue/atomics")
wasi_atomics.resource("bucket", WasiBucket)  # `use store.{bucket}`: the same host type
wasi_atomics.resource("cas", Cas, ["current"])


@wasi_atomics.func("increment")
def wasi_increment(ctx: CallContext, bucket: WasiBucket, key: str, delta: int) -> Ok | Err:
    try:
        return Ok(bucket.store.increment(key, delta))
    except BackendError as e:
        return _other(e)


@wasi_atomics.func("[static]cas.new")
def wasi_cas_new(ctx: CallContext, bucket: WasiBucket, key: str) -> Ok | Err:
    try:
        return Ok(Cas(bucket, key, bucket.store.get(key)))
    except BackendError as e:
        return _other(e)


@wasi_atomics.func("swap")
def wasi_swap(ctx: CallContext, cas: Cas, value: bytes) -> Ok | Err:
    """Swap if the value is unchanged; else ``cas-failed`` with a new handle at the latest value."""
    store = cas.bucket.store
    try:
        if store.compare_and_swap(cas.key, cas.expected, value):
            return Ok()
        latest = store.get(cas.key)
    except BackendError as e:
        return Err(Variant("store-error", Variant("other", str(e))))
    return Err(Variant("cas-failed", Cas(cas.bucket, cas.key, latest)))


wasi_batch = Interface("wasi:keyvalue/batch")
wasi_batch.resource("bucket", WasiBucket)


@wasi_batch.func("get-many")
def wasi_get_many(ctx: CallContext, bucket: WasiBucket, keys: list[str]) -> Ok | Err:
    try:
        return Ok(bucket.store.get_many(keys) if keys else [])
    except BackendError as e:
        return _other(e)


@wasi_batch.func("set-many")
def wasi_set_many(ctx: CallContext, bucket: WasiBucket, key_values: list[tuple[str, bytes]]) -> Ok | Err:
    try:
        if key_values:
            bucket.store.set_many(key_values)
        return Ok()
    except BackendError as e:
        return _other(e)


@wasi_batch.func("delete-many")
def wasi_delete_many(ctx: CallContext, bucket: WasiBucket, keys: list[str]) -> Ok | Err:
    try:
        if keys:
            bucket.store.delete_many(keys)
        return Ok()
    except BackendError as e:
        return _other(e)


KeyValueFactor.interfaces = [spin_key_value, wasi_store, wasi_atomics, wasi_batch]
