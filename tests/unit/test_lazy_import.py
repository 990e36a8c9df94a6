"""kubespin_shim.lazy: a deferred import happens once, on first use, also when threads race for it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubespin_shim.lazy import lazy_import

SLOW_MODULE = """
import time
executions = globals().get("executions", 0) + 1
time.sleep(0.2)  # a wide window: every thread asks while the first is still importing
def answer():
    return 42
LAST = "defined at the end"
"""


@pytest.fixture
def slow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"kubespin_lazy_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_the_import_waits_for_first_use(slow_module: str) -> None:
    mod = lazy_import(slow_module)
    assert slow_module not in sys.modules
    assert mod.answer() == 42
    assert sys.modules[slow_module].executions == 1
    assert lazy_import(slow_module) is sys.modules[slow_module]  # later calls get the module itself


def test_threads_racing_for_the_first_use_all_see_the_whole_module(slow_module: str) -> None:
    mod = lazy_import(slow_module)
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def use() -> None:
        barrier.wait()
        try:
            seen.append(mod.LAST)
        except Exception as e:  # what a half-initialised module gives: AttributeError
            seen.append(e)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == ["defined at the end"] * 8
    assert sys.modules[slow_module].executions == 1


def test_a_module_that_is_not_installed_fails_at_once() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_kubespin"):
        lazy_import("no_such_module_for_kubespin")
