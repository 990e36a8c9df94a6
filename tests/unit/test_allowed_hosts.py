"""``allowed_outbound_hosts`` parsing and matching, replaying the test cases of Spin's
``crates/outbound-networking-config/src/allowed_hosts.rs`` (spinframework/spin) one by one."""

from __future__ import annotations

import ipaddress

import pytest
from kubespin_shim.outbound.allowed_hosts import (
    AllowedHost,
    AllowedHostError,
    AllowListSpec,
    Host,
    HostPattern,
    InvalidAllowedHosts,
    OutboundUrl,
    PortPattern,
    SchemePattern,
    parse_component_hosts,
    parse_host,
    service_chaining_target,
)
from kubespin_shim.variables import Template


def entry(scheme: str | None, host: HostPattern, port: PortPattern) -> tuple[object, ...]:
    return (SchemePattern(scheme), host, port)


def parsed(text: str) -> tuple[object, ...]:
    a = AllowedHost.parse(text)
    return (a.scheme, a.host, a.port)


def lit(host: str) -> HostPattern:
    return HostPattern("literal", literal=parse_host(host))


def port(p: int) -> PortPattern:
    return PortPattern(((p, p + 1),))


def cidr(text: str) -> HostPattern:
    return HostPattern("cidr", network=ipaddress.ip_network(text, strict=False))


def allow_list(hosts: list[str], variables: dict[str, str] | None = None, components: tuple[str, ...] = ()):
    values = variables or {}

    def render(t: Template) -> str:
        return t.render(lambda name: values[name])

    return AllowListSpec.parse(hosts, components).resolve(render)


def allows(hosts: list[str], url: str, scheme: str) -> bool:
    return allow_list(hosts).allows(OutboundUrl.parse(url, scheme))


# ---- parse: the shapes Spin accepts


def test_url_without_port_gets_the_scheme_default() -> None:
    assert parsed("http://spin.fermyon.dev") == entry("http", lit("spin.fermyon.dev"), port(80))
    assert parsed("http://spin.fermyon.dev/") == entry("http", lit("spin.fermyon.dev"), port(80))
    assert parsed("https://spin.fermyon.dev") == entry("https", lit("spin.fermyon.dev"), port(443))


def test_url_with_port_and_port_range() -> None:
    assert parsed("http://spin.fermyon.dev:4444") == entry("http", lit("spin.fermyon.dev"), port(4444))
    assert parsed("http://spin.fermyon.dev:4444/") == entry("http", lit("spin.fermyon.dev"), port(4444))
    assert parsed("https://spin.fermyon.dev:5555") == entry("https", lit("spin.fermyon.dev"), port(5555))
    assert parsed("http://spin.fermyon.dev:4444..5555") == entry(
        "http", lit("spin.fermyon.dev"), PortPattern(((4444, 5555),))
    )


def test_scheme_is_required() -> None:
    for text in ("spin.fermyon.dev", "spin.fermyon.dev:80", "example.com", "localhost", "localhost:3001"):
        with pytest.raises(AllowedHostError, match="does not contain a scheme"):
            AllowedHost.parse(text)
    with pytest.raises(AllowedHostError, match="not an allowed outbound host format"):
        AllowedHost.parse("*")


def test_glob_scheme_self_localhost_and_subdomains() -> None:
    assert parsed("*://spin.fermyon.dev:7777") == entry(None, lit("spin.fermyon.dev"), port(7777))
    assert parsed("http://self") == entry("http", HostPattern("self"), port(80))
    assert parsed("http://localhost") == entry("http", lit("localhost"), port(80))
    assert parsed("http://localhost:3001") == entry("http", lit("localhost"), port(3001))
    assert parsed("http://*.example.com") == entry("http", HostPattern("subdomain", suffix=".example.com"), port(80))
    assert parsed("*://*:*") == entry(None, HostPattern("any"), PortPattern(None))


def test_ip_addresses_and_cidr() -> None:
    assert parsed("http://192.168.1.1") == entry("http", lit("192.168.1.1"), port(80))
    assert parsed("http://192.168.1.1:3002") == entry("http", lit("192.168.1.1"), port(3002))
    assert parsed("http://[::1]:8001") == entry("http", lit("[::1]"), port(8001))
    assert parsed("http://[::1]") == entry("http", lit("[::1]"), port(80))
    assert parsed("*://127.0.0.0/24:80") == entry(None, cidr("127.0.0.0/24"), port(80))
    with pytest.raises(AllowedHostError):  # '*' has no default port
        AllowedHost.parse("*://127.0.0.0/24")
    assert parsed("*://ff00::/8:80") == entry(None, cidr("ff00::/8"), port(80))


