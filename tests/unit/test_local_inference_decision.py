"""The local-inference scheduling decision (pure) and the image inspector's cache (with a fake inspect
function standing in for the registry; the real registry path is tests/integration/test_registry_inspect.py
and tests/integration/test_operator_local_inference.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from kubespin_operator.app_inspector import AppInspector
from kubespin_operator.local_inference import (
    LLM_LOCAL_LABEL,
    condition,
    decide,
    facts_from_status,
    llm_compute_type,
    no_capable_node,
    node_selector,
    status_field,
)
from kubespin_operator.render import RenderConfig, render_app
from kubespin_shim.llm.detect import LABEL
from kubespin_shim.registry.errors import RegistryUnreachableError
from kubespin_shim.registry.inspect import AppFacts

FACTS = AppFacts("r.test/app:v1", "sha256:" + "a" * 64, {"chat": ("llama2-chat",), "web": ()})
NO_MODELS = AppFacts("r.test/hello:v1", "sha256:" + "b" * 64, {"web": ()})


def test_the_label_is_the_one_the_node_probe_publishes() -> None:
    assert LLM_LOCAL_LABEL == LABEL == "kubespin.dev/llm-local"


@pytest.mark.parametrize(
    ("facts", "spec", "toml", "required", "reason"),
    [
        (FACTS, {}, "", True, "NodeSelector"),  # no [llm_compute]: Spin's default is local
        (FACTS, {}, '[llm_compute]\ntype = "spin"\n', True, "NodeSelector"),
        (FACTS, {}, '[llm_compute]\ntype = "remote_http"\nurl = "http://x"\n', False, "RemoteBackend"),
        (FACTS, {"components": ["web"]}, "", False, "NoModels"),  # the model user is not retained
        (FACTS, {"components": ["chat"]}, "", True, "NodeSelector"),
        (NO_MODELS, {}, "", False, "NoModels"),
    ],
)
def test_decision_table(facts: AppFacts, spec: dict, toml: str, required: bool, reason: str) -> None:
    need = decide(facts, spec, toml)
    assert (need.required, need.reason) == (required, reason)
    assert bool(need.models) == required


def test_llm_compute_type() -> None:
    assert llm_compute_type("") is None
    assert llm_compute_type('[llm_compute]\ntype = "spin"') == "spin"
    assert llm_compute_type("not toml [") is None


def test_node_selector_merges_and_the_users_value_wins() -> None:
    need = decide(FACTS, {}, "")
    assert node_selector({"disk": "ssd"}, need) == {"disk": "ssd", LABEL: "true"}
    assert node_selector({LABEL: "gpu-pool"}, need) == {LABEL: "gpu-pool"}
    assert node_selector(None, decide(NO_MODELS, {}, "")) == {}
    assert node_selector({"disk": "ssd"}, None) == {"disk": "ssd"}


def test_messages_point_the_user_somewhere() -> None:
    need = decide(FACTS, {}, "")
    problem = no_capable_node(need)
    assert problem.reason == "NoLocalInferenceNode" and not problem.blocking
    assert "chat (llama2-chat)" in problem.message and "remote_http" in problem.message
    assert "kubespin llm-serve" in problem.message and "nodeProbe.enabled" in problem.message
    unknown = condition(None, "cannot reach registry r.test")
    assert (unknown.status, unknown.reason) == ("Unknown", "ImageNotInspected")
    assert "cannot reach registry r.test" in unknown.message


def test_status_record_round_trips_for_the_same_image_only() -> None:
    need = decide(FACTS, {}, "")
    record = status_field(FACTS.reference, FACTS, need)
    assert record["localNodeRequired"] is True
    again = facts_from_status(FACTS.reference, {"localInference": record})
    assert again is not None and again.models_of() == FACTS.models_of() and again.digest == FACTS.digest
    assert facts_from_status("r.test/app:v2", {"localInference": record}) is None
    assert facts_from_status(FACTS.reference, {}) is None


def test_render_adds_the_selector_only_when_needed() -> None:
    body = {
        "apiVersion": "kubespin.dev/v1alpha1",
        "kind": "SpinApp",
        "metadata": {"name": "a", "namespace": "n", "uid": "u"},
        "spec": {"image": FACTS.reference},
    }
    local = render_app(body, [], {}, {}, RenderConfig(), lambda toml: decide(FACTS, body["spec"], toml))
    assert local.deployment["spec"]["template"]["spec"]["nodeSelector"] == {LABEL: "true"}
    assert local.local_inference.required
    unknown = render_app(body, [], {}, {}, RenderConfig(), None)
    assert "nodeSelector" not in unknown.deployment["spec"]["template"]["spec"]
    body["spec"]["runtimeConfig"] = {
        "llmCompute": {"type": "remote_http", "options": [{"name": "url", "value": "http://llm"}]}
    }
    remote = render_app(body, [], {}, {}, RenderConfig(), lambda toml: decide(FACTS, body["spec"], toml))
    assert "nodeSelector" not in remote.deployment["spec"]["template"]["spec"]
    assert remote.local_inference.reason == "RemoteBackend"


# --- the inspector -------------------------------------------------------------------------------------


class FakeRegistry:
    """Answers inspect calls from a table; blocks until released so tests can observe in-flight state."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers: dict[str, AppFacts | Exception] = {}
        self.release = threading.Event()
        self.release.set()

    def __call__(self, image: str, **_: object) -> AppFacts:
        self.calls.append(image)
        self.release.wait(5)
        answer = self.answers[image]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_one_inspection_per_image_and_every_waiting_app_is_told() -> None:
    async def scenario() -> None:
        fake = FakeRegistry()
        fake.answers[FACTS.reference] = FACTS
        fake.release.clear()
        told: list[tuple[str, str]] = []
        inspector = AppInspector(told.append, inspect=fake)
        assert inspector.get(FACTS.reference, (), ("n", "a")) is None
        assert inspector.get(FACTS.reference, (), ("n", "b")) is None
        waiting = asyncio.create_task(inspector.wait(FACTS.reference, (), ("n", "c"), timeout=5))
        assert inspector.get(FACTS.reference, (), ("n", "c")) is None
        fake.release.set()
        result = await waiting
        assert result is not None and result.facts == FACTS
        assert fake.calls == [FACTS.reference]
        assert sorted(told) == [("n", "a"), ("n", "b")]  # c waited for the answer itself
        again = inspector.get(FACTS.reference, (), ("n", "a"))
        assert again is not None and again.facts == FACTS and fake.calls == [FACTS.reference]
        await inspector.close()

    asyncio.run(scenario())


