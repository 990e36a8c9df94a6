"""``fermyon:spin/redis`` host functions against a real redis-server on 127.0.0.1."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
import redis
from kubespin_shim.host.binding import CallContext
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.outbound import redis_client
from kubespin_shim.outbound.policy import ComponentPolicy, RequestHosts
from kubespin_shim.outbound.redis_client import Connection

from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


def context(hosts: list[str]) -> CallContext:
    ctx = CallContext("chat")
    policy = ComponentPolicy("chat", hosts, ["chat"])
    ctx.extras[redis_client.KEY] = redis_client.RedisRequestState("chat", RequestHosts(policy, lambda: None))
    return ctx


def open_ok(ctx: CallContext, address: str) -> Connection:
    result = Connection.open(ctx, address)
    assert isinstance(result, Ok), result
    return result.value


def test_every_operation(server: RedisServer) -> None:
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    conn = open_ok(ctx, server.url(3))
    direct = server.client(3)
    assert conn.set("chat:1", b"hello \x00\xff") == Ok(None)
    assert direct.get("chat:1") == b"hello \x00\xff"  # landed in database 3, bytes intact
    assert conn.get("chat:1") == Ok(b"hello \x00\xff")
    assert conn.get("chat:none") == Ok(None)
    assert [conn.incr("n"), conn.incr("n")] == [Ok(1), Ok(2)]
    assert conn.sadd("s", ["a", "b", "c", "a"]) == Ok(3)
    assert conn.srem("s", ["b", "zz"]) == Ok(1)
    assert sorted(conn.smembers("s").value) == ["a", "c"]
    assert conn.smembers("nothing") == Ok([])
    pubsub = direct.pubsub()
    pubsub.subscribe("room")
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert conn.publish("room", b"hi there") == Ok(None)
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"hi there"
    pubsub.close()
    assert conn.delete(["chat:1", "n", "s", "absent"]) == Ok(3)
    assert direct.exists("chat:1", "n", "s") == 0


def test_execute_results_are_typed_and_flattened(server: RedisServer) -> None:
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    conn = open_ok(ctx, server.url(4))
    b = lambda s: Variant("binary", s)  # noqa: E731
    assert conn.execute("SET", [b(b"k"), b(b"v")]) == Ok([Variant("status", "OK")])
    assert conn.execute("GET", [b(b"k")]) == Ok([b(b"v")])  # bulk string, not status
    assert conn.execute("GET", [b(b"missing")]) == Ok([Variant("nil")])
    assert conn.execute("INCRBY", [b(b"c"), Variant("int64", 40)]) == Ok([Variant("int64", 40)])
    assert conn.execute("PING", []) == Ok([Variant("status", "PONG")])
    conn.execute("RPUSH", [b(b"l"), b(b"x"), b(b"y")])
    assert conn.execute("LRANGE", [b(b"l"), Variant("int64", 0), Variant("int64", -1)]) == Ok([b(b"x"), b(b"y")])
    bad = conn.execute("NOSUCHCOMMAND", [])
    assert isinstance(bad, Err) and bad.value.tag == "other" and "unknown command" in bad.value.value


def test_type_errors(server: RedisServer) -> None:
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    conn = open_ok(ctx, server.url(5))
    conn.set("text", b"not a number")
    assert conn.incr("text") == Err(Variant("type-error"))
    assert conn.sadd("text", ["x"]) == Err(Variant("type-error"))
    assert conn.smembers("text") == Err(Variant("type-error"))


def test_denied_and_invalid_addresses(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    with caplog.at_level(logging.WARNING, logger="kubespin.shim.outbound"):
        assert Connection.open(ctx, "redis://127.0.0.1:1") == Err(Variant("invalid-address"))
    assert "add \"redis://127.0.0.1:1\" to allowed_outbound_hosts of component 'chat'" in caplog.text
    everything = context(["*://*:*"])
    assert Connection.open(everything, "http://127.0.0.1:80") == Err(Variant("invalid-address"))  # not redis
    # the default port needs no entry port: redis://host means 6379
    assert context(["redis://127.0.0.1"]).extras[redis_client.KEY].hosts.check_url("redis://127.0.0.1:6379", "redis")


def test_server_down_is_other_and_recovers() -> None:
    with RedisServer() as r:
        ctx = context([f"redis://127.0.0.1:{r.port}"])
        r.stop()
        down = Connection.open(ctx, r.url(0))
        assert isinstance(down, Err) and down.value.tag == "other", down
        r.start()
        conn = open_ok(ctx, r.url(0))
        assert conn.set("back", b"1") == Ok(None)


def test_connections_go_back_to_the_pool(server: RedisServer) -> None:
    address = server.url(6)
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    conns = [open_ok(ctx, address) for _ in range(3)]
    pool = redis_client.pool_for(address)
    assert len(pool._in_use_connections) == 3
    conns[0].close()  # the guest dropped one
    assert len(pool._in_use_connections) == 2
    del conns
    ctx.extras.clear()  # the request ended with two handles never dropped
    gc.collect()
    assert len(pool._in_use_connections) == 0
    assert open_ok(context([f"redis://127.0.0.1:{server.port}"]), address).get("x") == Ok(None)


def test_too_many_connections(server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS_PER_REQUEST", 2)
    ctx = context([f"redis://127.0.0.1:{server.port}"])
    first = open_ok(ctx, server.url(7))
    open_ok(ctx, server.url(7))
    assert Connection.open(ctx, server.url(7)) == Err(Variant("too-many-connections"))
    first.close()
    open_ok(ctx, server.url(7))
    assert isinstance(first.get("x"), Err)  # a closed handle answers with an error, not a crash


def test_status_parser_is_in_use() -> None:
    # Without it, SET's "+OK" would come back as binary; guard against a redis-py layout change.
    assert redis_client._status_parser() is not None
    assert issubclass(redis_client.Status, bytes)
    assert redis.__version__
