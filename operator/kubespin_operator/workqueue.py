"""A keyed, coalescing work queue: the operator's reconcile loop.

kopf calls handlers per object, but a change to one object (a StoreLink, a store, a Secret) must
re-render other objects (the apps it affects). kopf has no way to trigger another object's handlers,
so the event handlers only enqueue keys here and a few workers reconcile them, like controller-runtime's
workqueue: a key queued many times before a worker takes it is reconciled once; a key that changes while
it is being reconciled is reconciled again afterwards; failures are retried with capped exponential
backoff. Written here because no maintained asyncio library offers these semantics for kopf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

#: The reconcile function: returns seconds after which to reconcile again (periodic checks) or None.
Reconcile = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(
        self,
        reconcile: Reconcile,
        *,
        workers: int = 8,
        base_backoff: float = 0.1,
        max_backoff: float = 30.0,
        expected_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        #: Errors logged in one line (e.g. API errors); anything else gets a traceback on its first failure.
        self._expected_errors = expected_errors
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._pending: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._queued_at: dict[Hashable, float] = {}
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0

    def add(self, key: Hashable) -> None:
        """Reconcile `key` soon. Cheap and idempotent; safe to call from any handler."""
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queued_at[key] = time.monotonic()
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Reconcile `key` after `delay` seconds (the earliest of several requests wins)."""
        due = time.monotonic() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= due:
                return
            current[1].cancel()
        handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (due, handle)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def idle(self) -> bool:
        return not self._pending and not self._running

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"kubespin-worker-{i}") for i in range(self._workers)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._running.add(key)
            started = time.monotonic()
            waited = started - self._queued_at.pop(key, started)
            try:
                again = await self._reconcile(key)
                log.debug(
                    "reconciled %s in %.1f ms after %.1f ms in the queue",
                    key,
                    (time.monotonic() - started) * 1000,
                    waited * 1000,
                )
            except asyncio.CancelledError:
                raise
            except Exception as err:  # every failure is retried; the loop must never die
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._max_backoff, self._base_backoff * 2 ** (failures - 1))
                log.warning(
                    "reconcile of %s failed (attempt %d, retry in %.1fs): %s: %s",
                    key,
                    failures,
                    delay,
                    type(err).__name__,
                    err,
                    exc_info=failures == 1 and not isinstance(err, self._expected_errors),
                )
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                if again is not None:
                    self.add_after(key, again)
            finally:
                self.processed += 1
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
