"""The outbound HTTP factor: ``wasi:http/outgoing-handler`` under ``allowed_outbound_hosts``.

Per app (at start): every served component's allow-list is parsed and validated (a bad entry
stops the shim with the component and the entry), and service chaining is checked against the
components this process serves (``--component-id``), as Spin's trigger does. Per request: the
component's allow-list view and the app, for in-process ``self`` / ``*.spin.internal`` requests.

``fermyon:spin/http`` (Spin 1's outbound HTTP) is not implemented: neither spin-sdk 3.4.1 nor
the JS build-tools 1.0.7 import it; a component that does still links, and gets the
interface's error naming the missing feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from kubespin_shim.errors import ShimError
from kubespin_shim.factors.variables import KEY as VARIABLES_KEY
from kubespin_shim.host.binding import CallContext, Deferred, Interface
from kubespin_shim.lazy import lazy_import
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.outbound import wasi_http

if TYPE_CHECKING:
    from kubespin_shim.outbound.policy import ComponentPolicy, RequestHosts

# The allow-list machinery loads with the first component that has allowed_outbound_hosts, or with
# the first outbound call (see wasi_http).
policy_module = lazy_import("kubespin_shim.outbound.policy")


class OutboundPolicies:
    """Each component's :class:`ComponentPolicy`, built once (shared shape for HTTP and Redis)."""

    def __init__(self, app: AppManifest) -> None:
        self.app = app
        self._policies: dict[str, ComponentPolicy] = {}

    def configure(self, component: ComponentSpec) -> ComponentPolicy:
        policy = self._policies.get(component.id)
        if policy is None:
            policy = policy_module.ComponentPolicy(
                component.id, component.allowed_outbound_hosts, list(self.app.components), self.app.variables
            )
            self._policies[component.id] = policy
        return policy

    def request_hosts(self, ctx: CallContext, component: ComponentSpec) -> RequestHosts:
        extras = ctx.extras
        return policy_module.RequestHosts(
            self.configure(component), lambda: policy_module.app_renderer(extras.get(VARIABLES_KEY))
        )


def check_service_chaining(app: AppManifest, retained: Sequence[str]) -> None:
    """Spin's ``validate_service_chaining_for_components``: a served component may not chain to one
    that this process does not serve (templated entries are skipped, as in Spin)."""
    if not retained:
        return
    for cid in retained:
        component = app.components.get(cid)
        if component is None:
            continue
        for host in component.allowed_outbound_hosts:
            if "{{" in host or "://" not in host:
                continue
            authority = host.split("://", 1)[1].split("/", 1)[0]
            target = wasi_http.allowed_hosts.service_chaining_target(authority)
            if target is None or target in retained:
                continue
            if target == "*":
                raise ShimError(
                    f"Selected component '{cid}' cannot use wildcard service chaining: "
                    'allowed_outbound_hosts = ["http://*.spin.internal"]'
                )
            raise ShimError(
                f"Selected component '{cid}' cannot use service chaining to unselected component: "
                f'allowed_outbound_hosts = ["http://{target}.spin.internal"]'
            )


class OutboundHttpFactor:
    name = "outbound-http"
    interfaces: Sequence[Interface] = wasi_http.INTERFACES

    def __init__(self, app: AppManifest) -> None:
        self.policies = OutboundPolicies(app)
        self._app: Any = None
        self._deferred: dict[str, Deferred] = {}

    @classmethod
    def from_app(cls, app: AppManifest) -> OutboundHttpFactor:
        return cls(app)

    def configure(self, component: ComponentSpec) -> None:
        """Parse and validate the component's allow-list now, so a bad entry fails at start.

        A component without one can reach nothing: its (empty) policy is made on its first call.
        """
        if component.allowed_outbound_hosts:
            self.policies.configure(component)

    def bind_app(self, app: Any) -> None:
        """The served app (a SpinHttpApp), for in-process requests; checks service chaining."""
        check_service_chaining(self.policies.app, list(app.options.components_to_retain))
        self._app = app

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        deferred = self._deferred.get(component.id)
        if deferred is None:
            deferred = self._deferred[component.id] = Deferred(partial(self._state, component))
        ctx.extras[wasi_http.KEY] = deferred  # made on the request's first outbound call

    def _state(self, component: ComponentSpec, ctx: CallContext) -> wasi_http.HttpRequestState:
        hosts = self.policies.request_hosts(ctx, component)
        return wasi_http.HttpRequestState(component.id, hosts, self._app)
