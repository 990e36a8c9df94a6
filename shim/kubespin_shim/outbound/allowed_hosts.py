"""Spin's ``allowed_outbound_hosts``: the syntax of each entry and how a destination is matched.

A port of the rules in spinframework/spin ``crates/outbound-networking-config/src/allowed_hosts.rs``
(``AllowedHostConfig``, ``SchemeConfig``, ``HostConfig``, ``PortConfig``, ``AllowedHostsConfig``,
``OutboundUrl``), written from reading it; the unit tests replay that file's own test cases.

An entry is ``<scheme>://<host>[:<port>]``:

- scheme: a word of letters (``http``, ``https``, ``redis``, ``mysql``, ``postgres``, ``mqtt``, …)
  or ``*`` for any; it is required.
- host: ``*`` (any), ``*.example.com`` (any subdomain, not the domain itself), ``self`` /
  ``self.alt`` (the app itself: relative requests), a literal domain or IP (``[::1]`` for IPv6),
  or an IP network in CIDR form (``10.0.0.0/8``); ``*.spin.internal`` is expanded into one
  ``<component>.spin.internal`` per component of the app (local service chaining).
- port: omitted (the scheme's well-known port: http 80, https 443, redis 6379, mysql 3306,
  postgres 5432, mqtt 1883; other schemes must give one), a number, ``*``, or a range
  ``4000..5000`` (end excluded, as Rust's ``Range``).
- ``{{ variable }}`` templates are resolved against the application variables; an entry that
  resolves to ``""``, ``http://`` or ``https://`` is skipped (an "optional endpoint").

Why hand-written: the matching must be Spin's exactly (including its quirks, such as a path of
``/`` being allowed and ``*://127.0.0.0/24`` needing a port), and no library implements it. Host
names are normalised the way the WHATWG URL parser (Rust's ``url::Host::parse``) does it; the
``idna`` package (an httpx dependency) handles non-ASCII names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote_to_bytes

from kubespin_shim.errors import ShimError
from kubespin_shim.variables import Template, VariableError, rust_debug_str

#: ``<component>.spin.internal`` addresses another component of the same app.
SERVICE_CHAINING_DOMAIN = "spin.internal"
SERVICE_CHAINING_SUFFIX = "." + SERVICE_CHAINING_DOMAIN

WELL_KNOWN_PORTS: dict[str, int] = {
    "postgres": 5432,
    "mysql": 3306,
    "redis": 6379,
    "mqtt": 1883,
    "http": 80,
    "https": 443,
}

LEARN_MORE = "Learn more: https://spinframework.dev/v3/http-outbound#granting-http-permissions-to-components"


class AllowedHostError(ValueError):
    """One ``allowed_outbound_hosts`` entry that Spin would refuse; the message says why."""


class InvalidAllowedHosts(ShimError):
    """A component's ``allowed_outbound_hosts`` cannot be used; names the component and the entry."""

    def __init__(self, component_id: str, entry: str, reason: str) -> None:
        self.component_id = component_id
        self.entry = entry
        self.reason = reason
        super().__init__(f"component {component_id!r}: allowed_outbound_hosts entry {entry!r} is invalid: {reason}")


def well_known_port(scheme: str) -> int | None:
    return WELL_KNOWN_PORTS.get(scheme)


# ---------------------------------------------------------------------------------------------
# Hosts, as url::Host::parse (WHATWG host parser) sees them.

HostKind = Literal["domain", "ipv4", "ipv6"]


@dataclass(frozen=True)
class Host:
    kind: HostKind
    value: str  # normalised: lower-case ASCII domain, dotted IPv4, compressed IPv6 (no brackets)

    def __str__(self) -> str:
        return f"[{self.value}]" if self.kind == "ipv6" else self.value


# WHATWG "forbidden domain code points": forbidden host code points, C0 controls, '%' and DEL.
_FORBIDDEN_DOMAIN = re.compile(r"[\x00-\x20#/:<>?@\[\\\]^|%\x7f]")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")


def _ipv4_number(part: str) -> int | None:
    """WHATWG IPv4 number parser: ``0x`` hex, leading-zero octal, else decimal; None if not a number."""
    if not part:
        return None
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if not digits:
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = {16: "0123456789abcdefABCDEF", 8: "01234567", 10: "0123456789"}[base]
    if not digits or any(c not in allowed for c in digits):
        return None
    return int(digits, base)


