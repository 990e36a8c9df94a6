"""Reads SpinApp images (their locked app: which components use which ai_models) in the background.

A reconcile never waits on a registry for long: it asks :meth:`AppInspector.get`, which answers from the
cache, or starts one inspection for that image (however many apps use it) and tells the caller's app to
reconcile again when it is done. Results are kept per (image, pull-secret content): an image pinned by
digest never changes; a tag is read again after ``tag_ttl`` seconds when an app asks. A failure is
retried by the inspector itself after a backoff that doubles up to ``retry_max``; the apps that asked
are told only when the outcome changes (so a registry that stays down costs no reconciles). Registry
calls run in threads (the registry client is synchronous), at most ``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kubespin_shim.errors import ShimError
from kubespin_shim.registry.inspect import AppFacts, inspect_app

log = logging.getLogger(__name__)

AuthDocuments = Sequence[tuple[str, bytes]]
Inspect = Callable[..., AppFacts]
AppKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Inspection:
    facts: AppFacts | None
    error: str | None


@dataclass
class _Entry:
    inspection: Inspection | None = None
    fresh_until: float = 0.0
    failures: int = 0
    task: asyncio.Task[None] | None = None
    retry: asyncio.TimerHandle | None = None
    auth: list[tuple[str, bytes]] = field(default_factory=list)
    waiters: set[AppKey] = field(default_factory=set)


class AppInspector:
    def __init__(
        self,
        notify: Callable[[AppKey], None],
        *,
        inspect: Inspect = inspect_app,
        environ: Mapping[str, str] | None = None,
        concurrency: int = 4,
        tag_ttl: float = 300.0,
        retry_min: float = 5.0,
        retry_max: float = 300.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notify = notify
        self._inspect = inspect
        self._environ = environ
        self._slots = asyncio.Semaphore(concurrency)
        self._tag_ttl = tag_ttl
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.inspections = 0  # registry inspections started (for tests and benchmarks)

    def get(self, image: str, auth: AuthDocuments, app: AppKey) -> Inspection | None:
        """The latest inspection of ``image`` (possibly stale or failed), or None if there is none yet.
        Starts a new one when there is none or it is due, and notifies ``app`` when that one finishes."""
        key = (image, _fingerprint(auth))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._evict()
        self._entries.move_to_end(key)
        failed = entry.inspection is not None and entry.inspection.error is not None
        if (
            entry.task is None
            and entry.retry is None
            and (entry.inspection is None or self._clock() >= entry.fresh_until)
        ):
            entry.auth = list(auth)
            self._start(key, entry)
        if entry.task is not None or failed:
            entry.waiters.add(app)
        return entry.inspection

    def _retry(self, key: tuple[str, str], entry: _Entry) -> None:
        """Try a failed image again, for the apps still waiting on it (none: the next get() will)."""
        entry.retry = None
        if entry.waiters and self._entries.get(key) is entry:
            self._start(key, entry)

    def _start(self, key: tuple[str, str], entry: _Entry) -> None:
        entry.retry = None
        entry.task = asyncio.create_task(self._run(key, entry), name=f"inspect {key[0]}")

    async def wait(self, image: str, auth: AuthDocuments, app: AppKey, timeout: float) -> Inspection | None:
        """Wait up to ``timeout`` seconds for the inspection in flight that :meth:`get` started for ``app``.
        ``app`` is not notified of an outcome it waited for; it is if the wait times out first."""
        entry = self._entries.get((image, _fingerprint(auth)))
        if entry is None:
            return None
        task = entry.task
        if task is not None:
            entry.waiters.discard(app)
            await asyncio.wait([task], timeout=timeout)
            if not task.done() or (entry.inspection is not None and entry.inspection.error is not None):
                entry.waiters.add(app)  # still to be told: when it finishes, or when a retry succeeds
        return entry.inspection

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.retry is not None:
                entry.retry.cancel()
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: tuple[str, str], entry: _Entry) -> None:
        image = key[0]
        previous = entry.inspection
        try:
            async with self._slots:
                self.inspections += 1
                kwargs = {"auth_documents": entry.auth}
                if self._environ is not None:
                    kwargs["environ"] = self._environ  # type: ignore[assignment]
                facts = await asyncio.to_thread(self._inspect, image, **kwargs)
        except asyncio.CancelledError:
            entry.task = None
            raise
        except ShimError as err:
            entry.failures += 1
            delay = min(self._retry_max, self._retry_min * 2 ** (entry.failures - 1))
            # A failure to re-read a tag keeps the facts read before: the image did not get worse.
            entry.inspection = Inspection(previous.facts if previous else None, str(err))
            entry.fresh_until = self._clock() + delay
            log.warning("cannot inspect image %s (retry in %.0f s): %s", image, delay, err)
        except Exception as err:  # a bug or an unexpected library error: report it, never crash the operator
            entry.failures += 1
            delay = self._retry_max
            entry.inspection = Inspection(None, f"unexpected error: {err!r}")
            entry.fresh_until = self._clock() + delay
            log.exception("inspecting image %s failed unexpectedly", image)
        else:
            entry.failures = 0
            entry.inspection = Inspection(facts, None)
            pinned = "@" in image
            entry.fresh_until = float("inf") if pinned else self._clock() + self._tag_ttl
            log.info("inspected %s (%s): ai_models %s", image, facts.digest, facts.models_of() or "none")
        entry.task = None
        failed = entry.inspection is not None and entry.inspection.error is not None
        if failed:
            entry.retry = asyncio.get_running_loop().call_later(delay, self._retry, key, entry)
        if entry.inspection != previous:
            for app in list(entry.waiters):
                self._notify(app)
        if not failed:
            entry.waiters.clear()

    def _evict(self) -> None:
        while len(self._entries) > self._max_entries:
            key, entry = next(iter(self._entries.items()))
            if entry.task is not None or entry.retry is not None:
                self._entries.move_to_end(key)  # busy: keep it, evict the next oldest
                if all(e.task is not None or e.retry is not None for e in self._entries.values()):
                    return
                continue
            del self._entries[key]


def _fingerprint(auth: AuthDocuments) -> str:
    """Pull secrets change what can be read: the cache key holds a hash of their content, never the content."""
    digest = hashlib.sha256()
    for name, raw in auth:
        digest.update(name.encode() + b"\0" + raw + b"\0")
    return digest.hexdigest()[:16]
