"""User-space instructions per request of a test app, in-process, under valgrind's callgrind.

Wall-clock and CPU-time ratios move with a shared machine's load; instruction counts do not. Each
variant runs the app in one process (linked as `kubespin up` links it) for N1 and then N2 requests per
component; the difference divided by N2 - N1 is the cost of one request without start-up (summed over
the components, so use a one-component app such as js-hello or py-hello).
Variants: the C accelerator on (default) and off (KUBESPIN_NATIVE_HOST=0).

    .venv/bin/python bench/request_instructions.py [--app js-hello] [--requests 20,120]

Needs valgrind (scripts/setup does not install it: `apt-get install valgrind`). Kernel work (page
faults of each fresh instance) is not counted. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The child runs bench/shim_vs_wasmtime.py's in-process loop (the app linked as `kubespin up` links it).
CHILD = """
import logging, sys
from pathlib import Path
sys.path.insert(0, {root!r})
logging.disable(logging.CRITICAL)
from bench.shim_vs_wasmtime import in_process_costs
in_process_costs(Path({app!r}), 10 + int(sys.argv[1]))
"""


def instructions(app: Path, requests: int, native: bool, work: Path) -> int:
    script = work / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), app=str(app)))
    out = work / f"callgrind.{requests}.{int(native)}.out"
    env = {**os.environ, "KUBESPIN_NATIVE_HOST": "1" if native else "0", "SPIN_VARIABLE_SECRET_TOKEN": "bench"}
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(script), str(requests)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default="js-hello")
    ap.add_argument("--requests", default="20,120", help="N1,N2: request counts of the two runs")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install valgrind")
    n1, n2 = (int(x) for x in args.requests.split(","))
    app = ROOT / "tests" / "apps" / args.app
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = [(n, native) for native in (True, False) for n in (n1, n2)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(jobs, pool.map(lambda j: instructions(app, j[0], j[1], work), jobs), strict=True))
    for native in (True, False):
        per = (counts[(n2, native)] - counts[(n1, native)]) / (n2 - n1)
        label = "C accelerator on " if native else "all host calls in Python"
        print(f"{args.app}: {label}: {per / 1e6:.2f} M user-space instructions per request")


if __name__ == "__main__":
    main()
