"""fermyon:spin/llm throughput through `kubespin up` vs llama-cpp-python / the embeddings encoder called
directly in the same run, locally and through remote_http to `kubespin llm-serve` on 127.0.0.1.

Rounds are interleaved (direct, shim, remote, direct, shim, remote, ...) so that the machine's load
hits all of them alike; the table shows median rates and the median of the per-round ratios to the
direct call (goals from the issue: tokens/s >= 0.95, embeddings/s >= 0.9), the ratios of the best
rounds (least disturbed by other load on the machine), and "cpu": units per CPU-second of the processes
doing the work (the bench process for direct calls; the shim, or the shim + llm-serve for remote_http),
relative to direct, which other load on a shared machine disturbs far less than wall time. The order
within a round is shuffled.

* inference: the py-llm guest's POST /infer/<model> with greedy sampling (top-k 1, temperature 0,
  repeat-penalty 1) so every path generates the same tokens; tokens/s = generated tokens / wall time
  seen by the client. The direct peer is `llama_cpp.Llama(...).create_completion` with the same
  constructor and sampling arguments the shim uses (kubespin_shim.llm.local_llama), in this process.
* embeddings: POST /embed/all-minilm-l6-v2 with a batch of sentences vs
  kubespin_shim.llm.embeddings.MiniLmEmbedder.embed in this process. Row ``embed``: the guest answers a
  summary (count, dims), so the row measures the host call, the vectors crossing into the guest and the
  HTTP round trip; row ``embed+json``: the guest also JSON-encodes all 16 x 384 floats in its (wasm)
  CPython, which is app work that the direct call does not do.

    .venv/bin/python bench/llm_bench.py [--model smollm2|tiny] [--rounds 5] [--max-tokens 64]

Needs scripts/build-llm and the built py-llm test app. Not a test: it asserts nothing; absolute
numbers depend on the machine's load, the ratios are measured back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fixtures.llm import make_models_dir, run_llm_serve  # noqa: E402
from tests.shimproc import copy_app, run_shim  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint. Once upon a time,"
SENTENCES = [f"Sentence {i}: kubespin serves Spin apps on Kubernetes nodes, one of many." for i in range(16)]
GREEDY_QUERY = "temperature=0&top_k=1&repeat_penalty=1.0"


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()

    import llama_cpp
    from kubespin_shim.llm import registry
    from kubespin_shim.llm.embeddings import MiniLmEmbedder
    from kubespin_shim.llm.local_llama import completion_kwargs, llama_kwargs
    from kubespin_shim.llm.types import InferencingParams

    params = InferencingParams(max_tokens=args.max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    query = f"max_tokens={args.max_tokens}&{GREEDY_QUERY}"
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp_s, contextlib.ExitStack() as stack:
        tmp = Path(tmp_s)
        models = make_models_dir(tmp)
        gguf = registry.find_gguf(registry.find_model_dir(models, args.model)[0])
        direct_llm = llama_cpp.Llama(str(gguf), **llama_kwargs())
        embedder = MiniLmEmbedder(models / "all-minilm-l6-v2")
        app = copy_app("py-llm", tmp)

        url, _ = stack.enter_context(run_llm_serve(models, tmp, token="bench", args=("--preload", args.model,
                                                                                      "--preload", "all-minilm-l6-v2")))
        rc = tmp / "runtime-config.toml"
        rc.write_text(f'[llm_compute]\ntype = "remote_http"\nurl = "{url}"\nauth_token = "bench"\n')
        local_shim = stack.enter_context(run_shim(app, tmp, ["--ai-models-dir", str(models)]))
        remote_tmp = tmp / "remote"
        remote_tmp.mkdir()
        remote_shim = stack.enter_context(run_shim(app, remote_tmp, ["--runtime-config-file", str(rc)]))
        local_c = stack.enter_context(httpx.Client(base_url=local_shim.url, timeout=600))
        remote_c = stack.enter_context(httpx.Client(base_url=remote_shim.url, timeout=600))

        def direct_infer() -> int:
            out = direct_llm.create_completion(PROMPT, **completion_kwargs(params, 1))
            return out["usage"]["completion_tokens"]

        def shim_infer(c: httpx.Client) -> Callable[[], int]:
            def run() -> int:
                r = c.post(f"/infer/{args.model}?{query}", content=PROMPT.encode())
                r.raise_for_status()
                return r.json()["generated_tokens"]

            return run

        def direct_embed() -> int:
            return len(embedder.embed(SENTENCES).embeddings)

        def shim_embed(c: httpx.Client, summary: bool) -> Callable[[], int]:
            def run() -> int:
                r = c.post("/embed/all-minilm-l6-v2" + ("?summary=1" if summary else ""), json=SENTENCES)
                r.raise_for_status()
                return r.json()["count"] if summary else len(r.json()["embeddings"])

            return run

        paths = {
            "infer": {"direct": direct_infer, "shim": shim_infer(local_c), "remote": shim_infer(remote_c)},
            "embed": {"direct": direct_embed, "shim": shim_embed(local_c, True), "remote": shim_embed(remote_c, True)},
            "embed+json": {"direct": direct_embed, "shim": shim_embed(local_c, False),
                           "remote": shim_embed(remote_c, False)},
        }
        serve_port = int(url.rsplit(":", 1)[1])
        serve_pid = next(c.pid for c in psutil.net_connections("tcp")
                         if c.laddr and c.laddr.port == serve_port and c.status == psutil.CONN_LISTEN)
        procs = {  # whose CPU time each path spends
            "direct": [psutil.Process()],
            "shim": [psutil.Process(local_shim.proc.pid)],
            "remote": [psutil.Process(remote_shim.proc.pid), psutil.Process(serve_pid)],
        }
        for kind in paths.values():  # warm-up: load models, compile, fill caches
            for fn in kind.values():
                fn()
        rates: dict[str, dict[str, list[float]]] = {k: {p: [] for p in v} for k, v in paths.items()}
        cpu: dict[str, dict[str, float]] = {k: {p: 0.0 for p in v} for k, v in paths.items()}
        units: dict[str, dict[str, int]] = {k: {p: 0 for p in v} for k, v in paths.items()}
        counts: dict[str, set[int]] = {k: set() for k in paths}
        rng = random.Random(0)
        for _ in range(args.rounds):
            for kind, fns in paths.items():
                order = list(fns.items())
                rng.shuffle(order)  # no path always runs right after another one's leftovers (spinning threads)
                for path, fn in order:
                    cpu0 = cpu_seconds(procs[path])
                    seconds, n = timed(fn)
                    cpu[kind][path] += cpu_seconds(procs[path]) - cpu0
                    units[kind][path] += n
                    rates[kind][path].append(n / seconds)
                    counts[kind].add(n)

    unit = {"infer": "tokens/s", "embed": "sentences/s", "embed+json": "sentences/s"}
    result: dict[str, dict[str, float]] = {}
    print(f"\nmodel {args.model}, {args.rounds} interleaved rounds; medians of the rates and of the per-round "
          f"ratios (infer: {sorted(counts['infer'])} tokens per call; embed: batches of {len(SENTENCES)})")
    print(f"{'':10} {'direct':>9} {'shim':>9} {'ratio':>6} {'remote':>9} {'ratio':>6} | best: {'direct':>9} "
          f"{'shim':>6} {'remote':>6} | cpu: {'shim':>6} {'remote':>6}")
    for kind, per_path in rates.items():
        med = {p: statistics.median(v) for p, v in per_path.items()}
        best = {p: max(v) for p, v in per_path.items()}
        ratio = {p: statistics.median(a / d for a, d in zip(per_path[p], per_path["direct"], strict=True))
                 for p in ("shim", "remote")}
        per_cpu = {p: units[kind][p] / cpu[kind][p] for p in per_path}  # units per CPU-second
        result[kind] = {**med, "shim_ratio": ratio["shim"], "remote_ratio": ratio["remote"],
                        "best_shim_ratio": best["shim"] / best["direct"],
                        "best_remote_ratio": best["remote"] / best["direct"],
                        "cpu_shim_ratio": per_cpu["shim"] / per_cpu["direct"],
                        "cpu_remote_ratio": per_cpu["remote"] / per_cpu["direct"]}
        print(f"{kind:10} {med['direct']:9.1f} {med['shim']:9.1f} {ratio['shim']:6.3f} {med['remote']:9.1f} "
              f"{ratio['remote']:6.3f} | {best['direct']:15.1f} {best['shim'] / best['direct']:6.3f} "
              f"{best['remote'] / best['direct']:6.3f} | {result[kind]['cpu_shim_ratio']:11.3f} "
              f"{result[kind]['cpu_remote_ratio']:6.3f}   {unit[kind]}")
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
