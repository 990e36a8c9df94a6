"""``[llm_compute]`` in runtime-config.toml, read as Spin reads it, and the engine it selects.

* no ``[llm_compute]``: the local engine (Spin's default engine creator), like ``type = "spin"``;
* ``type = "spin"``: local models in ``<models dir>``;
* ``type = "remote_http"``: ``url`` and ``auth_token`` (both required), ``api_type`` = ``"default"``
  (Spin's protocol) or ``"open_ai"``.

The models directory is, first match wins: ``--ai-models-dir`` / ``KUBESPIN_AI_MODELS_DIR``, else
``<state dir>/ai-models`` where the state dir is Spin's (``--state-dir``, the file's ``state_dir``,
else ``.spin`` beside spin.toml), else ``./ai-models`` when the state dir is turned off
(``state_dir = ""``), as Spin does with its working directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubespin_shim.llm.remote_http import API_TYPES
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError

MODELS_DIR_ENV = "KUBESPIN_AI_MODELS_DIR"
SECTION = "llm_compute"


@dataclass(frozen=True)
class LocalSpec:
    models_dir: Path


@dataclass(frozen=True)
class RemoteSpec:
    url: str
    auth_token: str
    api_type: str = "default"

    def __repr__(self) -> str:  # never log the token
        return f"RemoteSpec(url={self.url!r}, api_type={self.api_type!r})"


EngineSpec = LocalSpec | RemoteSpec


def models_dir(state_dir: Path | None, flag: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if flag is not None:
        return Path(os.path.abspath(flag))
    if env.get(MODELS_DIR_ENV):
        return Path(os.path.abspath(env[MODELS_DIR_ENV]))
    return (state_dir if state_dir is not None else Path(os.getcwd())) / "ai-models"


def engine_spec(rc: RuntimeConfig, local_models_dir: Path) -> EngineSpec:
    """The engine the runtime config asks for; RuntimeConfigError (refusing the file) when it is malformed."""
    value: Any = rc.data.get(SECTION)
    if value is None:
        return LocalSpec(local_models_dir)
    if not isinstance(value, Mapping):
        raise RuntimeConfigError(rc.path, SECTION, "expected a table ([llm_compute])")
    kind = value.get("type")
    if kind == "spin":
        unknown = sorted(set(value) - {"type"})
        if unknown:
            raise RuntimeConfigError(rc.path, SECTION, f"unknown field(s) {unknown} for type = \"spin\"")
        return LocalSpec(local_models_dir)
    if kind == "remote_http":
        for key in ("url", "auth_token"):
            if not isinstance(value.get(key), str):
                raise RuntimeConfigError(
                    rc.path, f"{SECTION}.{key}", f"missing or not a string (remote_http needs `{key}`)"
                )
        api_type = value.get("api_type", "default")
        if api_type not in API_TYPES:
            raise RuntimeConfigError(
                rc.path, f"{SECTION}.api_type", f"unknown variant {api_type!r}, expected one of {list(API_TYPES)}"
            )
        unknown = sorted(set(value) - {"type", "url", "auth_token", "api_type"})
        if unknown:
            raise RuntimeConfigError(rc.path, SECTION, f"unknown field(s) {unknown} for type = \"remote_http\"")
        url = value["url"]
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RuntimeConfigError(rc.path, f"{SECTION}.url", f"not an absolute http(s) URL: {url!r}")
        return RemoteSpec(url, value["auth_token"], api_type)
    if kind is None:
        raise RuntimeConfigError(rc.path, SECTION, 'missing field `type` (type = "spin" or type = "remote_http")')
    raise RuntimeConfigError(rc.path, f"{SECTION}.type", f"unknown variant {kind!r}, expected `spin` or `remote_http`")


def needs_local_inference(ai_models: Iterable[str], rc: RuntimeConfig) -> bool:
    """True when an app must run on a node that can infer locally: some component lists ``ai_models``
    and the runtime config leaves ``[llm_compute]`` local (absent or ``type = "spin"``). For the operator:
    such SpinApps get a node selector on :data:`kubespin_shim.llm.detect.LABEL` = ``"true"``."""
    if not any(True for _ in ai_models):
        return False
    value = rc.data.get(SECTION)
    return value is None or (isinstance(value, Mapping) and value.get("type") == "spin")
