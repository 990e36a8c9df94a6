"""``kubespin up``: serve a Spin app the way ``spin up`` does, with Spin's flags and environment."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kubespin_shim.errors import ShimError

if TYPE_CHECKING:
    from kubespin_shim.http.server import HttpServer

log = logging.getLogger("kubespin.shim")

DEFAULT_LISTEN = "127.0.0.1:3000"


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{value!r} is not HOST:PORT (for example 127.0.0.1:3000)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _memory_limit(value: str | None) -> int | None:
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(
            f"SPIN_MAX_INSTANCE_MEMORY={value!r} is not a number of bytes", param_hint="SPIN_MAX_INSTANCE_MEMORY"
        ) from None
    if n <= 0:
        raise click.BadParameter("SPIN_MAX_INSTANCE_MEMORY must be positive", param_hint="SPIN_MAX_INSTANCE_MEMORY")
    return n


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.command("up", context_settings={"show_default": True})
@click.option(
    "-f", "--from", "source", default=".", metavar="APP",
    help="A directory holding spin.toml, a spin.toml path, an OCI image layout (dir or tarball), "
    "or a registry reference HOST[:PORT]/REPO[:TAG|@DIGEST] (pulled, verified and cached by digest).",
)
@click.option("--registry-auth", type=click.Path(dir_okay=False), default=None,
              help="Docker config / .dockerconfigjson with registry credentials (env KUBESPIN_REGISTRY_AUTH; "
              "default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).")
@click.option("--insecure", is_flag=True, default=False,
              help="Allow plain HTTP to a non-loopback registry (loopback registries always may).")
@click.option("--listen", envvar="SPIN_HTTP_LISTEN_ADDR", default=DEFAULT_LISTEN, help="HOST:PORT to serve on.")
@click.option("--runtime-config-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Spin runtime-config.toml (stores, databases, LLM, variable providers); reloaded when it changes.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where default stores live (default: .spin beside spin.toml).")
@click.option("--variable", "variables", multiple=True, metavar="NAME=VALUE",
              help="Set an application variable (or @file.json / @file.toml with several).")
@click.option("--component-id", "component_ids", multiple=True, metavar="ID",
              help="Serve only these components (env SPIN_COMPONENTS_TO_RETAIN, comma-separated).")
@click.option("--request-timeout", envvar="KUBESPIN_REQUEST_TIMEOUT", type=float, default=30.0,
              help="Seconds a request may run in the guest before it is stopped.")
@click.option("--ai-models-dir", envvar="KUBESPIN_AI_MODELS_DIR", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Local LLM models (<dir>/llama/<model>/*.gguf); default: <state dir>/ai-models.")
@click.option("--http-concurrency", envvar="KUBESPIN_HTTP_CONCURRENCY", type=click.IntRange(min=1), default=None,
              help="Requests run at once while none waits for I/O (default: the CPUs this process may use, "
              "a cgroup CPU limit included); more workers are added for requests that wait.")
@click.option("--shutdown-delay", envvar="KUBESPIN_SHUTDOWN_DELAY", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to keep accepting requests after SIGTERM before stopping (responses then close "
              "their connections), so that load balancers stop sending traffic first; 0: stop at once.")
@click.option("--log-level", envvar="KUBESPIN_LOG_LEVEL", default="info")
def up(
    source: str,
    listen: str,
    runtime_config_file: Path | None,
    state_dir: Path | None,
    variables: tuple[str, ...],
    component_ids: tuple[str, ...],
    request_timeout: float,
    ai_models_dir: Path | None,
    http_concurrency: int | None,
    shutdown_delay: float,
    log_level: str,
    registry_auth: str | None,
    insecure: bool,
) -> None:
    """Serve a Spin app's HTTP components on wasmtime."""
    configure_logging(log_level)
    # The registry client reads these (a pod gets them from the operator's env instead of flags).
    if registry_auth:
        os.environ["KUBESPIN_REGISTRY_AUTH"] = registry_auth
    if insecure:
        os.environ["KUBESPIN_INSECURE_REGISTRIES"] = "*"
    host, port = _parse_listen(listen)
    retain = list(component_ids)
    if not retain and os.environ.get("SPIN_COMPONENTS_TO_RETAIN"):
        retain = [c.strip() for c in os.environ["SPIN_COMPONENTS_TO_RETAIN"].split(",") if c.strip()]
    try:
        server, app = build_server(
            source=source,
            host=host,
            port=port,
            runtime_config_file=runtime_config_file,
            state_dir=state_dir,
            cli_variables=list(variables),
            components_to_retain=retain,
            request_timeout=request_timeout,
            max_instance_memory=_memory_limit(os.environ.get("SPIN_MAX_INSTANCE_MEMORY")),
            ai_models_dir=ai_models_dir,
            http_concurrency=http_concurrency,
        )
    except ShimError as e:
        raise click.ClickException(str(e)) from None
    addr = server.address
    click.echo(f"Serving http://{addr[0]}:{addr[1]}", err=True)
    click.echo("Available Routes:", err=True)
    for route, component in app.router.routes:
        click.echo(f"  {component}: http://{addr[0]}:{addr[1]}{route or '/'}", err=True)

    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            log.warning("received signal %s again: exiting without waiting for requests in flight", signum)
            os._exit(1)
        stopping.set()
        if shutdown_delay > 0:
            # Kubernetes removes a terminating pod from its Service's endpoints while it sends SIGTERM;
            # proxies and load balancers learn of it a moment later and keep sending until then.
            server.start_draining()
            log.info("received signal %s: still serving for %gs (--shutdown-delay) while load balancers catch "
                     "up; responses now close their connections", signum, shutdown_delay)
            threading.Thread(target=_shutdown_after, args=(server, shutdown_delay, request_timeout),
                             daemon=True).start()
            return
        log.info("received signal %s: no new requests; those in flight may finish (up to %gs)", signum,
                 request_timeout)
        threading.Thread(target=server.shutdown, daemon=True).start()

    watcher = None
    if runtime_config_file is not None:
        from kubespin_shim.runtime_config import RuntimeConfigWatcher

        watcher = RuntimeConfigWatcher(runtime_config_file, app.apply_runtime_config, initial=app.runtime_config)
        watcher.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # What start-up built (the app, its linkers, wasmtime-py's type objects: ~33K objects for js-hello)
    # lives as long as the process. Frozen, the cyclic collector stops walking it: without this a full
    # collection paused every thread for ~28 ms every few thousand js-hello requests (bench/gc_pauses.py).
    gc.freeze()
    server.serve_forever()
    # A pod being replaced gets SIGTERM while requests may be running: they finish (a guest cannot run
    # longer than the request timeout), then the process exits; Kubernetes' grace period still applies.
    left = server.wait_for_requests(request_timeout)
    if left:
        log.warning("exiting with %d requests still running after %gs", left, request_timeout)


