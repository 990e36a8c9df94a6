"""Readiness, liveness and startup probes: one check, and the threshold bookkeeping kubelet does.

A probe succeeds on an HTTP status in [200, 400) (httpGet) or an accepted connection (tcpSocket),
within ``timeoutSeconds``. ``ProbeTracker`` turns single results into a verdict only after
``successThreshold`` consecutive successes or ``failureThreshold`` consecutive failures, as kubelet's
prober workers do; until the first verdict a readiness probe counts as not ready.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from kubespin.node.podspec import ProbePlan


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    detail: str


async def probe_once(plan: ProbePlan, port: int, client: httpx.AsyncClient) -> ProbeOutcome:
    """Run the probe once against 127.0.0.1:port."""
    if plan.kind == "tcp":
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), plan.timeout_s)
        except (OSError, TimeoutError) as err:
            return ProbeOutcome(False, f"dial tcp 127.0.0.1:{port}: {err or type(err).__name__}")
        writer.close()
        return ProbeOutcome(True, "")
    scheme = "https" if plan.scheme.upper() == "HTTPS" else "http"
    url = f"{scheme}://127.0.0.1:{port}{plan.path if plan.path.startswith('/') else '/' + plan.path}"
    headers = {"User-Agent": "kube-probe/kubespin-node", **dict(plan.headers)}
    try:
        response = await client.get(url, headers=headers, timeout=plan.timeout_s)
    except httpx.TimeoutException:
        return ProbeOutcome(False, f'Get "{url}": context deadline exceeded')
    except httpx.HTTPError as err:
        return ProbeOutcome(False, f'Get "{url}": {err or type(err).__name__}')
    if 200 <= response.status_code < 400:
        return ProbeOutcome(True, "")
    return ProbeOutcome(False, f"HTTP probe failed with statuscode: {response.status_code}")


class ProbeTracker:
    """Consecutive-result counting. ``result`` is None until the thresholds first decide."""

    def __init__(self, plan: ProbePlan) -> None:
        self.plan = plan
        self.result: bool | None = None
        self._successes = 0
        self._failures = 0
        self.last_detail = ""

    def record(self, outcome: ProbeOutcome) -> bool:
        """Count one outcome; return True when the verdict (``result``) changed."""
        self.last_detail = outcome.detail
        if outcome.ok:
            self._successes += 1
            self._failures = 0
            verdict = True if self._successes >= self.plan.success_threshold else self.result
        else:
            self._failures += 1
            self._successes = 0
            verdict = False if self._failures >= self.plan.failure_threshold else self.result
        changed = verdict != self.result
        self.result = verdict
        return changed

    def reset(self) -> None:
        self.result = None
        self._successes = 0
        self._failures = 0
