"""Per-component runtimes: compile once at start, instantiate per request, call the HTTP handler.

A fresh store and instance per request, as Spin does: guests leave handles undropped and the JS
SDK refuses reuse, and it is what keeps one request's state from ever reaching another's. The
request's host state lives in a :class:`CallContext` (resource table, factor state) that dies
with the request.
"""

from __future__ import annotations

import ctypes
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import wasmtime

from kubespin_shim.engine import WasmEngine
from kubespin_shim.errors import ShimError
from kubespin_shim.host import capi, native
from kubespin_shim.host.binding import CallContext, Interface, build_linker, set_current_context
from kubespin_shim.host.values import own_lower, own_plan
from kubespin_shim.http.types import IncomingRequest, ResponseOutparam
from kubespin_shim.manifest import ComponentSpec

log = logging.getLogger("kubespin.shim.runtime")

HANDLER_PREFIX = "wasi:http/incoming-handler@0.2"
P3_HANDLER_PREFIX = "wasi:http/handler@0.3"


class Factor(Protocol):
    """A capability: its WIT interfaces, and the per-request state it puts into the context."""

    name: str
    interfaces: Sequence[Interface]

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None: ...


class UnsupportedComponent(ShimError):
    pass


@dataclass
class Outcome:
    trapped: bool
    message: str = ""
    deadline_exceeded: bool = False
    pool_exhausted: bool = False  # no instance slot free (pooling allocator): the request never ran
    instantiate_s: float = 0.0
    handle_s: float = 0.0


