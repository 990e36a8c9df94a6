"""The CLI's client retries HTTP 429 (after Retry-After, bounded) and nothing else."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from lightkube import ApiError

from kubespin.cloud_cli import kube


def api_error(code: int, retry_after: str | None = None) -> ApiError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": f"m{code}", "code": code}
    request = httpx.Request("GET", "https://127.0.0.1/apis/kubespin.dev/v1alpha1/keyvaluestores")
    return ApiError(request=request, response=httpx.Response(code, json=body, headers=headers, request=request))


class Scripted:
    """A stand-in lightkube client: each call pops the next outcome (an exception or a value)."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self.namespace = "demo"

    def _next(self) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get(self, *a: Any, **kw: Any) -> Any:
        return self._next()

    def list(self, *a: Any, **kw: Any) -> Any:
        outcome = self._next()

        def lazy() -> Any:  # lightkube's list is lazy: the request runs on iteration
            if isinstance(outcome, BaseException):
                raise outcome
            yield from outcome

        return lazy()


def test_429_is_retried_after_retry_after_until_it_succeeds() -> None:
    slept: list[float] = []
    fake = Scripted([api_error(429, "2"), api_error(429), "store"])
    client = kube.RetryingClient(fake, sleep=slept.append)  # type: ignore[arg-type]
    assert client.get("KeyValueStore", "case-a") == "store"
    assert fake.calls == 3
    assert slept == [2.0, 1.0]


def test_a_lazy_list_is_retried_when_its_iteration_fails() -> None:
    slept: list[float] = []
    fake = Scripted([api_error(429, "0"), ["a", "b"]])
    client = kube.RetryingClient(fake, sleep=slept.append)  # type: ignore[arg-type]
    assert client.list("KeyValueStore") == ["a", "b"]
    assert slept == [0.2]  # Retry-After 0 is clamped: never a busy loop


@pytest.mark.parametrize("code", [403, 404, 409, 500])
def test_other_errors_are_not_retried(code: int) -> None:
    fake = Scripted([api_error(code), "never"])
    client = kube.RetryingClient(fake, sleep=lambda s: pytest.fail("slept"))  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        client.get("KeyValueStore", "x")
    assert fake.calls == 1


def test_retries_are_bounded_and_the_last_error_is_explained() -> None:
    fake = Scripted([api_error(429, "5") for _ in range(20)])
    slept: list[float] = []
    client = kube.RetryingClient(fake, sleep=slept.append)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        client.get("KeyValueStore", "x")
    assert sum(slept) <= kube.RETRY_BUDGET_S
    assert fake.calls == len(slept) + 1 <= kube.RETRY_ATTEMPTS
    message = kube.explain(info.value, "KeyValueStore x", "demo").message
    assert "try again" in message and "KeyValueStore x" in message


def test_non_api_attributes_pass_through() -> None:
    fake = Scripted([])
    assert kube.RetryingClient(fake).namespace == "demo"  # type: ignore[arg-type]