@pytest.mark.parametrize(
    ("text", "host", "p"),
    [("http://[::1]", "[::1]", 80), ("https://[::1]", "[::1]", 443), ("http://[2001:db8::1]", "[2001:db8::1]", 80)],
)
def test_ipv6_literal_without_port_uses_scheme_default(text: str, host: str, p: int) -> None:
    assert parsed(text) == entry(text.split("://")[0], lit(host), port(p))


def test_ipv6_literal_with_explicit_port() -> None:
    assert parsed("http://[2001:db8::1]:443") == entry("http", lit("[2001:db8::1]"), port(443))
    assert parsed("http://[::1]:*") == entry("http", lit("[::1]"), PortPattern(None))
    assert parsed("http://[::1]:8000..9000") == entry("http", lit("[::1]"), PortPattern(((8000, 9000),)))
    assert parsed("*://[::1]:80") == entry(None, lit("[::1]"), port(80))
    assert parsed("http://[::1]:8080/") == entry("http", lit("[::1]"), port(8080))


@pytest.mark.parametrize(
    ("text", "net", "p"),
    [
        ("http://ff00::/8", "ff00::/8", 80),
        ("https://2001:db8::/32", "2001:db8::/32", 443),
        ("http://::1/128", "::1/128", 80),
        ("http://10.0.0.0/8", "10.0.0.0/8", 80),
    ],
)
def test_cidr_without_port_uses_scheme_default(text: str, net: str, p: int) -> None:
    assert parsed(text) == entry(text.split("://")[0], cidr(net), port(p))


def test_ipv6_cidr_with_explicit_port() -> None:
    assert parsed("http://2001:db8::/32:443") == entry("http", cidr("2001:db8::/32"), port(443))


# ---- parse: what Spin refuses


def test_paths_are_refused_except_a_single_slash() -> None:
    assert AllowedHost.parse("http://spin.fermyon.dev/")
    for text in ("http://spin.fermyon.dev/a", "http://spin.fermyon.dev:6666/a/b", "http://*.fermyon.dev/a"):
        with pytest.raises(AllowedHostError):
            AllowedHost.parse(text)


@pytest.mark.parametrize(
    "bad",
    [
        "http://[::1]/foo",
        "http://ff00::/8/extra",
        "http://[::1",
        "http://[::1]junk",
        "http://[::1]::80",
        "http://[v1.]",
        "[::1]",
        "[::1]:8080",
    ],
)
def test_rejects_malformed_ipv6(bad: str) -> None:
    with pytest.raises(AllowedHostError):
        AllowedHost.parse(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "http://example.com:notaport",
        "http://example.com:8080..70000",
        "http://self:notaport",
        "http://self.alt:notaport",
        "http://*:notaport",
        "http://127.0.0.1:notaport",
        "http://[::1]:notaport",
        "http://*.example.com:notaport",
        "http://*.example.com:8080..",
        "http://*.example.com:8O8O",
        "http://example.com:8080/p",
        "http://*.example.com:8080/p",
        "http://*.example.com/p",
        "http://127.0.0.0/24/p",
        "http://[::1junk",
        "http://*.",
        "http://*.:8080",
        "example.com:8080",
        "http://example%.com",
        "http://example%2.com",
        "http://example%GG.com",
        "http://exa[mple.com",
        r"http://exa\mple.com",
        "http://example.com:80:90",
        "http://[vG.example]",
        "http://example.com//",
        "http://*.example.com//",
        "http://self//",
        "http://[::1]//",
        "http://*.127.0.0.1",
        "http://*.192.168.001.001",
        "http://*.[::1]",
        "http://*.[2001:db8::1]",
        "{http,https}://example.com",
        "http://ex*ample.com",
        "http://*.ex*ample.com",
    ],
)
def test_rejects_invalid_entries(bad: str) -> None:
    with pytest.raises(AllowedHostError):
        AllowedHost.parse(bad)


@pytest.mark.parametrize(
    "bad", ["http://example.com:99999", "http://[::1]:99999", "http://ff00::/8:99999", "http://*.example.com:99999"]
)
def test_invalid_explicit_port_reports_port_error(bad: str) -> None:
    with pytest.raises(AllowedHostError) as info:
        AllowedHost.parse(bad)
    assert str(info.value).startswith('Invalid allowed host port "99999"')


