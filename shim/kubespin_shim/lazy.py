"""Deferred imports for modules that only some apps or rare paths need.

redis-py (~200 ms to import), httpx (~120 ms), and the shim's own outbound client and allow-list
parser (~13 ms) are not needed by an app that never opens a Redis store or calls out, and the
cold-start budget is 300 ms. ``lazy_import(name)`` gives an object that imports ``name`` on its
first attribute access and then forwards every attribute to the module.

Why not the stdlib's ``importlib.util.LazyLoader`` (which this module used first): before Python
3.12.3 it is not thread-safe (CPython gh-114763). Two worker threads making their first outbound
calls at once could both start executing the module, and one could see it half-initialised, an
``AttributeError`` for a name the module defines. Here the import is ``importlib.import_module``
(which holds the import system's per-module lock) behind our own lock, once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any


class LazyModule:
    """``name``, imported on the first attribute access (by any thread, once)."""

    def __init__(self, name: str) -> None:
        self.__name = name
        self.__module: ModuleType | None = None
        self.__lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:  # called only for names not set on the proxy itself
        module = self.__module
        if module is None:
            with self.__lock:
                if self.__module is None:
                    self.__module = importlib.import_module(self.__name)
                module = self.__module
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self.__module is not None else "not imported yet"
        return f"<lazy module {self.__name!r} ({state})>"


def lazy_import(name: str) -> ModuleType:
    """The module if it is already imported, else a :class:`LazyModule` standing in for it.

    The module must be installed: a missing or misspelt one fails here, at import, not on the first
    request that needs it.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    if importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return LazyModule(name)  # type: ignore[return-value]  # used only through attribute access
