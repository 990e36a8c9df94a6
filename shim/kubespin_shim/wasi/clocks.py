"""wasi:clocks (wall and monotonic) and wasi:random."""

from __future__ import annotations

import os
import random as _random
import time

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.wasi.io import Pollable

wall = Interface("wasi:clocks/wall-clock")


@wall.func("now")
def wall_now(ctx: CallContext) -> dict[str, int]:
    ns = time.time_ns()
    return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}


@wall.func("resolution")
def wall_resolution(ctx: CallContext) -> dict[str, int]:
    return {"seconds": 0, "nanoseconds": 1}


monotonic = Interface("wasi:clocks/monotonic-clock")
monotonic.func("now", needs_ctx=False)(time.monotonic_ns)  # JS guests ask ~20 times a request: no Python frame
monotonic.func("resolution", needs_ctx=False)(lambda: max(1, round(time.get_clock_info("monotonic").resolution * 1e9)))
# Where the C accelerator is built, these never enter Python (host/_native.c; the lines above are the fallback).
monotonic.native("now", "monotonic_now")
monotonic.native("resolution", "monotonic_resolution")
monotonic.func("subscribe-instant")(lambda ctx, when: Pollable(when))
monotonic.func("subscribe-duration")(lambda ctx, d: Pollable(time.monotonic_ns() + d))

random_iface = Interface("wasi:random/random")
random_iface.func("get-random-bytes")(lambda ctx, n: os.urandom(n))
random_iface.func("get-random-u64")(lambda ctx: int.from_bytes(os.urandom(8), "little"))
random_iface.native("get-random-u64", "random_u64")

insecure = Interface("wasi:random/insecure")
insecure.func("get-insecure-random-bytes")(lambda ctx, n: _random.randbytes(n))
insecure.func("get-insecure-random-u64")(lambda ctx: _random.getrandbits(64))

insecure_seed = Interface("wasi:random/insecure-seed")
insecure_seed.func("insecure-seed")(lambda ctx: (_random.getrandbits(64), _random.getrandbits(64)))

INTERFACES = [wall, monotonic, random_iface, insecure, insecure_seed]