def _ends_in_a_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    return (last != "" and last.isascii() and last.isdigit()) or bool(_HEX.fullmatch(last))


def _parse_ipv4(domain: str) -> str:
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        raise AllowedHostError("invalid IPv4 address")
    numbers = []
    for part in parts:
        n = _ipv4_number(part)
        if n is None:
            raise AllowedHostError("invalid IPv4 address")
        numbers.append(n)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise AllowedHostError("invalid IPv4 address")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return str(ipaddress.IPv4Address(value))


def parse_host(text: str) -> Host:
    """``url::Host::parse``: a domain, IPv4 or ``[IPv6]``; raises AllowedHostError when invalid."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise AllowedHostError("invalid IPv6 address")
        inner = text[1:-1]
        if "%" in inner:
            raise AllowedHostError("invalid IPv6 address")
        try:
            return Host("ipv6", ipaddress.IPv6Address(inner).compressed)
        except ValueError:
            raise AllowedHostError("invalid IPv6 address") from None
    if not text:
        raise AllowedHostError("empty host")
    decoded = unquote_to_bytes(text).decode("utf-8", "replace")
    if decoded.isascii():
        domain = decoded.lower()
    else:
        import idna  # only for non-ASCII names

        try:
            domain = idna.encode(decoded, uts46=True, transitional=False).decode("ascii").lower()
        except idna.IDNAError as e:
            raise AllowedHostError(f"invalid international domain name: {e}") from None
    if not domain:
        raise AllowedHostError("empty host")
    if _FORBIDDEN_DOMAIN.search(domain):
        raise AllowedHostError("invalid domain character")
    if _ends_in_a_number(domain):
        return Host("ipv4", _parse_ipv4(domain))
    return Host("domain", domain)


# ---------------------------------------------------------------------------------------------
# One allow-list entry.


@dataclass(frozen=True)
class SchemePattern:
    scheme: str | None  # None: any scheme (``*``)

    @classmethod
    def parse(cls, scheme: str) -> SchemePattern:
        if scheme == "*":
            return cls(None)
        if scheme.startswith("{"):
            raise AllowedHostError("scheme lists are not supported")
        if any(not c.isalpha() for c in scheme):
            raise AllowedHostError("only alphabetic characters are allowed")
        return cls(scheme)

    def allows(self, scheme: str) -> bool:
        return self.scheme is None or self.scheme == scheme


HostPatternKind = Literal["any", "subdomain", "self", "literal", "cidr"]


@dataclass(frozen=True)
class HostPattern:
    kind: HostPatternKind
    literal: Host | None = None  # for "literal"
    suffix: str = ""  # for "subdomain": ".example.com"
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # for "cidr"

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        host = text.strip()
        if host == "*":
            return cls("any")
        if host in ("self", "self.alt"):
            return cls("self")
        if host.startswith("{"):
            if not host.endswith("}"):
                raise AllowedHostError("host lists are not yet supported")
            raise AllowedHostError("host lists are not yet supported")
        network = _parse_cidr(host)
        if network is not None:
            return cls("cidr", network=network)
        if host.endswith("/"):
            host = host[:-1]
        if "/" in host:
            raise AllowedHostError("must not include a path")
        if host.startswith("*."):
            domain = host[2:]
            if "*" in domain:
                raise AllowedHostError("wildcards are allowed only as prefixes")
            try:
                parsed = parse_host(domain)
            except AllowedHostError as e:
                raise AllowedHostError(f"invalid wildcard host {rust_debug_str('*.' + domain)}: {e}") from None
            if parsed.kind != "domain":
                raise AllowedHostError("wildcard suffix must be a domain")
            return cls("subdomain", suffix="." + parsed.value)
        if "*" in host:
            raise AllowedHostError("wildcards are allowed only as subdomains")
        return cls("literal", literal=parse_host(host))

    def allows(self, host: str) -> bool:
        try:
            parsed = parse_host(host)
        except AllowedHostError:
            return False
        if self.kind == "any":
            return True
        if self.kind == "subdomain":
            return parsed.kind == "domain" and parsed.value.endswith(self.suffix)
        if self.kind == "literal":
            return parsed == self.literal
        if self.kind == "cidr":
            assert self.network is not None
            if parsed.kind == "domain":
                return False
            return ipaddress.ip_address(parsed.value) in self.network
        return False  # "self" is checked by allows_relative

    def allows_relative(self) -> bool:
        return self.kind in ("any", "self")

    def is_for_service_chaining(self) -> bool:
        if self.kind == "literal" and self.literal is not None and self.literal.kind == "domain":
            return self.literal.value.endswith(SERVICE_CHAINING_SUFFIX)
        return self.kind == "subdomain" and self.suffix == SERVICE_CHAINING_SUFFIX


def _parse_cidr(host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """``ip_network::IpNetwork::from_str_truncate``: ``addr/len`` with host bits dropped; else None."""
    addr, slash, length = host.partition("/")
    if not slash or not length.isascii() or not length.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if "%" in addr or int(length) > ip.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{ip}/{int(length)}", strict=False)


_PORT_NUMBER = re.compile(r"\+?[0-9]+")  # what Rust's u16::from_str accepts


def _u16(text: str) -> int | None:
    if not _PORT_NUMBER.fullmatch(text):
        return None
    n = int(text)
    return n if n <= 0xFFFF else None


@dataclass(frozen=True)
class PortPattern:
    ranges: tuple[tuple[int, int], ...] | None  # None: any port; else half-open [start, end) ranges

    @classmethod
    def parse(cls, port: str, scheme: str) -> PortPattern:
        if not port:
            default = well_known_port(scheme)
            if default is None:
                raise AllowedHostError(
                    f"no port was provided and the scheme {rust_debug_str(scheme)} does not have a known "
                    "default port number"
                )
            return cls(((default, default + 1),))
        if port == "*":
            return cls(None)
        if port.startswith("{"):
            raise AllowedHostError("port lists are not yet supported")
        start_text, dots, end_text = port.partition("..")
        if dots:
            start, end = _u16(start_text), _u16(end_text)
            if start is None or end is None:
                raise AllowedHostError(f"port range {rust_debug_str(port)} contains non-number")
            return cls(((start, end),))
        single = _u16(port)
        if single is None:
            raise AllowedHostError(f"port {rust_debug_str(port)} is not a number")
        return cls(((single, single + 1),))

    def allows(self, port: int | None, scheme: str) -> bool:
        if self.ranges is None:
            return True
        effective = port if port is not None else well_known_port(scheme)
        if effective is None:
            return False
        return any(start <= effective < end for start, end in self.ranges)


@dataclass(frozen=True)
class AllowedHost:
    """One parsed ``allowed_outbound_hosts`` entry (``original`` is the text as written)."""

    original: str
    scheme: SchemePattern
    host: HostPattern
    port: PortPattern

    @classmethod
    def parse(cls, text: str) -> AllowedHost:
        """``AllowedHostConfig::parse``; raises AllowedHostError with Spin's reason."""
        url = text.strip()
        scheme, sep, rest = url.partition("://")
        if not sep:
            if url in ("*", ":", "", "?"):
                raise AllowedHostError(
                    f"{rust_debug_str(url)} is not an allowed outbound host format.\nHosts must be in the form "
                    "<scheme>://<host>[:<port>], with '*' wildcards allowed for each.\nIf you intended to allow "
                    "all outbound networking, you can use '*://*:*' - this will obviate all network sandboxing."
                    f"\n{LEARN_MORE}"
                )
            raise AllowedHostError(
                f"{rust_debug_str(url)} does not contain a scheme (e.g., 'http://' or '*://')\n{LEARN_MORE}"
            )
        head, colon, tail = rest.rpartition(":")
        if not colon:
            host, port = rest, ""
        elif tail == "":
            host, port = head, ""
        else:
            try:
                HostPattern.parse(rest)
                host, port = rest, ""
            except AllowedHostError:
                port, slash, path = tail.partition("/")
                if slash and path:
                    raise AllowedHostError(f"{rust_debug_str(url)} has a path but is not allowed to") from None
                host = head
        try:
            port_pattern = PortPattern.parse(port, scheme)
        except AllowedHostError as e:
            raise AllowedHostError(f"Invalid allowed host port {rust_debug_str(port)}: {e}") from None
        try:
            scheme_pattern = SchemePattern.parse(scheme)
        except AllowedHostError as e:
            raise AllowedHostError(f"Invalid allowed host scheme {rust_debug_str(scheme)}: {e}") from None
        try:
            host_pattern = HostPattern.parse(host)
        except AllowedHostError as e:
            raise AllowedHostError(f"Invalid allowed host {rust_debug_str(host)}: {e}") from None
        return cls(text, scheme_pattern, host_pattern, port_pattern)

    def allows(self, url: OutboundUrl) -> bool:
        return self.scheme.allows(url.scheme) and self.host.allows(url.host) and self.port.allows(url.port, url.scheme)

    def allows_relative(self, schemes: Iterable[str]) -> bool:
        return any(self.scheme.allows(s) for s in schemes) and self.host.allows_relative()

    def __str__(self) -> str:
        return self.original


