"""``kubespin llm-serve``: the command line of :mod:`kubespin_shim.llm.server`.

Kept apart from the server so that registering the command costs ``kubespin up`` nothing: the HTTP
server, the engines and llama.cpp are imported only when the command runs.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

TOKEN_ENV = "KUBESPIN_LLM_AUTH_TOKEN"


def _read_token(token: str | None, token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise click.ClickException(f"cannot read --auth-token-file {token_file}: {e.strerror or e}") from None
    if not token:
        raise click.ClickException(
            f"an auth token is required: --auth-token, --auth-token-file or {TOKEN_ENV} "
            "(the same value as auth_token in the apps' [llm_compute])"
        )
    return token


@click.command("llm-serve", context_settings={"show_default": True})
@click.option("--listen", default="127.0.0.1:3100", help="HOST:PORT to serve on.")
@click.option("--ai-models-dir", envvar="KUBESPIN_AI_MODELS_DIR", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Models laid out as Spin's: <dir>/llama/<model>/<file>.gguf, <dir>/all-minilm-l6-v2/.")
@click.option("--auth-token", envvar=TOKEN_ENV, default=None, help="The bearer token clients must send.")
@click.option("--auth-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the token from a file (a mounted Secret).")
@click.option("--preload", multiple=True, metavar="MODEL", help="Load these models before serving.")
@click.option("--log-level", envvar="KUBESPIN_LOG_LEVEL", default="info")
def llm_serve(
    listen: str,
    ai_models_dir: Path,
    auth_token: str | None,
    auth_token_file: Path | None,
    preload: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve Spin's remote_http LLM protocol from this node's local llama.cpp backend."""
    from kubespin_shim.cli import _parse_listen, configure_logging
    from kubespin_shim.llm.detect import detect_local_support
    from kubespin_shim.llm.local import EMBEDDINGS_MODELS, LocalEngine
    from kubespin_shim.llm.server import LlmApi, LlmHttpServer
    from kubespin_shim.llm.types import LlmError

    configure_logging(log_level)
    token = _read_token(auth_token, auth_token_file)
    host, port = _parse_listen(listen)
    support = detect_local_support()
    if not support.supported:
        raise click.ClickException(f"this node cannot run local inference: {support.reason}")
    engine = LocalEngine(ai_models_dir.resolve(), detect_local_support)
    for model in preload:
        try:
            engine.embedder(model) if model in EMBEDDINGS_MODELS else engine.llama(model)
        except LlmError as e:
            raise click.ClickException(f"--preload {model}: {e}") from None
    api = LlmApi(engine, token, {"local": support.reason, "models_dir": str(engine.models_dir)})
    server = LlmHttpServer((host, port), api)
    click.echo(f"Serving Spin LLM API (remote_http) on {server.url}", err=True)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()


@click.command("llm-detect")
@click.option("--no-probe", is_flag=True, help="Skip the subprocess that loads a model (a partial answer).")
def llm_detect(no_probe: bool) -> None:
    """Print whether this node can run local LLM inference, why, and the node labels to publish (JSON).

    Exits 0 either way; the answer is in the JSON (``supported``, ``reason``, ``labels``)."""
    import json
    from dataclasses import asdict

    from kubespin_shim.llm.detect import decide, gather_facts, local_disabled, node_labels

    support = decide(gather_facts(probe=not no_probe), disabled=local_disabled())
    out = {
        "supported": support.supported,
        "reason": support.reason,
        "labels": node_labels(support),
        "facts": asdict(support.facts),
    }
    click.echo(json.dumps(out, indent=2))
