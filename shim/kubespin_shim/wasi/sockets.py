"""wasi:sockets — denied. Spin apps reach the network only through outbound HTTP/Redis hosts
allowed in the manifest; raw sockets are refused with ``access-denied``."""

from __future__ import annotations

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, HostResource


class Network(HostResource):
    pass


network = Interface("wasi:sockets/network")
network.resource("network", Network)

instance_network = Interface("wasi:sockets/instance-network")
instance_network.func("instance-network")(lambda ctx: Network())

tcp_create = Interface("wasi:sockets/tcp-create-socket")
tcp_create.func("create-tcp-socket")(lambda ctx, family: Err("access-denied"))

udp_create = Interface("wasi:sockets/udp-create-socket")
udp_create.func("create-udp-socket")(lambda ctx, family: Err("access-denied"))

lookup = Interface("wasi:sockets/ip-name-lookup")


@lookup.func("resolve-addresses")
def resolve_addresses(ctx: CallContext, net: Network, name: str) -> Err:
    return Err("access-denied")


INTERFACES = [network, instance_network, tcp_create, udp_create, lookup]