def test_failures_are_retried_by_the_inspector_with_backoff_and_apps_hear_only_of_changes() -> None:
    async def scenario() -> None:
        fake = FakeRegistry()
        image = "r.test/app:v1"
        fake.answers[image] = RegistryUnreachableError("cannot reach registry r.test")
        told: list[tuple[str, str]] = []
        inspector = AppInspector(told.append, inspect=fake, retry_min=0.05, retry_max=0.2)
        assert inspector.get(image, (), ("n", "a")) is None
        failed = await inspector.wait(image, (), ("n", "a"), timeout=5)
        assert failed is not None and failed.facts is None and "cannot reach" in (failed.error or "")
        inspector.get(image, (), ("n", "b"))  # another app asks meanwhile: no extra registry call
        await asyncio.sleep(0.4)  # retries at +0.05, +0.1, +0.2 (doubling, capped) happen by themselves
        assert 3 <= len(fake.calls) <= 5, fake.calls
        assert told == []  # the outcome never changed: no app was reconciled for nothing
        fake.answers[image] = FACTS
        for _ in range(50):
            if told:
                break
            await asyncio.sleep(0.05)
        assert sorted(told) == [("n", "a"), ("n", "b")]  # the registry is back: both are told once
        assert inspector.get(image, (), ("n", "a")).facts == FACTS
        calls = len(fake.calls)
        await asyncio.sleep(0.3)
        assert len(fake.calls) == calls  # no more retries after success
        await inspector.close()

    asyncio.run(scenario())


def test_a_failed_re_read_of_a_tag_keeps_the_facts_read_before() -> None:
    async def scenario() -> None:
        now = [100.0]
        fake = FakeRegistry()
        image = "r.test/app:v1"
        fake.answers[image] = FACTS
        inspector = AppInspector(lambda app: None, inspect=fake, tag_ttl=60, retry_min=30, clock=lambda: now[0])
        inspector.get(image, (), ("n", "a"))
        first = await inspector.wait(image, (), ("n", "a"), timeout=5)
        assert first is not None and first.facts == FACTS
        now[0] += 61  # the tag is due again; the registry is down now
        fake.answers[image] = RegistryUnreachableError("cannot reach registry r.test")
        stale = inspector.get(image, (), ("n", "a"))
        assert stale is not None and stale.facts == FACTS  # served while re-reading
        failed = await inspector.wait(image, (), ("n", "a"), timeout=5)
        assert failed is not None and failed.facts == FACTS and "cannot reach" in (failed.error or "")
        await inspector.close()

    asyncio.run(scenario())


def test_pinned_images_are_never_read_twice_and_pull_secrets_are_part_of_the_key() -> None:
    async def scenario() -> None:
        now = [0.0]
        fake = FakeRegistry()
        pinned = "r.test/app@sha256:" + "c" * 64
        fake.answers[pinned] = FACTS
        inspector = AppInspector(lambda app: None, inspect=fake, tag_ttl=1, clock=lambda: now[0])
        inspector.get(pinned, (), ("n", "a"))
        await inspector.wait(pinned, (), ("n", "a"), timeout=5)
        now[0] += 10_000
        assert inspector.get(pinned, (), ("n", "a")) is not None and len(fake.calls) == 1
        assert inspector.get(pinned, [("Secret n/pull", b"{}")], ("n", "a")) is None  # other credentials
        await inspector.wait(pinned, [("Secret n/pull", b"{}")], ("n", "a"), timeout=5)
        assert len(fake.calls) == 2
        await inspector.close()

    asyncio.run(scenario())
