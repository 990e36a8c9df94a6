"""Spin's HTTP routing and request headers.

Expected values come from three places, each cited where used:
* fermyon/conformance-tests, test ``request-shape`` (tests/request-shape/spin.toml, test.json5 and the
  assertions in components/request-shape/src/lib.rs);
* the unit tests of spinframework/spin crates/routes/src/lib.rs and crates/trigger-http/src/headers.rs;
* the real Rust crates (spin-http-routes on routefinder 0.5.4), run on these inputs while writing them:
  marked "checked against Spin's router".
"""

from __future__ import annotations

import ipaddress

import pytest
from kubespin_shim.errors import ShimError
from kubespin_shim.routing import (
    RouteError,
    Router,
    format_client_addr,
    full_url,
    guest_request_headers,
    header_key,
    is_service_chaining_host,
    kept_client_headers,
    spin_request_headers,
    well_known_response,
)


def text(headers: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """Header values as text, to compare with Spin's test expectations."""
    return [(n, v.decode("latin-1")) for n, v in headers]


def comp(router: Router, path: str) -> str | None:
    m = router.route(path)
    return None if m is None else m.component_id


# --- conformance-tests: request-shape -----------------------------------------------------------


def test_request_shape_conformance_headers() -> None:
    # tests/request-shape/spin.toml: one route; test.json5: GET /base/path/end/rest?key=value with
    # User-Agent, Accept and Host: example.com; lib.rs check_headers(): these exact values, each
    # exactly once, spin-client-addr a valid socket address, and no other spin-* header.
    router = Router.build([("/base/:path_segment/:path_end/...", "request-shape")])
    m = router.route("/base/path/end/rest")
    assert m is not None
    client = [("user-agent", "my-agent"), ("accept", "*/*"), ("host", "example.com")]
    headers = text(
        guest_request_headers(
            client, m, scheme="http", path_and_query="/base/path/end/rest?key=value", client_addr=("127.0.0.1", 54321)
        )
    )
    spin = [(n, v) for n, v in headers if n.startswith("spin-")]
    names = [n for n, _ in spin]
    assert len(names) == len(set(names)), "each spin-* header exactly once"
    expected = {
        "spin-raw-component-route": "/base/:path_segment/:path_end/...",
        "spin-full-url": "http://example.com/base/path/end/rest?key=value",
        "spin-path-info": "/rest",
        "spin-base-path": "/",
        "spin-component-route": "/base/:path_segment/:path_end",
        "spin-path-match-path-segment": "path",
        "spin-path-match-path-end": "end",
        "spin-matched-route": "/base/:path_segment/:path_end/...",
    }
    got = dict(spin)
    addr = got.pop("spin-client-addr")
    assert got == expected
    host, _, port = addr.rpartition(":")
    ipaddress.ip_address(host)
    assert port == "54321"
    # the client's own headers come first, unchanged
    assert headers[:3] == client


# --- spin crates/trigger-http/src/headers.rs tests ----------------------------------------------


def test_default_headers_trailing_wildcard() -> None:
    # headers.rs test_default_headers
    m = Router.build([("/foo/...", "DUMMY")]).route("/foo/bar")
    assert m is not None
    url = full_url("https", "fermyon.dev", "/foo/bar?key1=value1&key2=value2")
    h = text(spin_request_headers(m, full_url=url, client_addr="127.0.0.1:8777"))
    assert h == [
        ("spin-path-info", "/bar"),
        ("spin-full-url", "https://fermyon.dev/foo/bar?key1=value1&key2=value2"),
        ("spin-matched-route", "/foo/..."),
        ("spin-base-path", "/"),
        ("spin-raw-component-route", "/foo/..."),
        ("spin-component-route", "/foo"),
        ("spin-client-addr", "127.0.0.1:8777"),
    ]


def test_default_headers_named_wildcards() -> None:
    # headers.rs test_default_headers_with_named_wildcards
    m = Router.build([("/foo/:userid/...", "DUMMY")]).route("/foo/42/bar")
    assert m is not None
    h = dict(text(spin_request_headers(m, full_url="https://fermyon.dev/foo/42/bar", client_addr="127.0.0.1:8777")))
    assert h["spin-path-info"] == "/bar"
    assert h["spin-matched-route"] == "/foo/:userid/..."
    assert h["spin-raw-component-route"] == "/foo/:userid/..."
    assert h["spin-component-route"] == "/foo/:userid"
    assert h["spin-path-match-userid"] == "42"


def test_header_key_and_full_url_default_host() -> None:
    assert header_key("SPIN_RAW_COMPONENT_ROUTE") == "spin-raw-component-route"
    assert header_key("SPIN_PATH_MATCH_USER_ID") == "spin-path-match-user-id"
    # guest_request_headers: no Host header -> "localhost"
    assert full_url("http", None, "/x?y") == "http://localhost/x?y"


def test_forbidden_headers() -> None:
    # headers.rs forbidden_headers_are_removed / non_forbidden_headers_are_not_removed
    assert kept_client_headers([("Host", "test.spin.internal"), ("accept", "text/plain")]) == (
        [("accept", "text/plain")],
        None,
    )
    assert kept_client_headers(
        [("Host", "test.spin.internal:1234"), ("accept", "text/plain"), ("Connection", "close")]
    ) == ([("accept", "text/plain")], None)
    kept = [("host", "test.example.org"), ("accept", "text/plain")]
    assert kept_client_headers(kept) == (kept, "test.example.org")
    assert is_service_chaining_host("a.spin.internal")
    assert not is_service_chaining_host("spin.internal")
    assert not is_service_chaining_host("a.b.spin.internal")


def test_client_spin_headers_are_kept_and_spins_come_last() -> None:
    # Spin does not strip a client's spin-* headers: guest_request_headers lists the client's
    # headers and then its own, and wasi.rs extends the HeaderMap (append), so both values reach
    # the guest, Spin's last.
    m = Router.build([("/...", "c")]).route("/x")
    assert m is not None
    client = [("Host", "h"), ("spin-client-addr", "6.6.6.6:1")]
    h = guest_request_headers(client, m, scheme="http", path_and_query="/x", client_addr=("10.0.0.1", 5))
    values = [v for n, v in h if n == "spin-client-addr"]
    assert values == [b"6.6.6.6:1", b"10.0.0.1:5"]
    hardened = guest_request_headers(
        client, m, scheme="http", path_and_query="/x", client_addr=("10.0.0.1", 5), strip_client_spin_headers=True
    )
    assert [v for n, v in hardened if n == "spin-client-addr"] == [b"10.0.0.1:5"]
    assert kept_client_headers([("Spin-Full-Url", "x"), ("a", "b")], strip_client_spin_headers=True) == (
        [("a", "b")],
        None,
    )


def test_param_header_names_that_are_not_tokens_are_dropped() -> None:
    m = Router.build([("/x/:bad name/:ok", "c")]).route("/x/1/2")
    assert m is not None
    assert dict(m.params) == {"bad name": "1", "ok": "2"}
    names = [n for n, _ in spin_request_headers(m, full_url="http://h/x/1/2", client_addr="1.2.3.4:5")]
    assert "spin-path-match-ok" in names
    assert not any(" " in n for n in names)


@pytest.mark.parametrize(
    ("addr", "text"),
    [
        (("127.0.0.1", 8777), "127.0.0.1:8777"),
        (("::1", 80, 0, 0), "[::1]:80"),
        (("::ffff:127.0.0.1", 80, 0, 0), "[::ffff:127.0.0.1]:80"),
        (("fe80::1%eth0", 80, 0, 2), "[fe80::1%2]:80"),
        (("2001:db8:0:0:1:0:0:1", 443, 0, 0), "[2001:db8::1:0:0:1]:443"),
        ("10.1.2.3:9", "10.1.2.3:9"),
    ],
)
def test_client_addr_formats_like_rust_socketaddr(addr: object, text: str) -> None:
    assert format_client_addr(addr) == text  # type: ignore[arg-type]


# --- spin crates/routes/src/lib.rs tests --------------------------------------------------------


def test_exact_routes_and_base() -> None:
    r = Router.build([("/foo", "foo"), ("/foo/bar", "foobar")])
    assert comp(r, "/foo") == "foo"
    assert comp(r, "/foo/bar") == "foobar"
    based = Router.build([("/foo", "foo"), ("/foo/bar", "foobar")], base="/base")
    assert comp(based, "/base/foo") == "foo"
    assert comp(based, "/base/foo/bar") == "foobar"
    assert comp(based, "/foo") is None


def test_catch_all_wildcard() -> None:
    r = Router.build([("/...", "all")])
    for path in ["/foo/bar", "/abc/", "/", "/this/should/be/captured?abc=def"]:
        assert comp(r, path) == "all"
    m = r.route("/1/2/3")
    assert m is not None and m.path_info == "/1/2/3" and m.component_route == ""


def test_longest_wildcard_prefix_wins_regardless_of_order() -> None:
    routes = [("/one/...", "one"), ("/one/two/...", "two"), ("/one/two/three/...", "three")]
    assert comp(Router.build(routes), "/one/two/three/four") == "three"
    assert comp(Router.build(reversed(routes)), "/one/two/three/four") == "three"


def test_exact_beats_wildcard() -> None:
    assert comp(Router.build([("/one", "one_exact"), ("/...", "wildcard")]), "/one") == "one_exact"
    assert comp(Router.build([("/...", "wildcard"), ("/one", "one_exact")]), "/one") == "one_exact"


def test_duplicate_routes_last_one_wins_and_are_reported() -> None:
    r = Router.build(
        [("/", "comp-first /"), ("/", "comp-second /"), ("/foo", "comp-first /foo"), ("/foo", "comp-second /foo")]
    )
    assert comp(r, "/foo") == "comp-second /foo"
    assert comp(r, "/") == "comp-second /"
    assert [(d.route or "/", d.replaced_id, d.effective_id) for d in r.duplicates] == [
        ("/", "comp-first /", "comp-second /"),
        ("/foo", "comp-first /foo", "comp-second /foo"),
    ]
    assert str(r.duplicates[0]) == "comp-first /: / (duplicate of comp-second /)"
    assert len(r.routes) == 2


def test_trailing_wildcard_respects_trailing_slash() -> None:
    r = Router.build([("/test/...", "comp")])
    assert [r.route(p).path_info for p in ["/test", "/test/", "/test/hello", "/test/hello/"]] == [  # type: ignore[union-attr]
        "",
        "/",
        "/hello",
        "/hello/",
    ]
    m = Router.build([("/1/...", "comp")]).route("/1/2/3")
    assert m is not None and m.path_info == "/2/3" and m.trailing == "2/3"


def test_named_wildcards() -> None:
    m = Router.build([("/1/:two/3", "comp")]).route("/1/2/3")
    assert m is not None and dict(m.params) == {"two": "2"} and m.trailing is None
    m = Router.build([("/1/:two/...", "comp")]).route("/1/2/3")
    assert m is not None and dict(m.params) == {"two": "2"} and m.path_info == "/3"


def test_reserved_routes() -> None:
    assert Router.build([("/.well-known/spin/...", "c")]).contains_reserved_route()
    assert Router.build([("/.well-known/spin/fie", "c")]).contains_reserved_route()
    assert not Router.build([("/.well-known/spindle/...", "c")]).contains_reserved_route()
    assert not Router.build([("/.well-known/spin", "c")]).contains_reserved_route()


# --- behaviour checked against Spin's router (spin-http-routes + routefinder 0.5.4) -------------


def test_specificity_exact_then_param_then_wildcard() -> None:
    r = Router.build([("/users/:id", "u"), ("/users/me", "me"), ("/users/...", "uw"), ("/users/:id/posts/:post", "p")])
    assert comp(r, "/users/me") == "me"
    assert comp(r, "/users/42") == "u"
    assert comp(r, "/users/42/") == "u"
    m = r.route("/users/42/posts/7")
    assert m is not None and m.component_id == "p" and dict(m.params) == {"id": "42", "post": "7"}
    assert comp(r, "/users") == "uw"
    assert r.route("/users/").path_info == "/"  # type: ignore[union-attr]
    assert r.route("/users/42/x").path_info == "/42/x"  # type: ignore[union-attr]
    # the first differing segment decides, not the length
    r2 = Router.build([("/a/:b", "pb"), ("/:a/b", "ab")])
    assert comp(r2, "/a/b") == "pb"
    assert comp(r2, "/x/b") == "ab"
    r3 = Router.build([("/:x/...", "pw"), ("/a/b", "ab")])
    assert comp(r3, "/a/b") == "ab"
    assert comp(r3, "/a/b/c") == "pw"
    assert comp(r3, "/a") == "pw"


def test_slashes_are_ignored_except_in_path_info() -> None:
    r = Router.build([("/", "root"), ("/foo", "foo"), ("/foo/...", "foow"), ("/:x", "param"), ("/...", "all")])
    for path in ["/foo", "/foo/", "/foo//", "//foo"]:
        assert comp(r, path) == "foo", path
    for path in ["/", "", "//"]:
        assert comp(r, path) == "root", path
    root = r.route("/")
    assert root is not None
    # Spin stores the route "/" as "" (one trailing slash stripped): spin-matched-route is empty
    assert (root.matched_route, root.raw_component_route, root.component_route) == ("", "/", "/")
    assert comp(r, "/bar/") == "param"
    assert r.route("/bar/baz").path_info == "/bar/baz"  # type: ignore[union-attr]
    slash = Router.build([("/foo/", "fooslash")]).route("/foo")
    assert slash is not None
    assert (slash.matched_route, slash.raw_component_route, slash.component_route) == ("/foo", "/foo/", "/foo/")


def test_no_percent_decoding() -> None:
    m = Router.build([("/base/:path_segment/:path_end/...", "rs")]).route("/base/a%20b/c/d/e/")
    assert m is not None
    assert dict(m.params) == {"path_segment": "a%20b", "path_end": "c"}
    assert m.path_info == "/d/e/"


def test_dots_in_routes() -> None:
    r = Router.build([("/files/:name.json", "json"), ("/files/:name", "any"), ("/v1.0/x", "dot")])
    m = r.route("/files/a.json")
    assert m is not None and m.component_id == "json" and dict(m.params) == {"name": "a"}
    assert dict(r.route("/files/a.txt").params) == {"name": "a.txt"}  # type: ignore[union-attr]
    assert comp(r, "/v1.0/x") == "dot"
    assert comp(r, "/v1x0/x") is None


def test_star_wildcard_and_404() -> None:
    r = Router.build([("/static/*", "star"), ("/x/:a/:b", "ab")])
    m = r.route("/static/a/b")
    assert m is not None and m.path_info == "/a/b" and m.component_route == "/static/*"
    assert comp(r, "/static") == "star"
    assert comp(r, "/x/1") is None
    assert Router.build([("/base/:a/:b/...", "c")]).route("/base/path") is None


def test_equal_rank_first_written_wins_but_dot_routes_are_order_dependent() -> None:
    assert comp(Router.build([("/:a", "pa"), ("/:b", "pb")]), "/z") == "pa"
    # routefinder's comparator ranks a leading '.' segment above everything and everything above it:
    # whichever of the two routes was written later is tried first.
    assert comp(Router.build([("/.hidden", "h"), ("/...", "all")]), "/.hidden") == "all"
    assert comp(Router.build([("/...", "all"), ("/.hidden", "h")]), "/.hidden") == "h"
    assert comp(Router.build([("/.hidden/x", "h"), ("/:p/x", "p")]), "/.hidden/x") == "p"


def test_route_order_follows_rusts_btree_beyond_one_node() -> None:
    # 13 routes: more than one B-tree node. A plain "insert before the first route it beats" gives
    # c12 for "/"; Spin gives c7.
    routes = [
        ("/c/...", "c0"), ("/.hidden/.hidden/*", "c1"), ("/a/a.b/a.b/*", "c2"), ("/a.b/...", "c3"),
        ("/.hidden/a.b", "c4"), ("//...", "c5"), ("/:p/a.b/.hidden", "c6"), ("//", "c7"),
        ("/c/:id/*", "c8"), (".hidden/v1.0", "c9"), ("/a/x.y.z", "c10"), ("/a", "c11"), ("//*", "c12"),
    ]  # fmt: skip
    r = Router.build(routes)
    assert comp(r, "/") == "c7"
    assert comp(r, "//") == "c7"
    m = r.route("/.hidden//")
    assert m is not None and m.component_id == "c5" and m.path_info == "/.hidden/"
    assert comp(r, "/x/f.json/") == "c5"


def test_unparseable_routes_are_errors() -> None:
    with pytest.raises(RouteError) as e:
        Router.build([("/*x", "bad")])
    assert str(e.value) == (
        "Error parsing route /*x associated with component bad: since there can only be one wildcard, "
        "it doesn't need a name. replace `*x` with `*`"
    )
    assert isinstance(e.value, ShimError)
    with pytest.raises(RouteError, match="params must be named"):
        Router.build([("/:", "bad")])
    # routefinder would panic on every request reaching this route; we refuse it at startup
    with pytest.raises(RouteError, match="wildcard must be the last part"):
        Router.build([("/*/x", "bad")])


def test_well_known_endpoints() -> None:
    assert well_known_response("/foo", app_name="a") is None
    health = well_known_response("/.well-known/spin/health", app_name="a")
    assert health is not None and (health.status, health.body) == (200, b"OK")
    info = well_known_response("/.well-known/spin/info", app_name="hello", app_version="1.0.0")
    assert info is not None and info.status == 200
    assert info.headers == (("content-type", "application/json"),)
    assert info.body == b'{\n  "name": "hello",\n  "version": "1.0.0"\n}'
    other = well_known_response("/.well-known/spin/nope", app_name="a")
    assert other is not None and other.status == 404


def test_compiled_matcher_agrees_with_the_reference_port() -> None:
    # route() runs one compiled regex; route_reference() is the segment-by-segment port of
    # routefinder's matcher. They must agree on every route shape, including odd slashes and dots.
    import random

    rng = random.Random(20240611)
    parts = ["a", "b", ":p", ":q", ":n.json", "a.b", "v1.0", ".hidden", "", "x.y.z", "*"]
    path_parts = ["a", "b", "x", "a.b", "f.json", ".hidden", "v1.0", "a%20b", "", "x.y.z", "q", "a\nb"]
    checked = 0
    for _ in range(400):
        routes = []
        for i in range(rng.randint(1, 14)):
            segs = [rng.choice(parts) for _ in range(rng.randint(0, 3))]
            segs = [s for j, s in enumerate(segs) if s != "*" or j == len(segs) - 1]
            tails = ["", "/", "//"] if segs[-1:] == ["*"] else ["", "/...", "/", "//"]
            routes.append(("/" + "/".join(segs) + rng.choice(tails), f"c{i}"))
        router = Router.build(routes)
        for _ in range(10):
            path = (
                "/" + "/".join(rng.choice(path_parts) for _ in range(rng.randint(0, 4))) + rng.choice(["", "/", "//"])
            )
            assert router.route(path) == router.route_reference(path), (routes, path)
            checked += 1
    assert checked == 4000


def test_route_cache_is_bounded_and_answers_as_the_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubespin_shim.routing as routing

    monkeypatch.setattr(routing, "ROUTE_CACHE_SIZE", 4)
    router = Router.build([("/users/:id", "users"), ("/static/...", "files"), ("/", "root")])
    paths = [f"/users/{i}" for i in range(9)] + [f"/static/{i}/x" for i in range(9)] + ["/", "/nope/x"]
    for _ in range(2):
        for path in paths:
            assert router.route(path) == router.route_reference(path), path
            assert router.route(path) is router.route(path)  # the second answer is the remembered one
            assert len(router._cache) <= 4
    match = router.route("/users/7")
    assert match is not None and match.params == {"id": "7"}
    assert ("spin-path-match-id", b"7") in spin_request_headers(match, full_url="http://h/users/7", client_addr="c")
    long_path = "/users/" + "x" * routing.ROUTE_CACHE_MAX_PATH
    assert router.route(long_path) == router.route_reference(long_path)
    assert long_path not in router._cache  # matched, not remembered: clients cannot fill memory with paths
    with_base = spin_request_headers(match, full_url="u", client_addr="c", base_path="/base")
    assert ("spin-base-path", b"/base") in with_base and ("spin-base-path", b"/") not in with_base


def test_guest_headers_are_latin1_bytes_and_the_same_for_a_remembered_match() -> None:
    router = Router.build([("/users/:id/...", "users")])
    match = router.route("/users/caf%C3%A9/x/")
    assert match is not None and router.route("/users/caf%C3%A9/x/") is match
    client = [("Host", "h.example:8080"), ("Connection", "close"), ("X-Name", "caf\xe9"), ("Spin-Client-Addr", "1")]
    kwargs = dict(scheme="http", path_and_query="/users/caf%C3%A9/x/?q=1", client_addr=("127.0.0.1", 9))
    first = guest_request_headers(client, match, **kwargs)  # type: ignore[arg-type]
    assert first[:3] == [("host", b"h.example:8080"), ("x-name", b"caf\xe9"), ("spin-client-addr", b"1")]
    assert ("spin-full-url", b"http://h.example:8080/users/caf%C3%A9/x/?q=1") in first
    assert ("spin-path-match-id", b"caf%C3%A9") in first and ("spin-path-info", b"/x/") in first
    assert guest_request_headers(client, match, **kwargs) == first  # type: ignore[arg-type]