# ---------------------------------------------------------------------------------------------
# Destinations.


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class OutboundUrl:
    """A destination: scheme, host (as written in the URL, without brackets for IPv6) and port."""

    scheme: str
    host: str
    port: int | None
    original: str

    @classmethod
    def parse(cls, url: str, scheme: str) -> OutboundUrl:
        """``OutboundUrl::parse``: if ``url`` has no ``scheme://host``, ``{scheme}://`` is put in front.

        The user-info part (``user:pass#word@``) is percent-encoded first, so a password with
        ``#`` or ``/`` does not hide the host, as Spin does. Raises AllowedHostError.
        """
        original = url
        at = url.find("@")
        if at >= 0:
            scheme_end = url.find("://")
            scheme_end = scheme_end + 3 if scheme_end >= 0 else 0
            slash = url.find("/", scheme_end)
            path_start = slash if slash >= 0 else len(url) + 1
            if at < path_start:
                userinfo = url[scheme_end:at]
                url = url[:scheme_end] + quote(userinfo, safe="") + url[at:]
        parsed = _split_url(url)
        if parsed is None:
            parsed = _split_url(f"{scheme}://{url}")
        if parsed is None:
            raise AllowedHostError(f"{rust_debug_str(original)} does not have a host component")
        url_scheme, host, port = parsed
        return cls(url_scheme, host, port, original)

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host


