"""Run a host-call test once per implementation of the host-call path (C extension or Python)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kubespin_shim.host import native

# "c": the C extension's entry points and value plans (host/_native.c);
# "python": the ctypes trampolines and Python conversions it replaces when it is not built.
HOST_PATHS = ["c", "python"]


@contextmanager
def host_path(name: str) -> Iterator[None]:
    """Linkers built inside use the named implementation; the choice is made when a linker is built
    and when a host function is first called, so keep the context open while the test calls."""
    with pytest.MonkeyPatch.context() as mp:
        if name == "python":
            mp.setenv(native.ENV_SWITCH, "0")
        else:
            mp.delenv(native.ENV_SWITCH, raising=False)
        native.reset_for_tests()
        try:
            if name == "c" and not native.available():
                pytest.skip("the C accelerator is not built here")
            yield
        finally:
            native.reset_for_tests()


@pytest.fixture(params=HOST_PATHS)
def each_host_path(request: pytest.FixtureRequest) -> Iterator[str]:
    with host_path(request.param):
        yield str(request.param)
