"""Can this node run local inference? Platform facts in, one decision (with its reason) out.

The decision is a pure function of :class:`PlatformFacts` so that unit tests can cover every row of
the table (architecture, C library, extension, probe) with injected facts. The facts of the real
node come from :func:`gather_facts`, whose probe imports llama-cpp-python and loads a tiny model in a
*subprocess*: a wheel built for another CPU dies with SIGILL, a glibc wheel on musl fails to load its
shared library, and neither may take the shim down with it.

Rows (first match wins):

==========================  ===========================================================
architecture not x86_64 /   unsupported (llama-cpp-python is built and tested here for
aarch64                     those two only)
C library not glibc / musl  unsupported
extension not installed     unsupported; the hint says how to install it for that libc
extension fails to import   unsupported; the import error is the reason
probe model does not load   unsupported; the load error or the signal is the reason
otherwise                   supported
==========================  ===========================================================

``KUBESPIN_LLM_LOCAL=off`` turns local inference off on purpose (the reason says so).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kubespin_shim.llm.types import LOCAL_NOT_SUPPORTED

log = logging.getLogger("kubespin.shim.llm")

SUPPORTED_ARCHES = ("x86_64", "aarch64")
SUPPORTED_LIBCS = ("glibc", "musl")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
PROBE_TIMEOUT_S = 60.0
#: Node label for the operator side: "true" where local inference runs (see :func:`node_labels`).
LABEL = "kubespin.dev/llm-local"


@dataclass(frozen=True)
class ProbeResult:
    """What the probe subprocess saw: the extension imported (``imported``) and a model ran (``ok``)."""

    imported: bool
    ok: bool
    detail: str = ""
    version: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class PlatformFacts:
    arch: str
    libc: str  # "glibc", "musl" or "unknown"
    libc_version: str = ""
    extension_installed: bool = False
    probe: ProbeResult | None = None  # None: not run (nothing to run it on)


@dataclass(frozen=True)
class LocalSupport:
    supported: bool
    reason: str
    facts: PlatformFacts

    @property
    def label_value(self) -> str:
        """``true``/``false`` for a Kubernetes node label."""
        return "true" if self.supported else "false"


def node_labels(support: LocalSupport) -> dict[str, str]:
    """Labels a node agent (or a detection DaemonSet) publishes on its Node, so that SpinApps whose
    components use ``ai_models`` with a local backend can be scheduled onto capable nodes only."""
    return {LABEL: support.label_value}


def normalize_arch(machine: str) -> str:
    m = machine.strip().lower()
    return _ARCH_ALIASES.get(m, m)


def decide(facts: PlatformFacts, *, disabled: bool = False) -> LocalSupport:
    """The decision table above, as code. Pure: no I/O."""
    where = f"{facts.arch}/{facts.libc}"
    if disabled:
        return LocalSupport(False, "local inference is turned off (KUBESPIN_LLM_LOCAL=off)", facts)
    if facts.arch not in SUPPORTED_ARCHES:
        return LocalSupport(
            False,
            f"CPU architecture {facts.arch!r} is not one kubespin runs llama.cpp on "
            f"({', '.join(SUPPORTED_ARCHES)}); use [llm_compute] type = \"remote_http\" (kubespin llm-serve)",
            facts,
        )
    if facts.libc not in SUPPORTED_LIBCS:
        return LocalSupport(
            False,
            f"C library not recognized on {facts.arch} (neither glibc nor musl); llama-cpp-python needs one of them",
            facts,
        )
    if not facts.extension_installed:
        how = (
            "build it from source on this musl system (no musllinux wheel exists): pip install 'kubespin[llm]'"
            if facts.libc == "musl"
            else "install the kubespin[llm] extra (scripts/build-llm builds and caches the wheel)"
        )
        return LocalSupport(False, f"llama-cpp-python is not installed ({where}): {how}", facts)
    probe = facts.probe
    if probe is None:
        return LocalSupport(False, f"llama-cpp-python is installed ({where}) but was not probed", facts)
    if not probe.imported:
        return LocalSupport(False, f"llama-cpp-python does not import on {where}: {probe.detail}", facts)
    if not probe.ok:
        return LocalSupport(False, f"llama-cpp-python imports on {where} but cannot run a model: {probe.detail}", facts)
    version = f" {probe.version}" if probe.version else ""
    return LocalSupport(
        True, f"llama-cpp-python{version} loads and runs a model on {where} (probe {probe.seconds:.2f} s)", facts
    )


def detect_libc() -> tuple[str, str]:
    """("glibc", "2.36"), ("musl", "") or ("unknown", "")."""
    import platform

    try:
        value = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        value = ""
    if value.startswith("glibc"):
        return "glibc", value.partition(" ")[2]
    if glob.glob("/lib/ld-musl-*.so.1") or glob.glob("/usr/lib/ld-musl-*.so.1"):
        return "musl", ""
    name, version = platform.libc_ver()
    if name == "glibc":
        return "glibc", version
    return "unknown", ""


def run_probe(model_path: Path | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Import llama-cpp-python and run the tiny model in a subprocess (see :mod:`.probe`)."""
    import signal
    import subprocess

    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "kubespin_shim.llm.probe"]
    if model_path is not None:
        argv.append(str(model_path))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, False, f"the probe did not finish within {timeout:.0f} s")
    except OSError as e:
        return ProbeResult(False, False, f"the probe could not start: {e}")
    seconds = time.perf_counter() - t0
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (the extension was built for another CPU: rebuild it on this node)" if sig == "SIGILL" else ""
        return ProbeResult(False, False, f"the probe died with {sig}{hint}", seconds=seconds)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip()[-300:]
        return ProbeResult(False, False, f"the probe exited {proc.returncode}: {tail}", seconds=seconds)
    return ProbeResult(
        bool(data.get("imported")),
        bool(data.get("ok")),
        str(data.get("detail", "")),
        data.get("version"),
        seconds,
    )


def gather_facts(*, probe: bool = True) -> PlatformFacts:
    """The facts of this node. ``probe=False`` skips the subprocess (for a quick, partial answer)."""
    import platform

    libc, libc_version = detect_libc()
    installed = importlib.util.find_spec("llama_cpp") is not None
    result = run_probe() if (probe and installed) else None
    return PlatformFacts(normalize_arch(platform.machine()), libc, libc_version, installed, result)


def local_disabled(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("KUBESPIN_LLM_LOCAL", "").strip().lower() in {"off", "0", "false", "no"}


_detected: LocalSupport | None = None
_detect_lock = threading.Lock()


def detect_local_support() -> LocalSupport:
    """This node's decision, computed once per process (callers in other threads wait for it) and
    logged once with its reason."""
    global _detected
    if _detected is not None:
        return _detected
    with _detect_lock:
        if _detected is not None:
            return _detected
        import platform

        disabled = local_disabled()
        facts = (
            PlatformFacts(normalize_arch(platform.machine()), *detect_libc())
            if disabled
            else gather_facts()
        )
        _detected = decide(facts, disabled=disabled)
        if _detected.supported:
            log.info("local LLM inference: available: %s", _detected.reason)
        else:
            log.warning(
                "local LLM inference: not available: %s; llm calls on the local backend return "
                "runtime-error(%r), other routes are not affected",
                _detected.reason,
                LOCAL_NOT_SUPPORTED,
            )
        return _detected
