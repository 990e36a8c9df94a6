"""Where a model's files are, in Spin's models directory layout.

``<models dir>/<architecture>/<model name>/`` for inferencing models (Spin walks every
architecture directory for a model directory of that name; only ``llama`` is an architecture it
runs) and ``<models dir>/all-minilm-l6-v2/`` for the embeddings model. Spin's llama directory holds
safetensors; kubespin runs llama.cpp, so it holds one ``.gguf`` file (or the first part of a split
GGUF, ``…-00001-of-0000N.gguf``). The error cases and texts are Spin's (``walk_registry_for_model``).
"""

from __future__ import annotations

import re
from pathlib import Path

from kubespin_shim.llm.types import LlmError

SUPPORTED_ARCHES = ("llama",)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def find_model_dir(registry: Path, model: str) -> tuple[Path, str]:
    """The model's directory and architecture, or Spin's error for a missing/unsupported one."""
    try:
        arch_dirs = sorted(registry.iterdir())
    except OSError as e:
        raise LlmError.runtime(
            f"Could not read model registry directory '{registry}': {e.strerror or e}"
        ) from None
    for arch_dir in arch_dirs:
        if not arch_dir.is_dir():
            continue
        try:
            candidates = sorted(arch_dir.iterdir())
        except OSError as e:
            raise LlmError.runtime(f"Error reading architecture directory in model registry: {e}") from None
        for model_dir in candidates:
            if model_dir.name == model and model_dir.is_dir():
                if arch_dir.name not in SUPPORTED_ARCHES:
                    raise LlmError.not_supported()
                return model_dir, arch_dir.name
    raise LlmError.invalid_input(f"no model directory found in registry for model '{model}'")


def find_gguf(model_dir: Path) -> Path:
    """The GGUF file llama.cpp should open in ``model_dir``."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix == ".gguf" and p.is_file())
    if not files:
        raise LlmError.runtime(
            f"no .gguf file in model directory '{model_dir}': kubespin runs llama models with llama.cpp; "
            "put the model's GGUF file there"
        )
    if len(files) == 1:
        return files[0]
    splits = [p for p in files if (m := _SPLIT.search(p.name)) and m.group(1) == "00001"]
    if len(splits) == 1 and all(_SPLIT.search(p.name) for p in files):
        return splits[0]
    names = ", ".join(p.name for p in files)
    raise LlmError.runtime(f"several .gguf files in model directory '{model_dir}' ({names}): keep exactly one")


def embeddings_dir(registry: Path, model: str) -> Path:
    """The embeddings model's directory (Spin: ``<registry>/<model>``; it must exist)."""
    path = registry / model
    if not path.exists():
        raise LlmError.runtime(f"The directory expected to house the embeddings models '{path}' does not exist.")
    return path