def _shutdown_after(server: HttpServer, delay: float, request_timeout: float) -> None:
    time.sleep(delay)
    log.info("shutdown delay over: no new requests; those in flight may finish (up to %gs)", request_timeout)
    server.shutdown()


def build_server(
    *,
    source: str,
    host: str,
    port: int,
    runtime_config_file: Path | None,
    state_dir: Path | None,
    cli_variables: list[str],
    components_to_retain: list[str],
    request_timeout: float,
    max_instance_memory: int | None,
    ai_models_dir: Path | None = None,
    http_concurrency: int | None = None,
):  # type: ignore[no-untyped-def]
    """Load, validate and link everything before binding the port: a broken app fails at start."""
    # The imports below create ~30K objects that live as long as the process (modules, classes,
    # wasmtime-py's bindings). The cyclic collector would scan them ~50 times while they load (~11 ms
    # of a cold start) to find ~470 small cycles (~80 KB, of enum and class creation); so it is off
    # while they load, and what they made is frozen (never scanned again, those cycles included).
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        from kubespin_shim.app import ServeOptions, SpinHttpApp, served_triggers
        from kubespin_shim.engine import WasmEngine
        from kubespin_shim.factors.optional import FactorPaths, factors_for_sections, needed_factors
        from kubespin_shim.factors.outbound_http import OutboundHttpFactor
        from kubespin_shim.factors.variables import VariablesFactor
        from kubespin_shim.factors.wasi import WasiFactor
        from kubespin_shim.host.binding import unversioned
        from kubespin_shim.http.server import HttpServer
        from kubespin_shim.manifest import load_app
        from kubespin_shim.runtime_config import load_runtime_config
    finally:
        gc.freeze()
        if gc_enabled:
            gc.enable()

    t0 = time.perf_counter()
    app = load_app(source)  # an OCI layout unpacks under KUBESPIN_WORK_DIR or the temp dir
    runtime_config = load_runtime_config(runtime_config_file)
    engine = WasmEngine()
    served_ids = dict.fromkeys(t.component for t in served_triggers(app, components_to_retain))
    served = [app.components[c] for c in served_ids]
    imports: set[str] = set()  # what the served components import decides which factors to load
    for spec in served:
        component, _ = engine.component(spec.source)
        imports.update(unversioned(name) for name in component.type.imports(engine.engine))
    paths = FactorPaths(state_dir=state_dir, ai_models_dir=ai_models_dir)
    factors = [
        WasiFactor(),
        VariablesFactor.from_app(app, runtime_config, cli_variables=cli_variables, environ=os.environ),
        OutboundHttpFactor.from_app(app),
        *needed_factors(app, served, imports, runtime_config, paths),
    ]
    options = ServeOptions(
        request_timeout=request_timeout,
        max_instance_memory=max_instance_memory,
        components_to_retain=components_to_retain,
    )
    spin_app = SpinHttpApp(
        app,
        engine,
        factors,
        options,
        runtime_config,
        load_factors_for=lambda rc, loaded: factors_for_sections(app, rc, loaded, paths),
    )
    server = HttpServer(host, port, spin_app.handle, concurrency=http_concurrency)
    log.info(
        "app %s ready in %.0f ms (capabilities: %s)",
        app.name,
        (time.perf_counter() - t0) * 1000,
        ", ".join(f.name for f in factors),
    )
    return server, spin_app