class ComponentRuntime:
    def __init__(
        self,
        spec: ComponentSpec,
        engine: WasmEngine,
        interfaces: dict[str, Interface],
        factors: Sequence[Factor],
        request_timeout: float,
        max_memory: int | None,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.factors = factors
        self.deadline_ticks = engine.ticks_for(request_timeout)
        self.request_timeout = request_timeout
        self.max_memory = max_memory
        t0 = time.perf_counter()
        self.component, self.was_cached = engine.component(spec.source)
        self.load_s = time.perf_counter() - t0
        exports = self.component.type.exports(engine.engine)
        handler = next((n for n in exports if n.startswith(HANDLER_PREFIX)), None)
        if handler is None:
            p3 = next((n for n in exports if n.startswith(P3_HANDLER_PREFIX)), None)
            if p3 is not None:
                raise UnsupportedComponent(
                    f"component {spec.id!r} ({spec.source}) targets WASIp3: it exports {p3!r}. "
                    "kubespin does not support WASIp3 components yet; build it with a WASIp2 SDK "
                    "(for Python: spin-sdk 3.x with componentize-py 0.17)."
                )
            raise UnsupportedComponent(
                f"component {spec.id!r} ({spec.source}) does not export {HANDLER_PREFIX}.x/incoming-handler; "
                f"its exports are {sorted(exports)}. Only HTTP components can be served."
            )
        self.handler_name = handler
        iface_idx = self.component.get_export_index(handler)
        assert iface_idx is not None
        func_idx = self.component.get_export_index("handle", iface_idx)
        if func_idx is None:
            raise UnsupportedComponent(f"component {spec.id!r}: {handler} has no `handle` function")
        self._handle_idx = func_idx
        self.linker = build_linker(engine.engine, self.component, interfaces)
        # Raw addresses for the per-request path; the objects above own them and live as long as self.
        self._engine_ptr = capi.address(engine.engine.ptr())
        self._linker_ptr = capi.address(self.linker.ptr())
        self._component_ptr = capi.address(self.component.ptr())
        self._handle_idx_ptr = capi.address(func_idx.ptr())
        self._lower_own = own_lower()  # C or Python, chosen with the linker's host-call path
        self._run_guest = native.runner()  # the same steps as _handle_ctypes in one C call, or None
        self._own_plan = own_plan() if self._run_guest is not None else None

    def new_context(self) -> CallContext:
        ctx = CallContext(self.spec.id)
        for f in self.factors:
            f.prepare(ctx, self.spec)
        return ctx

    def handle(self, request: IncomingRequest, outparam: ResponseOutparam) -> Outcome:
        """Run one request in a fresh store and instance.

        The store, instance and call go through wasmtime's C API directly: the same calls
        wasmtime-py's ``Store``/``Linker.instantiate``/``Func`` make, minus a dozen wrapper objects
        and finalizers per request; in one call into the C extension (``host/_native.c``'s
        ``run_guest``) when it is built, otherwise through ctypes (``host/capi.py``).
        """
        run_guest = self._run_guest
        if run_guest is None:
            return self._handle_ctypes(request, outparam)
        ctx = self.new_context()
        outcome = Outcome(trapped=False)
        try:
            stage, err, outcome.instantiate_s, outcome.handle_s = run_guest(
                self._engine_ptr, self._linker_ptr, self._component_ptr, self._handle_idx_ptr,
                self.deadline_ticks, -1 if self.max_memory is None else self.max_memory,
                request, outparam, ctx, self._own_plan,
            )
            if stage == _RUN_NO_FUNC:
                raise UnsupportedComponent(f"component {self.spec.id!r}: {self.handler_name}.handle is not a function")
            if err:
                capi.raise_error(err)
        except wasmtime.WasmtimeError as e:
            self._trapped(outcome, e, ctx, instantiated=stage != _RUN_INSTANTIATE_FAILED)
        finally:
            stdio = ctx.extras.get("stdio")
            if stdio is not None:
                stdio.flush()
        return outcome

    def _handle_ctypes(self, request: IncomingRequest, outparam: ResponseOutparam) -> Outcome:
        """:meth:`handle` without the C extension: each C call through ctypes."""
        ctx = self.new_context()
        store = capi.store_new(self._engine_ptr, None, None)
        frame = capi.CallFrame()
        base = ctypes.addressof(frame)
        outcome = Outcome(trapped=False)
        t1: float | None = None
        try:
            cx = capi.store_context(store)
            capi.context_set_epoch_deadline(cx, self.deadline_ticks)
            if self.max_memory is not None:
                capi.store_limiter(store, self.max_memory, -1, -1, -1, -1)
            ctx.store_ptr = cx
            set_current_context(ctx)
            t0 = time.perf_counter()
            instance = base + capi.INSTANCE_OFFSET
            _check(capi.linker_instantiate(self._linker_ptr, cx, self._component_ptr, instance))
            t1 = time.perf_counter()
            outcome.instantiate_s = t1 - t0
            func = base + capi.FUNC_OFFSET
            if not capi.instance_get_func(instance, cx, self._handle_idx_ptr, func):
                raise UnsupportedComponent(f"component {self.spec.id!r}: {self.handler_name}.handle is not a function")
            args = base + capi.ARGS_OFFSET
            self._lower_own(request, args, ctx)
            self._lower_own(outparam, args + capi.VAL_SIZE, ctx)
            try:
                _check(capi.func_call(func, cx, args, 2, None, 0))
            finally:  # the call copies its arguments; the two resource_any boxes stay ours to free
                capi.val_drop(args)
                capi.val_drop(args + capi.VAL_SIZE)
            _check(capi.func_post_return(func, cx))
            outcome.handle_s = time.perf_counter() - t1
        except wasmtime.WasmtimeError as e:
            self._trapped(outcome, e, ctx, instantiated=t1 is not None)
        finally:
            stdio = ctx.extras.get("stdio")
            if stdio is not None:
                stdio.flush()
            set_current_context(None)
            capi.store_delete(store)
        return outcome

    def _trapped(self, outcome: Outcome, e: wasmtime.WasmtimeError, ctx: CallContext, *, instantiated: bool) -> None:
        # Before instantiation completed, the guest never ran.
        outcome.pool_exhausted = not instantiated and _POOL_EXHAUSTED.search(str(e)) is not None
        outcome.trapped = True
        outcome.message = _describe_trap(e, ctx)
        outcome.deadline_exceeded = "interrupt" in str(e)
        if outcome.deadline_exceeded:
            outcome.message = (
                f"request exceeded the {self.request_timeout:g}s deadline and was stopped "
                "(set KUBESPIN_REQUEST_TIMEOUT to change it)"
            )


# run_guest's stages (host/_native.c): where it stopped
_RUN_INSTANTIATE_FAILED, _RUN_NO_FUNC, _RUN_CALL_FAILED, _RUN_OK = range(4)

# wasmtime's pooling allocator, when every slot of a kind is taken: "maximum concurrent limit of N for
# component instances reached" (memories, tables, core instances alike).
_POOL_EXHAUSTED = re.compile(r"maximum concurrent (?:\w+ )*limit of \d+")


def _check(err: int | None) -> None:
    if err:
        capi.raise_error(err)


def _describe_trap(e: wasmtime.WasmtimeError, ctx: CallContext) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else "trap"
    if ctx.host_error is not None:
        return f"{first} (host: {ctx.host_error})"
    # Keep the wasm backtrace's first frames: they name the guest function that trapped.
    lines = [ln.strip() for ln in text.splitlines()[1:6] if ln.strip()]
    return first + (" | " + " | ".join(lines) if lines else "")


