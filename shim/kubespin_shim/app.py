"""A served Spin app: router + component runtimes + factors, answering HTTP exchanges."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from kubespin_shim.engine import WasmEngine
from kubespin_shim.errors import ShimError
from kubespin_shim.host.binding import Interface
from kubespin_shim.http import types as http_types
from kubespin_shim.http.server import Exchange
from kubespin_shim.http.types import IncomingRequest, ResponseOutparam
from kubespin_shim.manifest import AppManifest, HttpTrigger
from kubespin_shim.routing import (
    WELL_KNOWN_PREFIX,
    RouteMatch,
    Router,
    guest_request_headers,
    well_known_response,
)
from kubespin_shim.runtime import ComponentRuntime, Factor
from kubespin_shim.runtime_config import RuntimeConfig

log = logging.getLogger("kubespin.shim.app")


@dataclass
class ServeOptions:
    request_timeout: float = 30.0
    max_instance_memory: int | None = None
    components_to_retain: Sequence[str] = ()
    strip_client_spin_headers: bool = True


FactorLoader = Callable[[RuntimeConfig, Collection[str]], list[Factor]]


def served_triggers(app: AppManifest, components_to_retain: Sequence[str] = ()) -> list[HttpTrigger]:
    """The HTTP triggers ``kubespin up`` serves: all, or those of the ``--component-id`` components."""
    retain = set(components_to_retain)
    unknown = retain - set(app.components)
    if unknown:
        raise ShimError(
            f"--component-id names components that are not in the app: {sorted(unknown)}; "
            f"the app has {sorted(app.components)}"
        )
    return [t for t in app.http_triggers if not retain or t.component in retain]


class SpinHttpApp:
    def __init__(
        self,
        app: AppManifest,
        engine: WasmEngine,
        factors: Sequence[Factor],
        options: ServeOptions,
        runtime_config: RuntimeConfig | None = None,
        load_factors_for: FactorLoader | None = None,
    ) -> None:
        """``load_factors_for(rc, loaded)``: factors not yet loaded (``loaded``: their names) that a
        new runtime config's sections call for, built with it; see ``factors.optional``."""
        self.app = app
        self.runtime_config = runtime_config if runtime_config is not None else RuntimeConfig(None)
        self.options = options
        self.factors = list(factors)
        self._load_factors_for = load_factors_for
        triggered = served_triggers(app, options.components_to_retain)
        interfaces: dict[str, Interface] = {}
        for iface in http_types.INTERFACES:
            interfaces[iface.name] = iface
        for f in factors:
            for iface in f.interfaces:
                interfaces[iface.name] = iface
        self.runtimes: dict[str, ComponentRuntime] = {}
        for trig in triggered:
            if trig.component in self.runtimes:
                continue
            spec = app.components[trig.component]
            for f in factors:
                configure = getattr(f, "configure", None)
                if configure is not None:
                    configure(spec)
            self.runtimes[spec.id] = ComponentRuntime(
                spec, engine, interfaces, factors, options.request_timeout, options.max_instance_memory
            )
        public = [(t.route, t.component) for t in triggered if not t.private and t.route is not None]
        self.router = Router.build(public, base=app.http_base)
        for dup in self.router.duplicates:
            log.error("route %s will never be used", dup)
        for f in factors:
            # Factors that call back into the app (outbound HTTP to `self` and `*.spin.internal`).
            bind_app = getattr(f, "bind_app", None)
            if bind_app is not None:
                bind_app(self)

    def apply_runtime_config(self, rc: RuntimeConfig) -> None:
        """Switch every capability to a new runtime config, or to none of it.

        Each factor *stages* its new state first (validating it; raising ShimError to refuse); only
        when all accept are the staged states committed. Requests already running keep the state
        their context captured; new requests see the new one.
        """
        added = self._load_factors_for(rc, {f.name for f in self.factors}) if self._load_factors_for else []
        commits = [stage(rc) for f in self.factors if (stage := getattr(f, "stage", None)) is not None]
        for commit in commits:
            commit()
        # Built with (and so already holding) ``rc``; no served component links them: they only keep
        # validating their section on later changes.
        self.factors.extend(added)
        self.runtime_config = rc
        log.info("runtime config %s applied (digest %s)", rc.path, rc.digest[:12])

    def handle(self, ex: Exchange) -> None:
        req = ex.request
        path, _, _query = req.target.partition("?")
        if path.startswith(WELL_KNOWN_PREFIX):
            known = well_known_response(path, app_name=self.app.name, app_version=self.app.version)
            if known is not None:
                ex.respond_simple(known.status, known.body, list(known.headers))
                return
        match = self.router.route(path)
        if match is None:
            ex.respond_simple(404, b"Not Found\n")
            return
        self._serve(ex, match)

    def handle_chained(self, ex: Exchange, component_id: str) -> bool:
        """Local service chaining (``http://<component>.spin.internal/...``): run that component.

        As Spin's ``RouteMatch::synthetic``: no router, the whole path is the trailing wildcard of a
        ``/...`` route. False when the app does not serve ``component_id`` (unknown or not retained).
        """
        if component_id not in self.runtimes:
            return False
        path = ex.request.target.partition("?")[0]
        match = RouteMatch(
            component_id=component_id,
            matched_route="/...",
            component_route="",
            raw_component_route="/...",
            path_info=path,
            params=MappingProxyType({}),
            trailing=path,
        )
        self._serve(ex, match)
        return True

    def _serve(self, ex: Exchange, match: RouteMatch) -> None:
        req = ex.request
        runtime = self.runtimes[match.component_id]
        headers = partial(  # made if the guest reads them
            guest_request_headers,
            req.headers,
            match,
            scheme="http",
            path_and_query=req.target,
            client_addr=req.client_addr,
            strip_client_spin_headers=self.options.strip_client_spin_headers,
        )
        host = None  # the authority: the Host header as sent (names are lower-cased by the server)
        for name, value in req.headers:
            if name == "host":
                host = value
                break
        incoming = IncomingRequest(req.method, req.target, "HTTP", host, headers, ex.read_body)
        outparam = ResponseOutparam(ex)
        t0 = time.perf_counter()
        outcome = runtime.handle(incoming, outparam)
        elapsed = time.perf_counter() - t0
        if outcome.pool_exhausted:
            log.warning(
                "component %s: no instance slot free for %s %s (%s); answered 503. Raise "
                "SPIN_WASMTIME_INSTANCE_COUNT (and SPIN_WASMTIME_TOTAL_MEMORIES/TABLES) or scale out",
                runtime.spec.id, req.method, req.target, outcome.message,
            )
            ex.respond_simple(503, b"Service Unavailable: too many requests in flight\n", [("retry-after", "1")])
            return
        if outcome.trapped:
            log.error(
                "component %s trapped on %s %s: %s", runtime.spec.id, req.method, req.target, outcome.message
            )
            if not ex.started:
                ex.respond_simple(500, b"Internal Server Error\n")
            else:
                ex.broken = True  # head already sent: cut the connection so the client sees the failure
            return
        if not outparam.set_called:
            log.error("component %s returned without setting a response for %s", runtime.spec.id, req.target)
            ex.respond_simple(500, b"Internal Server Error\n")
            return
        if outparam.error is not None:
            return
        resp = outparam.response
        assert resp is not None
        body = resp.body_
        if body is None:
            ex.finish(None)
        elif not body.finished:
            # WASI: a body never finished is an error; do not pretend the response completed.
            log.error("component %s did not finish the response body for %s", runtime.spec.id, req.target)
            ex.broken = True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s in %.1f ms", req.method, req.target, ex.status, elapsed * 1000)
