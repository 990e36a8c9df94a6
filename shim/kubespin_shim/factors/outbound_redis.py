"""The outbound Redis factor: ``fermyon:spin/redis@2.0.0`` under ``allowed_outbound_hosts``.

Same allow-list as outbound HTTP (a component opens ``redis://host:port`` only if an entry
allows it); see ``kubespin_shim.outbound.redis_client`` for the operations and their errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from kubespin_shim.factors.outbound_http import OutboundPolicies
from kubespin_shim.host.binding import CallContext, Deferred, Interface
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.outbound import redis_client


class OutboundRedisFactor:
    name = "outbound-redis"
    interfaces: Sequence[Interface] = redis_client.INTERFACES

    def __init__(self, app: AppManifest) -> None:
        self.policies = OutboundPolicies(app)
        self._deferred: dict[str, Deferred] = {}

    @classmethod
    def from_app(cls, app: AppManifest) -> OutboundRedisFactor:
        return cls(app)

    def configure(self, component: ComponentSpec) -> None:
        self.policies.configure(component)

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        deferred = self._deferred.get(component.id)
        if deferred is None:
            deferred = self._deferred[component.id] = Deferred(partial(self._state, component))
        ctx.extras[redis_client.KEY] = deferred  # made when the request first opens a connection

    def _state(self, component: ComponentSpec, ctx: CallContext) -> redis_client.RedisRequestState:
        return redis_client.RedisRequestState(component.id, self.policies.request_hosts(ctx, component))
