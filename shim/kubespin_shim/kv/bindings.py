"""Label → backend bindings that can be replaced while requests are using them.

When the runtime config changes, new requests must see the new bindings at once, requests
already running must finish on the backends they started with, and a backend must be closed
once nothing can use it any more. That is a generation scheme with reference counts:

- each applied runtime config is a :class:`Generation` (label → (spec, backend));
- a request takes a :class:`Lease` on the current generation in ``prepare`` and keeps it for the
  life of its context;
- :meth:`LiveBindings.replace` makes a new generation current; the old one is *retired* when its
  last lease is released, and each backend is closed when no live generation refers to it.

A backend whose spec did not change is carried into the new generation as the same object, so a
relink of one label does not reconnect the others.

Leases are released when the request's context is garbage-collected (``__del__``): the core has no
end-of-request hook for factors, and CPython frees the context when ``handle`` returns (reference
counting). If a reference cycle delays that, the old backend simply stays open a little longer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kubespin_shim.kv.base import BackendError
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError

log = logging.getLogger("kubespin.shim.kv")


class Closeable(Protocol):
    summary: str

    def close(self) -> None: ...


B = TypeVar("B", bound=Closeable)


@dataclass(frozen=True)
class Binding(Generic[B]):
    spec: Hashable
    backend: B


class Generation(Generic[B]):
    __slots__ = ("bindings", "current", "leases", "number")

    def __init__(self, number: int, bindings: Mapping[str, Binding[B]]) -> None:
        self.number = number
        self.bindings = dict(bindings)
        self.leases = 0
        self.current = True

    def backend(self, label: str) -> B | None:
        b = self.bindings.get(label)
        return None if b is None else b.backend


class Lease(Generic[B]):
    """One request's hold on a generation; released once, explicitly or when collected."""

    __slots__ = ("_done", "_owner", "generation")

    def __init__(self, owner: LiveBindings[B], generation: Generation[B]) -> None:
        self._owner = owner
        self.generation = generation
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._owner._release(self.generation)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


class LiveBindings(Generic[B]):
    """The current generation of bindings for one capability (``what``: "key-value store", ...)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lock = threading.RLock()  # __del__ of a lease may run inside a locked section's GC
        self._number = 0
        self._current: Generation[B] = Generation(0, {})
        self._users: dict[int, tuple[B, int]] = {}  # id(backend) -> (backend, live generations using it)

    # ---- staging helpers

    def reuse_or_make(self, spec: Hashable, make: Callable[[Hashable], B]) -> B:
        """The current generation's backend for an identical spec, else a new (lazy) one."""
        with self._lock:
            for b in self._current.bindings.values():
                if b.spec == spec:
                    return b.backend
        return make(spec)

    def stage(
        self,
        rc: RuntimeConfig,
        section: str,
        specs: Mapping[str, Hashable],
        make: Callable[[Any], B],
        allowed: Mapping[str, frozenset[str]],
        missing_error: str,
    ) -> Callable[[], None]:
        """Bind every label of ``[section.<label>]`` to a backend; the returned commit switches to them.

        Labels with an identical spec share one backend, and a spec unchanged from the current
        generation keeps its backend (no reconnect on an unrelated relink). A backend that cannot
        be made is a RuntimeConfigError naming ``section.label``: the caller's stage fails whole.
        """
        made: dict[Hashable, B] = {}
        bindings: dict[str, Binding[B]] = {}
        for label, spec in specs.items():
            if spec not in made:
                try:
                    made[spec] = self.reuse_or_make(spec, make)
                except BackendError as e:
                    raise RuntimeConfigError(rc.path, f"{section}.{label}", str(e)) from None
            bindings[label] = Binding(spec, made[spec])

        def commit() -> None:
            before = self.current.bindings
            self.replace(bindings)
            self._log_changes(before, bindings, section, allowed, missing_error)

        return commit

    def _log_changes(
        self,
        before: Mapping[str, Binding[B]],
        after: Mapping[str, Binding[B]],
        section: str,
        allowed: Mapping[str, frozenset[str]],
        missing_error: str,
    ) -> None:
        for label, b in sorted(after.items()):
            old = before.get(label)
            if old is None:
                log.info("%s %r: %s", self.what, label, b.backend.summary)
            elif old.spec != b.spec:
                log.info("%s %r relinked: %s -> %s", self.what, label, old.backend.summary, b.backend.summary)
        for label in sorted(set(before) - set(after)):
            log.warning("%s %r is no longer bound by the runtime config", self.what, label)
        for component, labels in sorted(allowed.items()):
            for label in sorted(labels - set(after)):
                log.warning(
                    "component %r lists %s %r, which the runtime config does not define: it gets %s until a "
                    "[%s.%s] table is added",
                    component, self.what, label, missing_error, section, label,
                )

    @property
    def current(self) -> Generation[B]:
        with self._lock:
            return self._current

    # ---- switching

    def replace(self, bindings: Mapping[str, Binding[B]]) -> None:
        """Make ``bindings`` current. Old backends close after the last request using them."""
        with self._lock:
            self._number += 1
            new = Generation(self._number, bindings)
            for backend in _unique(new):
                ref = self._users.get(id(backend))
                self._users[id(backend)] = (backend, (ref[1] if ref else 0) + 1)
            old, self._current = self._current, new
            old.current = False
            to_close = self._retire(old) if old.leases == 0 else []
        self._close(to_close)

    def acquire(self) -> Lease[B]:
        with self._lock:
            gen = self._current
            gen.leases += 1
        return Lease(self, gen)

    def _release(self, gen: Generation[B]) -> None:
        with self._lock:
            gen.leases -= 1
            to_close = self._retire(gen) if gen.leases == 0 and not gen.current else []
        self._close(to_close)

    def _retire(self, gen: Generation[B]) -> list[B]:
        closing = []
        for backend in _unique(gen):
            obj, n = self._users[id(backend)]
            if n <= 1:
                del self._users[id(backend)]
                closing.append(obj)
            else:
                self._users[id(backend)] = (obj, n - 1)
        gen.bindings = {}
        return closing

    def _close(self, backends: list[B]) -> None:
        for backend in backends:
            try:
                backend.close()
                log.info("%s backend closed (no longer bound, last request finished): %s", self.what, backend.summary)
            except Exception:
                log.exception("%s backend %s failed to close", self.what, backend.summary)

    def close(self) -> None:
        """Retire everything (shutdown, tests)."""
        self.replace({})

    def open_backends(self) -> list[Any]:
        """Backends not yet closed (tests and diagnostics)."""
        with self._lock:
            return [b for b, _ in self._users.values()]


def _unique(gen: Generation[B]) -> list[B]:
    seen: dict[int, B] = {}
    for b in gen.bindings.values():
        seen.setdefault(id(b.backend), b.backend)
    return list(seen.values())
