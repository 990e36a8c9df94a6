"""Python's cyclic garbage collector on the request path, with and without ``gc.freeze()`` at start.

`kubespin up` freezes what start-up built (shim/kubespin_shim/cli.py) before it serves. This runs a
test app in-process (linked as `kubespin up` links it, bench/shim_vs_wasmtime.py's loop) for N
requests in two child processes, alternating, and prints the collections, the full ones, and the
collector's time per request. Not a test: it asserts nothing.

    .venv/bin/python bench/gc_pauses.py [--app js-hello] [--requests 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import gc, logging, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
logging.disable(logging.CRITICAL)
from bench.shim_vs_wasmtime import in_process_costs
in_process_costs(Path({app!r}), 20)  # start-up and warm-up
if {freeze!r}:
    gc.freeze()
runs, full, spent, longest, t0 = [0], [0], [0.0], [0.0], [0.0]
def watch(phase, info):
    if phase == "start":
        t0[0] = time.perf_counter()
        return
    took = time.perf_counter() - t0[0]
    runs[0] += 1
    full[0] += info["generation"] == 2
    spent[0] += took
    longest[0] = max(longest[0], took)
gc.callbacks.append(watch)
in_process_costs(Path({app!r}), {n})
print(f"{{runs[0]}} collections ({{full[0]}} full), {{spent[0] / {n} * 1e6:.1f}} us per request, "
      f"longest pause {{longest[0] * 1e3:.1f}} ms")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default="js-hello")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    app = ROOT / "tests" / "apps" / args.app
    env = {**os.environ, "SPIN_VARIABLE_SECRET_TOKEN": "bench"}
    for _ in range(args.rounds):
        for freeze in (False, True):
            code = CHILD.format(root=str(ROOT), app=str(app), freeze=freeze, n=args.requests)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
            result = out.stdout.strip() or f"failed ({out.returncode}): {out.stderr[-500:]}"
            print(f"{args.app}, {'gc.freeze() at start' if freeze else 'no freeze          '}: {result}")


if __name__ == "__main__":
    main()
