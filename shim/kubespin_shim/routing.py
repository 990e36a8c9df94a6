"""Spin's HTTP trigger router and the ``spin-*`` request headers, behaving exactly as ``spin up``.

Why a port and not a Python routing library: apps are written against Spin's own rules, and those
rules are those of the Rust crate ``routefinder`` 0.5.4 as wrapped by Spin's ``spin-http-routes``
(``crates/routes/src/lib.rs`` in spinframework/spin), including their quirks:

* routes are sorted by *segment kind*, not by length: at the first position where two routes differ,
  exact text beats ``:param`` beats the ``...`` wildcard; so ``/users/me`` beats ``/users/:id``,
  which beats ``/users/...``, and ``/one/two/...`` beats ``/one/...``. Between routes of equal rank
  the one written first in ``spin.toml`` wins;
* leading and trailing slashes of the request path are ignored (``/foo/`` and ``//foo`` match
  ``/foo``), except that a trailing wildcard reports them in ``spin-path-info``;
* no percent-decoding: ``:id`` captures ``a%20b`` for ``/users/a%20b``;
* a route written twice (same text) keeps its first position but the *last* component wins; Spin
  logs the replaced one as "will never be used" (we expose them as ``Router.duplicates``);
* the manifest route ``/`` is stored as the empty string, so ``spin-matched-route`` is ``""`` for it.

No library on PyPI reproduces these rules (starlette/werkzeug routers match by declaration order or
by regex and do not ignore slashes the same way), hence this hand-written module. Every expected
value in tests/unit/test_routing.py was checked against the real Rust crates.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from .errors import ShimError

#: Routes under this prefix are answered by the runtime itself (``health``, ``info``), never a component.
WELL_KNOWN_PREFIX = "/.well-known/spin/"
#: Hosts ``<component>.spin.internal`` address another component of the same app (service chaining).
SERVICE_CHAINING_DOMAIN = "spin.internal"


class RouteError(ShimError):
    """A ``[[trigger.http]] route`` that Spin would refuse (or that would crash Spin's router)."""

    def __init__(self, route: str, component_id: str, message: str) -> None:
        self.route = route
        self.component_id = component_id
        self.message = message
        super().__init__(f"Error parsing route {route} associated with component {component_id}: {message}")


# ---------------------------------------------------------------------------------------------
# Route specs: routefinder's parsed form.


class _Kind(IntEnum):
    SLASH = 0
    DOT = 1
    EXACT = 2
    PARAM = 3
    WILDCARD = 4


@dataclass(frozen=True)
class _Segment:
    kind: _Kind
    text: str = ""  # the literal for EXACT, the name for PARAM


def _segment_cmp(mine: _Segment, theirs: _Segment) -> int:
    """routefinder's ``Ord for Segment`` (-1, 0, 1), copied case by case because it is not symmetric.

    ``Dot`` ranks above everything (it only starts a route such as ``/.well-known``) while ``Exact``
    also ranks above ``Dot``; Spin inherits that inconsistency, and so must we.
    """
    a, b = mine.kind, theirs.kind
    seps = (_Kind.SLASH, _Kind.DOT)
    if a == b or (a in seps and b in seps):
        return 0
    if a == _Kind.DOT or a == _Kind.EXACT:
        return 1
    if a == _Kind.PARAM:
        return -1 if b == _Kind.EXACT else 1
    if a == _Kind.WILDCARD:
        return -1 if b in (_Kind.EXACT, _Kind.PARAM) else 1
    return -1  # SLASH against EXACT / PARAM / WILDCARD


def _parse_spec(source: str) -> tuple[_Segment, ...]:
    """routefinder's ``RouteSpec::from_str``: split at ``/`` and ``.``; raises ValueError like it does."""
    trimmed = source.strip("/")
    segments: list[_Segment] = []
    boundaries = [m.start() for m in re.finditer(r"[./]", trimmed)] + [len(trimmed)]
    last = 0
    for index in boundaries:
        first_char = trimmed[last - 1] if last > 0 else None
        section = trimmed[last:index]
        last = index + 1
        segment: _Segment | None
        if section == "*":
            segment = _Segment(_Kind.WILDCARD)
        elif section.startswith("*"):
            raise ValueError(
                f"since there can only be one wildcard, it doesn't need a name. replace `{section}` with `*`"
            )
        elif section == ":":
            raise ValueError("params must be named")
        elif section.startswith(":"):
            segment = _Segment(_Kind.PARAM, section[1:])
        elif section == "":
            segment = None
        else:
            segment = _Segment(_Kind.EXACT, section)
        if first_char == ".":
            if segments and segments[-1].kind == _Kind.EXACT:
                segments[-1] = _Segment(_Kind.EXACT, segments[-1].text + ".")
            else:
                segments.append(_Segment(_Kind.DOT))
        if segment is not None:
            if first_char == "/":
                segments.append(_Segment(_Kind.SLASH))
            segments.append(segment)
    _check_spec(source, segments)
    return tuple(segments)


def _check_spec(source: str, segments: Sequence[_Segment]) -> None:
    """Refuse the shapes on which routefinder panics at request time (Spin would drop the connection).

    This is the one deliberate difference from Spin: such a route fails at startup, with a message,
    instead of killing every request that reaches it.
    """
    for i, seg in enumerate(segments):
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if seg.kind == _Kind.WILDCARD and nxt is not None:
            raise ValueError(f"the wildcard must be the last part of the route {source!r}")
        if seg.kind == _Kind.PARAM and nxt is not None and nxt.kind not in (_Kind.SLASH, _Kind.DOT):
            raise ValueError(f"parameter :{seg.text} must be followed by '/', '.' or the end of the route")


def _spec_cmp(a: Sequence[_Segment], b: Sequence[_Segment]) -> int:
    """routefinder's ``Ord for RouteSpec``: negative when ``a`` must be tried before ``b``.

    Never 0: for routes of equal rank routefinder answers "after", so the one added later goes after.
    """
    for mine, theirs in zip(a, b, strict=False):
        c = _segment_cmp(mine, theirs)
        if c:
            return -c
    dots_a = sum(1 for s in a if s.kind == _Kind.DOT)
    dots_b = sum(1 for s in b if s.kind == _Kind.DOT)
    if dots_a != dots_b:
        return -1 if dots_a > dots_b else 1
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return 1


def _spec_match(segments: Sequence[_Segment], path: str) -> list[str] | None:
    """routefinder's ``RouteSpec::matches``: the captures (params, then the wildcard) or None."""
    p = path.strip("/")
    captures: list[str] = []
    n = len(segments)
    for i, seg in enumerate(segments):
        nxt = segments[i + 1] if i + 1 < n else None
        if seg.kind == _Kind.EXACT:
            if not p.startswith(seg.text):
                return None
            p = p[len(seg.text) :]
        elif seg.kind == _Kind.PARAM:
            if not p:
                return None
            if nxt is None or nxt.kind == _Kind.SLASH:
                capture = p.split("/", 1)[0]
                captures.append(capture)
                p = p[len(capture) :]
            else:  # followed by a dot: capture up to the first '.', which must come before any '/'
                found = re.search(r"[./]", p)
                if found is None or found.group() != ".":
                    return None
                captures.append(p[: found.start()])
                p = p[found.start() :]
        elif seg.kind == _Kind.WILDCARD:
            captures.append(p)
            p = ""
        elif seg.kind == _Kind.SLASH:
            if p.startswith("/") and nxt is not None:
                p = p[1:]
            elif not p and (nxt is None or nxt.kind == _Kind.WILDCARD):
                pass
            else:
                return None
        else:  # DOT
            if not p.startswith("."):
                return None
            p = p[1:]
    return captures if p in ("", "/") else None


class _RouteTree:
    """The order in which routefinder tries routes: a Rust ``BTreeMap<RouteSpec, _>``, node for node.

    Why not ``sorted()``: routefinder's comparator is not a consistent order (``Dot`` vs ``Exact``,
    separators that compare equal, ties answered "after"), so the order depends on where each route
    meets the others inside the B-tree. Reproducing std's insertion (B = 6: 11 keys per node, and
    its ``splitpoint`` rule) is the only way to try routes in the same order as ``spin up`` for any
    number of routes. Checked against the Rust crates on thousands of random route sets.
    """

    _CAPACITY = 11  # 2 * B - 1 with B = 6

    @dataclass
    class _Node:
        keys: list[_Entry]
        children: list[_RouteTree._Node]

    def __init__(self) -> None:
        self._root = _RouteTree._Node([], [])

    @staticmethod
    def _splitpoint(edge_idx: int) -> tuple[int, bool, int]:
        """(index of the key that moves up, insert into the left half?, index in that half)."""
        if edge_idx < 5:
            return 4, True, edge_idx
        if edge_idx == 5:
            return 5, True, edge_idx
        if edge_idx == 6:
            return 5, False, 0
        return 6, False, edge_idx - 7

    def insert(self, entry: _Entry) -> None:
        path: list[tuple[_RouteTree._Node, int]] = []
        node = self._root
        while True:
            idx = next(
                (i for i, k in enumerate(node.keys) if _spec_cmp(entry.segments, k.segments) < 0),
                len(node.keys),
            )
            if not node.children:
                break
            path.append((node, idx))
            node = node.children[idx]
        key: _Entry = entry
        right_child: _RouteTree._Node | None = None
        while True:
            if len(node.keys) < self._CAPACITY:
                node.keys.insert(idx, key)
                if right_child is not None:
                    node.children.insert(idx + 1, right_child)
                return
            middle, into_left, at = self._splitpoint(idx)
            right = _RouteTree._Node(node.keys[middle + 1 :], node.children[middle + 1 :])
            up = node.keys[middle]
            del node.keys[middle:]
            del node.children[middle + 1 :]
            target = node if into_left else right
            target.keys.insert(at, key)
            if right_child is not None:
                target.children.insert(at + 1, right_child)
            if not path:
                self._root = _RouteTree._Node([up], [node, right])
                return
            node, idx = path.pop()
            key, right_child = up, right

    def in_order(self) -> list[_Entry]:
        out: list[_Entry] = []

        def walk(n: _RouteTree._Node) -> None:
            if not n.children:
                out.extend(n.keys)
                return
            for i, k in enumerate(n.keys):
                walk(n.children[i])
                out.append(k)
            walk(n.children[-1])

        walk(self._root)
        return out


def _spec_regex(segments: Sequence[_Segment]) -> str:
    """The same matcher as ``_spec_match`` as one regular expression (applied to the slash-trimmed path).

    routefinder's matcher never backtracks; possessive quantifiers keep the regex from doing so
    either, so both accept the same paths and capture the same text (a unit test checks this).
    """
    out: list[str] = []
    n = len(segments)
    for i, seg in enumerate(segments):
        nxt = segments[i + 1] if i + 1 < n else None
        if seg.kind == _Kind.EXACT:
            out.append(re.escape(seg.text))
        elif seg.kind == _Kind.PARAM:
            if nxt is None or nxt.kind == _Kind.SLASH:
                out.append(r"(?=.)([^/]*+)")  # non-empty remainder; may capture "" before a '/'
            else:
                out.append(r"([^./]*+)(?=\.)")
        elif seg.kind == _Kind.WILDCARD:
            out.append(r"(.*+)")
        elif seg.kind == _Kind.SLASH:
            out.append(r"(?:/|\Z)" if nxt is not None and nxt.kind == _Kind.WILDCARD else "/")
        else:
            out.append(r"\.")
    return "".join(out) + r"/?\Z"


# ---------------------------------------------------------------------------------------------
# Spin's router.


@dataclass(frozen=True)
class RouteMatch:
    """What Spin knows about a routed request; the ``spin-*`` headers are made from it.

    ``matched_route``: the route with the app base, as written (``/users/:id``, ``/static/...``; ``""``
    for ``/``). ``raw_component_route``: the route as written in spin.toml. ``component_route``: that
    route without a trailing ``/...``. ``path_info``: what the trailing wildcard matched, with Spin's
    slashes (``""`` when the route has no wildcard). ``params``: the ``:name`` captures, raw
    (percent-encoded). ``trailing``: the wildcard capture as routefinder gives it, or None.
    """

    component_id: str
    matched_route: str
    component_route: str
    raw_component_route: str
    path_info: str
    params: Mapping[str, str]
    trailing: str | None

    @functools.cached_property
    def _spin_headers(self) -> tuple[tuple[str, bytes], tuple[tuple[str, bytes], ...], tuple[tuple[str, bytes], ...]]:
        """The ``spin-*`` headers that depend on the match alone, as the guest gets them (latin-1
        bytes): the first, those between ``spin-full-url`` and ``spin-client-addr``, and the path
        parameters. Made once per match: a remembered match serves every request for its path."""
        params = []
        for name, value in self.params.items():
            key = header_key(f"SPIN_PATH_MATCH_{name.upper()}")
            if _TOKEN.fullmatch(key):
                params.append((key, value.encode("latin-1")))
        middle = (
            ("spin-matched-route", self.matched_route.encode("latin-1")),
            ("spin-base-path", b"/"),
            ("spin-raw-component-route", self.raw_component_route.encode("latin-1")),
            ("spin-component-route", self.component_route.encode("latin-1")),
        )
        return ("spin-path-info", self.path_info.encode("latin-1")), middle, tuple(params)


@dataclass(frozen=True)
class DuplicateRoute:
    """A route written twice: ``replaced_id`` is never reached, ``effective_id`` serves it."""

    route: str
    replaced_id: str
    effective_id: str

    def __str__(self) -> str:
        return f"{self.replaced_id}: {self.route or '/'} (duplicate of {self.effective_id})"


@dataclass(frozen=True)
class _Entry:
    component_id: str
    based_route: str
    raw_route: str
    segments: tuple[_Segment, ...]
    is_wildcard: bool
    # precomputed for the per-request path:
    capture_segments: tuple[_Segment, ...] = ()
    component_route: str = ""

    @classmethod
    def create(
        cls, component_id: str, based_route: str, raw_route: str, segments: tuple[_Segment, ...], is_wildcard: bool
    ) -> _Entry:
        captures = tuple(s for s in segments if s.kind in (_Kind.PARAM, _Kind.WILDCARD))
        component_route = raw_route[: -len("/...")] if raw_route.endswith("/...") else raw_route
        return cls(component_id, based_route, raw_route, segments, is_wildcard, captures, component_route)


ROUTE_CACHE_SIZE = 1024  # paths whose match Router.route remembers
ROUTE_CACHE_MAX_PATH = 256  # longer paths are matched every time: what clients send cannot fill memory


@dataclass(frozen=True)
class Router:
    """Spin's ``Router``: build once from the app's routes, then ``route(path)`` per request."""

    _entries: tuple[_Entry, ...]
    duplicates: tuple[DuplicateRoute, ...] = field(default=())
    # One regex with an alternative per route, in the order routefinder tries them: Python's
    # alternation also returns the first alternative that matches. ~10x faster than a Python loop.
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _groups: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # path -> match (or None), for the paths most requests ask for; bounded, because paths come from
    # clients: when full it starts again (a flood of distinct paths costs a regex match each, as before)
    _cache: dict[str, RouteMatch | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cache", {})
        alternatives, starts, group = [], [], 0
        for i, entry in enumerate(self._entries):
            starts.append(group + 1)  # the alternative's own named group
            alternatives.append(f"(?P<r{i}>{_spec_regex(entry.segments)})")
            group += 1 + len(entry.capture_segments)
        pattern = "|".join(alternatives) if alternatives else r"(?!)"
        object.__setattr__(self, "_pattern", re.compile(pattern, re.DOTALL))
        object.__setattr__(self, "_groups", tuple(starts))

    @classmethod
    def build(cls, routes: Iterable[tuple[str, str]], base: str = "/") -> Router:
        """Build from ``(route text, component_id)`` pairs in manifest order (private routes left out).

        Raises RouteError for a route Spin cannot parse. Duplicates are not an error in Spin: the
        last component given for a route text wins and the others land in ``duplicates`` (Spin
        logs them at error level as "will never be used"; the caller should too).
        """
        by_raw: dict[str, tuple[str, str]] = {}  # raw route -> (component, based route); keeps first position
        duplicates: list[DuplicateRoute] = []
        for raw_route, component_id in routes:
            based = _sanitize(base) + _sanitize(raw_route if raw_route.startswith("/") else "/" + raw_route)
            if raw_route in by_raw:
                replaced_id, replaced_based = by_raw[raw_route]
                duplicates.append(DuplicateRoute(replaced_based, replaced_id, component_id))
            by_raw[raw_route] = (component_id, based)

        tree = _RouteTree()
        for raw_route, (component_id, based) in by_raw.items():
            if based.endswith("/..."):
                spec_text, wildcard = based[: -len("/...")] + "/*", True
            else:
                spec_text, wildcard = based, based.endswith("/*")
            try:
                segments = _parse_spec(spec_text)
            except ValueError as e:
                raise RouteError(based, component_id, str(e)) from None
            tree.insert(_Entry.create(component_id, based, raw_route, segments, wildcard))
        ordered = tree.in_order()
        return cls(tuple(ordered), tuple(duplicates))

    @property
    def routes(self) -> list[tuple[str, str]]:
        """``(based route, component id)`` in the order they are tried."""
        return [(e.based_route, e.component_id) for e in self._entries]

    def contains_reserved_route(self) -> bool:
        """True when a route lies under ``/.well-known/spin/``: Spin warns it will never be reached."""
        return any(e.based_route.startswith(WELL_KNOWN_PREFIX) for e in self._entries)

    def route(self, path: str) -> RouteMatch | None:
        """The best route for a request path (no query, still percent-encoded), or None for a 404."""
        cache = self._cache
        try:
            return cache[path]
        except KeyError:
            pass
        match = self._route(path)
        if len(path) <= ROUTE_CACHE_MAX_PATH:
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()
            cache[path] = match
        return match

    def _route(self, path: str) -> RouteMatch | None:
        found = self._pattern.match(path.strip("/"))
        if found is None:
            return None
        index = int(found.lastgroup[1:])  # type: ignore[index]
        entry = self._entries[index]
        first = self._groups[index] + 1
        captures = found.groups()[first - 1 : first - 1 + len(entry.capture_segments)]
        return self._match(entry, captures, path)

    def route_reference(self, path: str) -> RouteMatch | None:
        """``route`` by a direct port of routefinder's matcher, segment by segment (slower; for tests)."""
        for entry in self._entries:
            captures = _spec_match(entry.segments, path)
            if captures is not None:
                return self._match(entry, captures, path)
        return None

    @staticmethod
    def _match(entry: _Entry, captures: Sequence[str], path: str) -> RouteMatch:
        params: dict[str, str] = {}
        trailing: str | None = None
        for seg, value in zip(entry.capture_segments, captures, strict=True):
            if seg.kind == _Kind.PARAM:
                params[seg.text] = value  # a repeated name keeps its last value, like Spin's HashMap
            else:
                trailing = value
        return RouteMatch(
            component_id=entry.component_id,
            matched_route=entry.based_route,
            component_route=entry.component_route,
            raw_component_route=entry.raw_route,
            path_info=_path_info(trailing, path),
            params=MappingProxyType(params),
            trailing=trailing,
        )


def _sanitize(s: str) -> str:
    """Spin strips one trailing slash from the base and from the route (so ``/`` becomes ``""``)."""
    return s[:-1] if s.endswith("/") else s


def _path_info(trailing: str | None, path: str) -> str:
    """Spin's ``trailing_wildcard()``: routefinder drops the slashes, Spin puts them back."""
    if trailing is None:
        return ""
    ends_with_slash = path.endswith("/")
    if not trailing:
        return "/" if ends_with_slash else ""
    return f"/{trailing}/" if ends_with_slash else f"/{trailing}"


# ---------------------------------------------------------------------------------------------
# Request headers (spin crates/trigger-http/src/headers.rs).

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_key(name: str) -> str:
    """Spin's ``prepare_header_key``: ``SPIN_PATH_MATCH_USER_ID`` -> ``spin-path-match-user-id``."""
    return name.replace("_", "-").lower()


def format_client_addr(addr: str | tuple[object, ...]) -> str:
    """A peer address the way Rust prints a ``SocketAddr``: ``127.0.0.1:8080``, ``[::1]:8080``.

    Accepts a ``socket.getpeername()`` tuple (IPv4 or IPv6) or an already formatted string.
    IPv4-mapped IPv6 addresses print as ``[::ffff:127.0.0.1]:80`` as Rust does (Python 3.11 would
    print ``::ffff:7f00:1``); a non-zero IPv6 scope id is printed as a number (``%2``).
    """
    if isinstance(addr, str):
        return addr
    return _format_peer(addr)


@functools.lru_cache(maxsize=1024)
def _format_peer(addr: tuple[object, ...]) -> str:
    # Memoised: every request of a keep-alive connection asks for the same peer, and the
    # ipaddress parsing below costs tens of microseconds per request otherwise.
    host, port = str(addr[0]), int(str(addr[1]))
    scope = addr[3] if len(addr) >= 4 else 0
    if "%" in host:
        host = host.split("%", 1)[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv4Address):
        return f"{ip}:{port}"
    mapped = ip.ipv4_mapped
    text = f"::ffff:{mapped}" if mapped is not None else ip.compressed
    if isinstance(scope, int) and scope:
        text = f"{text}%{scope}"
    return f"[{text}]:{port}"


def full_url(scheme: str, host: str | None, path_and_query: str) -> str:
    """``spin-full-url``: scheme, then the ``Host`` header as sent (``localhost`` if none), then the target."""
    return f"{scheme}://{host if host is not None else 'localhost'}{path_and_query}"


def spin_request_headers(
    match: RouteMatch,
    *,
    full_url: str,
    client_addr: str | tuple[object, ...],
    base_path: str = "/",
) -> list[tuple[str, bytes]]:
    """The headers Spin adds to every routed request, in Spin's order, and nothing else; values as
    the guest gets them (latin-1 bytes).

    ``spin-base-path`` is always ``/`` in Spin today (kept as a parameter for apps with a base).
    One ``spin-path-match-<name>`` per ``:name`` parameter; a name that cannot be an HTTP header
    name is skipped, as Spin's wasi-http executor silently drops it.
    """
    first, middle, params = match._spin_headers
    if base_path != "/":
        middle = (middle[0], ("spin-base-path", base_path.encode("latin-1")), *middle[2:])
    return [
        first,
        ("spin-full-url", full_url.encode("latin-1")),
        *middle,
        ("spin-client-addr", format_client_addr(client_addr).encode("latin-1")),
        *params,
    ]


def is_service_chaining_host(host: str) -> bool:
    """True for ``<component>.spin.internal`` (with or without a port), as Spin tests it."""
    name = host.rsplit(":", 1)[0]
    _, dot, rest = name.partition(".")
    return bool(dot) and rest == SERVICE_CHAINING_DOMAIN


def kept_client_headers(
    client_headers: Iterable[tuple[str, str]], *, strip_client_spin_headers: bool = False
) -> tuple[list[tuple[str, str]], str | None]:
    """The client's headers the guest gets, names lower-cased, in order; and the first ``Host`` left
    (for ``spin-full-url``). One pass: this runs for every request.

    Spin's ``strip_forbidden_headers``: ``Connection`` is dropped, and ``Host`` when it is
    ``*.spin.internal``. Spin does NOT drop a client's ``spin-*`` headers: it forwards a client's
    ``spin-client-addr: 1.2.3.4`` and appends its own after it, so the guest sees two values, the
    genuine one last. ``strip_client_spin_headers`` drops them, for a hardened mode that departs from
    Spin on purpose.
    """
    names: list[tuple[str, str]] = []
    host = None
    for name, value in client_headers:
        lower = name.lower()
        if lower == "connection":
            continue
        if lower == "host":
            if is_service_chaining_host(value):
                continue
            if host is None:
                host = value
        elif strip_client_spin_headers and lower.startswith("spin-"):
            continue
        names.append((lower, value))
    return names, host


def guest_request_headers(
    client_headers: Iterable[tuple[str, str]],
    match: RouteMatch,
    *,
    scheme: str,
    path_and_query: str,
    client_addr: str | tuple[object, ...],
    strip_client_spin_headers: bool = False,
) -> list[tuple[str, bytes]]:
    """Everything the guest's incoming request carries as headers, as Spin builds it, values as
    wasi:http carries them (latin-1 bytes).

    Spin (``server.rs`` then ``headers.rs::prepare_request_headers``): forbidden headers removed,
    the client's headers in order, then the ``spin-*`` headers appended (appended, not replaced:
    ``HeaderMap::extend`` appends). ``spin-full-url`` uses the client's ``Host`` header.
    """
    names, host = kept_client_headers(client_headers, strip_client_spin_headers=strip_client_spin_headers)
    spin = spin_request_headers(match, full_url=full_url(scheme, host, path_and_query), client_addr=client_addr)
    return [*((n, v.encode("latin-1")) for n, v in names), *spin]


# ---------------------------------------------------------------------------------------------
# /.well-known/spin/*


@dataclass(frozen=True)
class WellKnownResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def well_known_response(
    path: str, *, app_name: str, app_version: str | None = None, oci_image_digest: str | None = None
) -> WellKnownResponse | None:
    """Spin answers ``/.well-known/spin/health`` and ``/info`` itself, and 404s the rest of that prefix.

    Returns None when the path is not under the prefix (route it normally). ``info`` is Spin's
    ``AppInfo`` serialised by ``serde_json::to_vec_pretty`` (2-space indent, absent fields omitted).
    """
    if not path.startswith(WELL_KNOWN_PREFIX):
        return None
    rest = path[len(WELL_KNOWN_PREFIX) :]
    if rest == "health":
        return WellKnownResponse(200, (), b"OK")
    if rest == "info":
        info: dict[str, str] = {"name": app_name}
        if app_version is not None:
            info["version"] = app_version
        if oci_image_digest is not None:
            info["oci_image_digest"] = oci_image_digest
        import json  # only for this route: not part of every start

        body = json.dumps(info, indent=2, ensure_ascii=False).encode()
        return WellKnownResponse(200, (("content-type", "application/json"),), body)
    return WellKnownResponse(404, (), b"")