def test_insecure_allow_all_is_refused() -> None:
    with pytest.raises(AllowedHostError, match=r"use '\*://\*:\*'"):
        AllowListSpec.parse(["insecure:allow-all"])
    with pytest.raises(AllowedHostError):  # with other entries it is just an entry without a scheme
        AllowListSpec.parse(["spin.fermyon.dev", "insecure:allow-all"])


# ---- matching


def test_specific_hosts() -> None:
    hosts = ["*://spin.fermyon.dev:443", "http://example.com:8383"]
    assert allows(hosts, "http://example.com:8383/foo/bar", "http")
    assert allows(hosts, "https://spin.fermyon.dev", "https")
    assert allows(hosts, "https://spin.fermyon.dev/", "https")
    assert not allows(hosts, "http://example.com/", "http")
    assert not allows(hosts, "http://google.com/", "http")
    assert allows(hosts, "spin.fermyon.dev:443", "https")
    assert allows(hosts, "example.com:8383", "http")


def test_trailing_slash_in_entry() -> None:
    assert allows(["https://my.api.com/"], "https://my.api.com", "https")
    assert allows(["https://my.api.com/"], "https://my.api.com/", "https")


def test_subdomain_wildcards() -> None:
    hosts = ["http://*.example.com", "http://*.example2.com:8383"]
    assert allows(hosts, "http://a.example.com/foo/bar", "http")
    assert allows(hosts, "http://a.b.example.com/foo/bar", "http")
    assert allows(hosts, "http://a.b.example2.com:8383/foo/bar", "http")
    assert not allows(hosts, "http://a.b.example2.com/foo/bar", "http")
    assert not allows(hosts, "http://example.com/foo/bar", "http")
    assert not allows(hosts, "http://example.com:8383/foo/bar", "http")
    assert not allows(hosts, "http://myexample.com/foo/bar", "http")


def test_wildcard_subdomain_is_case_insensitive() -> None:
    assert allows(["http://*.Example.COM"], "http://foo.example.com", "http")
    assert allows(["http://*.Example.COM"], "http://a.b.example.com/x", "http")
    assert not allows(["http://*.Example.COM"], "http://example.com", "http")


def test_hash_in_database_password() -> None:
    hosts = ["mysql://xyz.com"]
    assert allows(hosts, "mysql://user:pass#word@xyz.com", "mysql")
    assert allows(hosts, "mysql://user%3Apass%23word@xyz.com", "mysql")
    assert allows(hosts, "user%3Apass%23word@xyz.com", "mysql")


def test_at_signs_in_paths_do_not_hide_the_host() -> None:
    for url in (
        "https://example.com/file@0.1.0.json",
        "https://user:password@example.com/file@0.1.0.json",
        "https://user:pass#word@example.com/file@0.1.0.json",
        "https://user:password@example.com",
    ):
        assert OutboundUrl.parse(url, "https").host == "example.com"


def test_cidr_matching() -> None:
    assert allows(["*://127.0.0.1/24:63551"], "tcp://127.0.0.1:63551", "tcp")
    assert allows(["*://127.0.0.1/24:63551"], "tcp://127.0.0.200:63551", "tcp")
    assert not allows(["*://127.0.0.1/24:63551"], "tcp://127.0.1.1:63551", "tcp")
    net = ["http://2001:db8::/32"]
    assert allows(net, "http://[2001:db8::1]", "http")
    assert allows(net, "http://[2001:db8:abcd::1]/x", "http")
    assert not allows(net, "http://[2001:db9::1]", "http")


def test_ipv6_literal_matching() -> None:
    hosts = ["http://[::1]"]
    assert allows(hosts, "http://[::1]", "http")
    assert allows(hosts, "http://[::1]/some/path", "http")
    assert allows(hosts, "http://[::1]:80", "http")
    assert not allows(hosts, "http://[::2]", "http")
    assert not allows(hosts, "http://[::1]:81", "http")


def test_port_ranges_exclude_the_end_and_any_port() -> None:
    assert allows(["http://h:4000..4002"], "http://h:4001", "http")
    assert not allows(["http://h:4000..4002"], "http://h:4002", "http")
    assert allows(["http://h:*"], "http://h:1", "http")
    assert not allows(["http://h:*"], "https://h:1", "https")


