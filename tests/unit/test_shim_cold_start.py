"""`kubespin up` keeps modules it only needs on rare paths out of its start (cold-start budget)."""

from __future__ import annotations

import subprocess
import sys

from tests.shimproc import built_app

# Executed only when the path that needs them runs: importlib.metadata on a compile-cache miss (the
# wasmtime version in the cache key), ssl when an outbound call fails (its exception types), and the
# factors an app cannot reach (js-hello imports no key-value, sqlite, LLM or Redis interface and
# declares no labels: factors/optional.py), and the outbound HTTP client and allow-list parser until
# a component that has allowed_outbound_hosts is configured or a guest calls out.
DEFERRED = (
    "importlib.metadata",
    "ssl",
    "kubespin_shim.outbound.allowed_hosts",
    "kubespin_shim.outbound.http_client",
    "kubespin_shim.outbound.internal",
    "kubespin_shim.outbound.policy",
    "kubespin_shim.factors.key_value",
    "kubespin_shim.factors.sqlite",
    "kubespin_shim.factors.llm",
    "kubespin_shim.factors.outbound_redis",
    "sqlite3",
)

CODE = """
import sys
import kubespin.cli
from kubespin_shim.cli import build_server
build_server(source={app!r}, host="127.0.0.1", port=0, runtime_config_file=None, state_dir=None,
             cli_variables=[], components_to_retain=[], request_timeout=30.0, max_instance_memory=None)
# a deferred module (kubespin_shim.lazy) enters sys.modules only when it is imported
print([m for m in {deferred!r} if m in sys.modules])
"""


def test_a_warm_start_does_not_execute_deferred_modules() -> None:
    code = CODE.format(app=str(built_app("js-hello")), deferred=DEFERRED)
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # fills the cache
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert warm.stdout.strip().splitlines()[-1] == "[]", warm.stdout + warm.stderr
