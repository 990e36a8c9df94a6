"""The reconcile queue: coalescing, re-run after a change during reconcile, retries, periodic re-checks."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Hashable

from kubespin_operator.workqueue import WorkQueue


async def _drain(queue: WorkQueue, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.sleep(0)
    while not queue.idle() and loop.time() < deadline:
        await asyncio.sleep(0.005)


def test_keys_queued_many_times_are_reconciled_once() -> None:
    async def main() -> Counter[Hashable]:
        seen: Counter[Hashable] = Counter()

        async def reconcile(key: Hashable) -> None:
            seen[key] += 1

        queue = WorkQueue(reconcile, workers=2)
        for _ in range(50):
            queue.add("a")
            queue.add("b")
        queue.start()
        await _drain(queue)
        await queue.stop()
        return seen

    assert asyncio.run(main()) == Counter({"a": 1, "b": 1})


def test_a_key_changed_during_its_reconcile_is_reconciled_again() -> None:
    async def main() -> int:
        calls = 0
        gate = asyncio.Event()

        async def reconcile(key: Hashable) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await gate.wait()

        queue = WorkQueue(reconcile, workers=4)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.01)
        queue.add("k")  # while running: must not run concurrently, must run again after
        queue.add("k")
        gate.set()
        await _drain(queue)
        await queue.stop()
        return calls

    assert asyncio.run(main()) == 2


def test_failures_are_retried_with_backoff_and_requeue_after_works() -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def reconcile(key: Hashable) -> float | None:
            log.append(str(key))
            if key == "flaky" and log.count("flaky") < 3:
                raise RuntimeError("transient")
            if key == "periodic" and log.count("periodic") < 2:
                return 0.02
            return None

        queue = WorkQueue(reconcile, workers=1, base_backoff=0.01)
        queue.start()
        queue.add("flaky")
        queue.add("periodic")
        await asyncio.sleep(0.3)
        await queue.stop()
        return log

    log = asyncio.run(main())
    assert log.count("flaky") == 3
    assert log.count("periodic") == 2
