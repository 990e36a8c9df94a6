"""wasi:http fields: what a guest may put in headers and trailers, and the error it gets otherwise."""

from __future__ import annotations

import pytest
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.http.fields import Fields

INVALID = Err(Variant("invalid-syntax"))
FORBIDDEN = Err(Variant("forbidden"))


@pytest.mark.parametrize("repeat", [1, 2])  # the second time a name's verdict comes from the cache
def test_from_list_lower_cases_names_and_keeps_order_and_values(repeat: int) -> None:
    for _ in range(repeat):
        r = Fields.from_list([("Content-Type", b"text/plain"), ("X-Many", b"a"), ("x-many", b"b")])
        assert isinstance(r, Ok)
        assert r.value.entries() == [("content-type", b"text/plain"), ("x-many", b"a"), ("x-many", b"b")]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("bad name", b"v", INVALID),
        ("x-a\n", b"v", INVALID),  # a final newline: a regex "$" would have let it through
        ("", b"v", INVALID),
        ("naïve", b"v", INVALID),
        ("名前", b"v", INVALID),
        ("x-ok", b"a\r\nset-cookie: x", INVALID),
        ("x-ok", b"a\nb", INVALID),
        ("x-ok", b"a\x00b", INVALID),
        ("Connection", b"close", FORBIDDEN),
        ("transfer-encoding", b"chunked", FORBIDDEN),
        ("Upgrade", b"h2c", FORBIDDEN),
    ],
)
def test_what_is_not_a_field_is_refused_everywhere(name: str, value: bytes, expected: Err) -> None:
    for _ in range(2):
        assert Fields.from_list([("x-fine", b"1"), (name, value)]) == expected
        f = Fields()
        assert f.append(name, value) == expected
        assert f.set(name, [value]) == expected
        assert f.entries() == []
    if expected == FORBIDDEN or value == b"v":  # a bad name is refused by delete too
        assert Fields().delete(name) == expected


def test_immutable_views_refuse_changes() -> None:
    r = Fields.from_list([("a", b"1")])
    assert isinstance(r, Ok)
    view = r.value.view()
    assert view.append("b", b"2") == Err(Variant("immutable"))
    assert view.set("a", [b"3"]) == Err(Variant("immutable"))
    assert view.delete("a") == Err(Variant("immutable"))
    assert view.get("A") == [b"1"] and view.has("a") and not view.has("b")


def test_an_outgoing_request_refuses_a_method_or_scheme_that_is_not_a_token() -> None:
    from kubespin_shim.outbound.wasi_http import OutgoingRequest

    req = OutgoingRequest(Fields())
    assert req.set_method(Variant("other", "PURGE")) == Ok(None)
    assert req.set_method(Variant("other", "GET\n")) == Err(None)  # a final newline: not a token
    assert req.set_method(Variant("other", "")) == Err(None)
    assert req.set_scheme(Variant("other", "wss")) == Ok(None)
    assert req.set_scheme(Variant("other", "http\n")) == Err(None)
    assert req.method() == Variant("other", "PURGE") and req.scheme() == Variant("other", "wss")
