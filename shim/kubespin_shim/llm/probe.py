"""``python -m kubespin_shim.llm.probe [MODEL.gguf]``: prove llama-cpp-python runs here.

Run by :func:`kubespin_shim.llm.detect.run_probe` in a subprocess (a crash here must not kill the
shim). Imports the extension, loads the model (default: the tiny random llama, written to the cache
on first use) and generates two tokens. Prints one JSON line:
``{"imported": bool, "ok": bool, "detail": str, "version": str | null}``; exits 0 whenever it could say so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out: dict[str, object] = {"imported": False, "ok": False, "detail": "", "version": None}
    try:
        import llama_cpp
    except Exception as e:  # an ImportError, or an OSError from a shared library that does not load
        out["detail"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out))
        return 0
    out["imported"] = True
    out["version"] = getattr(llama_cpp, "__version__", None)
    try:
        if len(argv) > 1:
            model = Path(argv[1])
        else:
            from kubespin_shim.llm.tiny_gguf import cached_tiny_llama

            model = cached_tiny_llama()
        llm = llama_cpp.Llama(str(model), n_ctx=64, n_threads=1, verbose=False)
        result = llm.create_completion("ok", max_tokens=2, temperature=0.0)
        n = result["usage"]["completion_tokens"]
        out["ok"] = True
        out["detail"] = f"{model.name}: generated {n} token(s)"
    except ImportError as e:
        out["detail"] = f"cannot write the probe model ({e}); install the kubespin[llm] extra"
    except Exception as e:
        out["detail"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
