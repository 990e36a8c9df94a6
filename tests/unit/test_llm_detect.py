"""Node detection for local LLM inference: the decision table with injected facts, and this machine."""

from __future__ import annotations

import itertools
import os

import pytest
from kubespin_shim.llm.detect import (
    PlatformFacts,
    ProbeResult,
    decide,
    detect_libc,
    gather_facts,
    local_disabled,
    normalize_arch,
    run_probe,
)

from tests.fixtures.llm import require_llm

OK_PROBE = ProbeResult(imported=True, ok=True, detail="tiny: generated 2 token(s)", version="0.3.36", seconds=0.4)


@pytest.mark.parametrize(
    ("arch", "libc", "installed"), list(itertools.product(["x86_64", "aarch64"], ["glibc", "musl"], [True, False]))
)
def test_decision_table_arch_libc_extension(arch: str, libc: str, installed: bool) -> None:
    facts = PlatformFacts(arch, libc, extension_installed=installed, probe=OK_PROBE if installed else None)
    d = decide(facts)
    assert d.supported is installed
    assert f"{arch}/{libc}" in d.reason
    if installed:
        assert "loads and runs a model" in d.reason and "0.3.36" in d.reason
        assert d.label_value == "true"
    else:
        assert "not installed" in d.reason and d.label_value == "false"
        # the hint differs: musl has no prebuilt wheel anywhere
        assert ("musl" in d.reason and "source" in d.reason) if libc == "musl" else "scripts/build-llm" in d.reason


@pytest.mark.parametrize("arch", ["riscv64", "s390x", "armv7l", "ppc64le"])
def test_other_architectures_are_refused_even_with_the_extension(arch: str) -> None:
    d = decide(PlatformFacts(arch, "glibc", extension_installed=True, probe=OK_PROBE))
    assert not d.supported
    assert arch in d.reason and "remote_http" in d.reason


def test_unknown_libc_is_refused() -> None:
    d = decide(PlatformFacts("x86_64", "unknown", extension_installed=True, probe=OK_PROBE))
    assert not d.supported and "C library" in d.reason


def test_import_failure_and_model_failure_give_their_reason() -> None:
    bad_import = ProbeResult(False, False, "OSError: libc.so.6: cannot open shared object file")
    d = decide(PlatformFacts("x86_64", "musl", extension_installed=True, probe=bad_import))
    assert not d.supported and "does not import" in d.reason and "libc.so.6" in d.reason
    crashed = ProbeResult(False, False, "the probe died with SIGILL (the extension was built for another CPU)")
    d = decide(PlatformFacts("aarch64", "glibc", extension_installed=True, probe=crashed))
    assert not d.supported and "SIGILL" in d.reason
    no_model = ProbeResult(True, False, "ValueError: Failed to load model from file")
    d = decide(PlatformFacts("x86_64", "glibc", extension_installed=True, probe=no_model))
    assert not d.supported and "cannot run a model" in d.reason


def test_disabled_wins_over_everything() -> None:
    d = decide(PlatformFacts("x86_64", "glibc", extension_installed=True, probe=OK_PROBE), disabled=True)
    assert not d.supported and "KUBESPIN_LLM_LOCAL=off" in d.reason
    assert local_disabled({"KUBESPIN_LLM_LOCAL": "off"}) and local_disabled({"KUBESPIN_LLM_LOCAL": "0"})
    assert not local_disabled({}) and not local_disabled({"KUBESPIN_LLM_LOCAL": "on"})


@pytest.mark.parametrize(("raw", "norm"), [("AMD64", "x86_64"), ("arm64", "aarch64"), ("x86_64", "x86_64")])
def test_normalize_arch(raw: str, norm: str) -> None:
    assert normalize_arch(raw) == norm


def test_this_machine_libc_is_detected() -> None:
    libc, version = detect_libc()
    assert libc in ("glibc", "musl")
    if libc == "glibc":
        assert version.count(".") >= 1


def test_probe_of_a_file_that_is_not_a_model_says_why(tmp_path) -> None:
    require_llm()
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    r = run_probe(junk)
    assert r.imported and not r.ok and r.detail


def test_this_machine_can_run_local_inference() -> None:
    """The real facts and the real probe (a subprocess loading the tiny model) on this machine."""
    require_llm()
    facts = gather_facts()
    assert facts.arch in ("x86_64", "aarch64") and facts.extension_installed
    d = decide(facts)
    assert d.supported, d.reason
    assert facts.probe is not None and "generated" in facts.probe.detail


def test_llm_detect_command_prints_the_decision_and_the_label() -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "KUBESPIN_LLM_LOCAL": "off"}
    out = subprocess.run([sys.executable, "-m", "kubespin", "llm-detect", "--no-probe"], capture_output=True,
                         text=True, timeout=120, check=True, env=env)
    data = json.loads(out.stdout)
    assert data["supported"] is False and "KUBESPIN_LLM_LOCAL=off" in data["reason"]
    assert data["labels"] == {"kubespin.dev/llm-local": "false"}
    assert data["facts"]["arch"] in ("x86_64", "aarch64")


@pytest.mark.parametrize(
    ("init", "fragment"),
    [
        ('raise OSError("libc.so.6: cannot open shared object file (a glibc wheel on musl)")', "does not import"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGILL)", "SIGILL"),
    ],
)
def test_probe_survives_an_extension_that_fails_or_crashes(tmp_path, monkeypatch, init: str, fragment: str) -> None:
    """A stand-in llama_cpp package first on the probe's path: the probe subprocess fails to import it, or
    dies by a signal as a wheel built for another CPU would; the caller gets a reason, not a crash."""
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text(init + "\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    probe = run_probe(tmp_path / "unused.gguf", timeout=60)
    assert not probe.ok
    d = decide(PlatformFacts("x86_64", "glibc", extension_installed=True, probe=probe))
    assert not d.supported and fragment in d.reason, d.reason
