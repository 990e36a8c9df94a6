"""Deferred imports for heavy client libraries (redis-py ~200 ms, httpx ~120 ms to import).

A shim whose app never opens a Redis store or makes an outbound call should not pay for them at
start: the cold-start budget is 300 ms. This is the stdlib's documented ``importlib.util.LazyLoader``
recipe; the module is really imported on first attribute access.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as the import system does for a submodule: ``import a.b`` makes ``a.b`` an attribute
        setattr(sys.modules[parent], child, module)
    return module
