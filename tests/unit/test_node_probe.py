"""`kubespin node-probe` without a cluster: the Node patch built from injected facts, when a Node already
carries it, which API errors are retried, and the command's registration and usage errors.
(Against a real API server: tests/integration/test_node_probe_cluster.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from kubespin_shim.llm.detect import PlatformFacts, ProbeResult, decide
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from kubespin.cli import LAZY_COMMANDS, cli
from kubespin.llm_node_label import (
    LABEL,
    MAX_REASON_CHARS,
    REASON_ANNOTATION,
    is_published,
    llm_label_patch,
    one_line,
)
from kubespin.node_probe import (
    ApiUnavailable,
    NodeNotFound,
    NodeProbeError,
    NotPermitted,
    permanent_error,
    with_retries,
)

OK_PROBE = ProbeResult(imported=True, ok=True, detail="tiny: generated 2 token(s)", version="0.3.36", seconds=0.4)
CAPABLE = decide(PlatformFacts("x86_64", "glibc", "2.36", extension_installed=True, probe=OK_PROBE))
NOT_INSTALLED = decide(PlatformFacts("aarch64", "musl", extension_installed=False))
SIGILL = decide(
    PlatformFacts(
        "x86_64",
        "glibc",
        extension_installed=True,
        probe=ProbeResult(False, False, "the probe died with SIGILL (the extension was built for another CPU)"),
    )
)


def test_capable_node_patch_is_the_label_and_the_reason_only() -> None:
    assert llm_label_patch(CAPABLE) == {
        "metadata": {
            "labels": {"kubespin.dev/llm-local": "true"},
            "annotations": {REASON_ANNOTATION: CAPABLE.reason},
        }
    }
    assert "x86_64/glibc" in CAPABLE.reason


@pytest.mark.parametrize("support", [NOT_INSTALLED, SIGILL], ids=["not-installed", "sigill"])
def test_incapable_node_says_false_and_why(support: Any) -> None:
    meta = llm_label_patch(support)["metadata"]
    assert meta["labels"] == {LABEL: "false"}
    reason = meta["annotations"][REASON_ANNOTATION]
    assert reason == support.reason  # short reasons pass unchanged
    assert ("not installed" in reason) if support is NOT_INSTALLED else ("SIGILL" in reason)


def test_a_long_multiline_reason_becomes_one_bounded_line() -> None:
    traceback_like = "OSError: cannot load libllama.so\n" + "  at frame\n" * 200
    support = decide(
        PlatformFacts("x86_64", "glibc", extension_installed=True, probe=ProbeResult(False, False, traceback_like))
    )
    reason = llm_label_patch(support)["metadata"]["annotations"][REASON_ANNOTATION]
    assert len(reason) == MAX_REASON_CHARS and reason.endswith("…")
    assert "\n" not in reason and "  " not in reason
    assert reason.startswith("llama-cpp-python does not import on x86_64/glibc: OSError: cannot load libllama.so")
    assert one_line("a\n b\t c", limit=10) == "a b c"
    assert one_line("x" * 20, limit=10) == "x" * 9 + "…"


def test_is_published_compares_only_the_two_keys() -> None:
    ours = llm_label_patch(CAPABLE)["metadata"]
    others = {"labels": {"kubernetes.io/os": "linux"}, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}}
    merged = {k: {**others[k], **ours[k]} for k in ("labels", "annotations")}
    assert is_published(merged, CAPABLE)
    assert not is_published(others, CAPABLE)  # removed
    assert not is_published(None, CAPABLE)
    assert not is_published({**merged, "labels": {**merged["labels"], LABEL: "false"}}, CAPABLE)  # changed
    stale = {**merged, "annotations": {REASON_ANNOTATION: "an older reason"}}
    assert not is_published(stale, CAPABLE)  # the reason is kept up to date too


def api_error(code: int, message: str = "boom") -> ApiError:
    return ApiError(status=Status(code=code, message=message, status="Failure"))


def test_node_not_found_and_rbac_are_permanent_with_actionable_messages() -> None:
    missing = permanent_error(api_error(404, 'nodes "n1" not found'), "n1")
    assert isinstance(missing, NodeNotFound)
    assert "'n1' does not exist" in str(missing) and "NODE_NAME" in str(missing)
    forbidden = permanent_error(api_error(403, "nodes is forbidden: User cannot patch"), "n1")
    assert isinstance(forbidden, NotPermitted)
    assert "get and patch on nodes" in str(forbidden) and "cannot patch" in str(forbidden)
    assert isinstance(permanent_error(api_error(401), "n1"), NotPermitted)
    invalid = permanent_error(api_error(422, "metadata.labels: Invalid value"), "n1")
    assert type(invalid) is NodeProbeError and "Invalid value" in str(invalid)


@pytest.mark.parametrize("code", [429, 500, 503, 504])
def test_overload_and_server_errors_are_transient(code: int) -> None:
    assert permanent_error(api_error(code), "n1") is None


def test_connection_errors_are_transient() -> None:
    assert permanent_error(httpx2.ConnectError("refused"), "n1") is None
    assert permanent_error(httpx2.ReadTimeout("slow"), "n1") is None


class Flaky:
    """An operation failing with the given errors in turn, then returning "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def retry(op: Flaky, attempts: int) -> tuple[Any, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = asyncio.run(with_retries(op, node_name="n1", attempts=attempts, sleep=sleep))
    return result, slept


def test_transient_errors_are_retried_with_backoff() -> None:
    op = Flaky(httpx2.ConnectError("refused"), api_error(503))
    assert retry(op, attempts=5) == ("ok", [0.5, 1.0])
    assert op.calls == 3


def test_retries_are_bounded() -> None:
    op = Flaky(*(httpx2.ConnectError("connection refused") for _ in range(10)))
    with pytest.raises(ApiUnavailable, match=r"after 4 attempt\(s\): ConnectError: connection refused"):
        retry(op, attempts=4)
    assert op.calls == 4


def test_permanent_errors_are_not_retried() -> None:
    op = Flaky(api_error(404))
    with pytest.raises(NodeNotFound):
        retry(op, attempts=5)
    assert op.calls == 1


def test_command_is_registered_lazily_and_needs_a_node_name() -> None:
    assert LAZY_COMMANDS["node-probe"] == "kubespin.node_probe:node_probe_command"
    result = CliRunner().invoke(cli, ["node-probe", "--once"], env={"NODE_NAME": ""})
    assert result.exit_code == 2
    assert "pass --node-name or set NODE_NAME" in result.output