def test_hosts_are_normalised_like_urls() -> None:
    assert allows(["http://EXAMPLE.com"], "http://example.COM/", "http")
    assert allows(["https://bücher.example"], "https://xn--bcher-kva.example/", "https")
    assert allows(["http://192.168.1.1"], "http://192.168.001.001/", "http")  # WHATWG reads octal
    assert parse_host("0x7f.1") == Host("ipv4", "127.0.0.1")


def test_self_allows_only_relative_requests() -> None:
    allow = allow_list(["http://self"])
    assert allow.allows_relative(["http", "https"])
    assert not allow.allows(OutboundUrl.parse("http://self/", "http"))
    assert allow_list(["*://*:*"]).allows_relative(["http"])
    assert not allow_list(["https://example.com"]).allows_relative(["http", "https"])
    assert not allow_list(["redis://self"]).allows_relative(["http", "https"])


def test_wildcard_service_chaining_is_expanded_per_component() -> None:
    spec = AllowListSpec.parse(
        ["pg://localhost:5656", "http://*.spin.internal", "https://spinframework.dev"], ("first", "second", "third")
    )
    allow = spec.resolve(lambda t: "")
    hosts = [str(e.host.literal) for e in allow.entries]
    assert hosts == [
        "localhost",
        "first.spin.internal",
        "second.spin.internal",
        "third.spin.internal",
        "spinframework.dev",
    ]
    assert allow.allows(OutboundUrl.parse("http://second.spin.internal/x", "https"))
    assert not allow.allows(OutboundUrl.parse("http://fourth.spin.internal/x", "https"))


# ---- templates


def test_empty_template_values_are_skipped() -> None:
    allow = allow_list(["https://{{ one }}", "{{ two }}", "https://three"], {"one": "", "two": ""})
    assert [str(e.host.literal) for e in allow.entries] == ["three"]


def test_templates_resolve_host_and_port() -> None:
    allow = allow_list(
        ["http://{{ dbhost }}", "http://{{ dbhost }}:{{ dbport }}"], {"dbhost": "example.com", "dbport": "1234"}
    )
    assert allow.allows(OutboundUrl.parse("http://example.com/", "http"))
    assert allow.allows(OutboundUrl.parse("http://example.com:1234/", "http"))
    assert not allow.allows(OutboundUrl.parse("http://example.com:1235/", "http"))


def test_bad_template_value_fails_resolution() -> None:
    with pytest.raises(AllowedHostError, match="zoinks"):
        allow_list(["http://{{ dbhost }}"], {"dbhost": "zoinks, Scooby!"})


def test_start_validation_with_defaults() -> None:
    defaults = {"dbhost": "example.com"}.get
    parse_component_hosts("c", ["http://x.y", "*://my.db:*"], [], defaults)
    parse_component_hosts("c", ["http://{{ dbhost }}"], [], defaults)
    parse_component_hosts("c", ["http://{{ nodefault }}"], [], defaults)  # deferred to run time
    with pytest.raises(InvalidAllowedHosts) as info:
        parse_component_hosts("c", ["http://{{ bad }}"], [], {"bad": "zoinks, Scooby!"}.get)
    assert "using default variable value(s)" in str(info.value)
    with pytest.raises(InvalidAllowedHosts) as info:
        parse_component_hosts("web", ["http://x.y", "zootle! wurdl!", "}{ !!**"], [])
    assert info.value.component_id == "web"
    assert info.value.entry == "zootle! wurdl!"
    assert "component 'web'" in str(info.value) and "zootle! wurdl!" in str(info.value)


def test_service_chaining_target() -> None:
    assert service_chaining_target("hello.spin.internal") == "hello"
    assert service_chaining_target("hello.spin.internal:80") == "hello"
    assert service_chaining_target("a.b.spin.internal") is None
    assert service_chaining_target("example.com") is None


def test_a_port_number_is_digits_only() -> None:
    # Rust's u16::from_str, which Spin uses: an optional "+", digits, nothing after (a regex "$"
    # would have let a final newline through, and int() then accepts it)
    from kubespin_shim.outbound.allowed_hosts import _u16

    assert _u16("80") == 80 and _u16("+80") == 80 and _u16("65535") == 65535
    assert _u16("80\n") is None and _u16(" 80") is None and _u16("65536") is None and _u16("") is None