def _split_url(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of ``scheme://[userinfo@]host[:port][/…]``, or None if it has no host."""
    m = _SCHEME.match(url)
    if m is None or not m.group(2).startswith("//"):
        return None
    scheme = m.group(1).lower()
    rest = m.group(2)[2:]
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i >= 0:
            end = min(end, i)
    authority = rest[:end].rpartition("@")[2]
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise AllowedHostError(f"{rust_debug_str(url)}: invalid IPv6 address")
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise AllowedHostError(f"{rust_debug_str(url)}: invalid port")
        port_text = after[1:]
    else:
        host, _, port_text = authority.partition(":") if authority.count(":") == 1 else (authority, "", "")
        if authority.count(":") > 1:
            raise AllowedHostError(f"{rust_debug_str(url)}: invalid port")
    if not host:
        return None
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 0xFFFF:
            raise AllowedHostError(f"{rust_debug_str(url)}: invalid port number")
        port = int(port_text)
    return scheme, host, port


# ---------------------------------------------------------------------------------------------
# A component's whole allow-list.


@dataclass(frozen=True)
class AllowList:
    """``AllowedHostsConfig::SpecificHosts``: what one component may reach (after templates)."""

    entries: tuple[AllowedHost, ...]

    def allows(self, url: OutboundUrl) -> bool:
        return any(e.allows(url) for e in self.entries)

    def allows_relative(self, schemes: Sequence[str]) -> bool:
        return any(e.allows_relative(schemes) for e in self.entries)

    def allows_url(self, url: str, scheme: str) -> bool:
        """``check_url`` without the reporting: a URL that cannot be parsed is not allowed."""
        try:
            return self.allows(OutboundUrl.parse(url, scheme))
        except AllowedHostError:
            return False


def _parse_or_skip(resolved: str) -> AllowedHost | None:
    if resolved in ("", "http://", "https://"):
        return None
    return AllowedHost.parse(resolved)


def expand_service_chaining(entries: Iterable[AllowedHost], component_ids: Sequence[str]) -> list[AllowedHost]:
    """``http://*.spin.internal`` becomes one literal ``<id>.spin.internal`` entry per component."""
    out: list[AllowedHost] = []
    for entry in entries:
        if entry.host.kind == "subdomain" and entry.host.suffix == SERVICE_CHAINING_SUFFIX:
            for cid in component_ids:
                host = HostPattern("literal", literal=parse_host(cid + SERVICE_CHAINING_SUFFIX))
                out.append(AllowedHost(entry.original, entry.scheme, host, entry.port))
        else:
            out.append(entry)
    return out


@dataclass(frozen=True)
class AllowListSpec:
    """A component's ``allowed_outbound_hosts`` parsed once: literal entries, templates deferred.

    ``parse`` fails on what Spin refuses at load time; ``resolve`` turns it into an
    :class:`AllowList` with the current variable values (Spin does this per instance).
    """

    items: tuple[AllowedHost | Template, ...]
    component_ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, hosts: Sequence[str], component_ids: Sequence[str] = ()) -> AllowListSpec:
        """``AllowedHostsConfig::parse_partial``; raises AllowedHostError naming the bad entry."""
        if len(hosts) == 1 and hosts[0] == "insecure:allow-all":
            raise AllowedHostError(
                "'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all "
                "outbound traffic'"
            )
        items: list[AllowedHost | Template] = []
        for host in hosts:
            try:
                template = Template.parse(host)
            except VariableError as e:
                raise AllowedHostError(f"{host!r}: {e.message}") from None
            if not template.references:
                items.append(AllowedHost.parse(host))
            else:
                items.append(template)
        return cls(tuple(items), tuple(component_ids))

    @property
    def is_literal(self) -> bool:
        return all(isinstance(i, AllowedHost) for i in self.items)

    def resolve(self, render: Callable[[Template], str]) -> AllowList:
        """Resolve templates with ``render`` (raises VariableError); invalid results raise AllowedHostError."""
        entries: list[AllowedHost] = []
        for item in self.items:
            if isinstance(item, AllowedHost):
                entries.append(item)
                continue
            resolved = render(item)
            try:
                parsed = _parse_or_skip(resolved)
            except AllowedHostError as e:
                raise AllowedHostError(
                    f"template {rust_debug_str(_template_text(item))} resolved to {rust_debug_str(resolved)}: {e}"
                ) from None
            if parsed is not None:
                entries.append(parsed)
        return AllowList(tuple(expand_service_chaining(entries, self.component_ids)))

    def validate_with_defaults(self, defaults: Callable[[str], str | None]) -> None:
        """``AllowedHostsConfig::validate``: templates whose variables all have defaults must parse."""
        for item in self.items:
            if isinstance(item, AllowedHost):
                continue
            values = {name: defaults(name) for name in item.references}
            if any(v is None for v in values.values()):
                continue  # a value only known at run time: checked then
            known = {name: value or "" for name, value in values.items()}
            resolved = item.render(known.__getitem__)
            try:
                _parse_or_skip(resolved)
            except AllowedHostError as e:
                raise AllowedHostError(
                    f"using default variable value(s) with template {rust_debug_str(_template_text(item))} "
                    f"results in invalid config {rust_debug_str(resolved)}: {e}"
                ) from None

    def entries_text(self) -> list[str]:
        return [str(i) if isinstance(i, AllowedHost) else _template_text(i) for i in self.items]


def _template_text(t: Template) -> str:
    return "".join("{{ " + text + " }}" if is_expr else text for is_expr, text in t.parts)


def parse_component_hosts(
    component_id: str,
    hosts: Sequence[str],
    component_ids: Sequence[str],
    defaults: Callable[[str], str | None] = lambda _name: None,
) -> AllowListSpec:
    """Parse and validate one component's list at start; InvalidAllowedHosts names component and entry."""
    if len(hosts) == 1 and hosts[0] == "insecure:allow-all":
        raise InvalidAllowedHosts(
            component_id, hosts[0], "not allowed - use '*://*:*' instead if you really want to allow all"
        )
    for host in hosts:
        try:
            spec = AllowListSpec.parse([host], component_ids)
            spec.validate_with_defaults(defaults)
        except AllowedHostError as e:
            raise InvalidAllowedHosts(component_id, host, str(e)) from None
    return AllowListSpec.parse(hosts, component_ids)


def service_chaining_target(host: str) -> str | None:
    """``parse_service_chaining_host``: ``hello`` for ``hello.spin.internal[:port]``, else None."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    first, dot, rest = name.partition(".")
    if dot and rest == SERVICE_CHAINING_DOMAIN:
        return first
    return None
