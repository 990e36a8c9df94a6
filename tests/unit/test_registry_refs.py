"""OCI reference parsing, telling references from paths, and the plain-HTTP and pull-policy rules."""

from __future__ import annotations

import pytest
from kubespin_shim.registry.client import plain_http_allowed
from kubespin_shim.registry.errors import InvalidReferenceError, RegistryError
from kubespin_shim.registry.pull import pull_policy
from kubespin_shim.registry.refs import Reference, is_loopback_host, looks_like_reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/apps/hello:v1", Reference("127.0.0.1:5000", "apps/hello", "v1", None)),
        ("localhost:5000/hello", Reference("localhost:5000", "hello", None, None)),
        ("localhost/hello", Reference("localhost", "hello", None, None)),
        ("ghcr.io/owner/app", Reference("ghcr.io", "owner/app", None, None)),
        ("GHCR.io/owner/app:V1.0_rc-1", Reference("ghcr.io", "owner/app", "V1.0_rc-1", None)),
        (f"ghcr.io/o/app@{DIGEST}", Reference("ghcr.io", "o/app", None, DIGEST)),
        (f"ghcr.io/o/app:v2@{DIGEST}", Reference("ghcr.io", "o/app", "v2", DIGEST)),
        ("[::1]:5000/a/b-c__d.e:t", Reference("[::1]:5000", "a/b-c__d.e", "t", None)),
        ("docker.io/library/nginx:1", Reference("docker.io", "library/nginx", "1", None)),
    ],
)
def test_references_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected
    assert looks_like_reference(text)


def test_reference_properties() -> None:
    ref = parse_reference(f"127.0.0.1:5000/apps/hello:v1@{DIGEST}")
    assert (ref.name, ref.target, ref.hostname) == ("127.0.0.1:5000/apps/hello", DIGEST, "127.0.0.1")
    assert ref.is_loopback
    assert str(ref) == f"127.0.0.1:5000/apps/hello:v1@{DIGEST}"
    assert parse_reference("ghcr.io/a/b").target == "latest"
    assert parse_reference("docker.io/library/x").api_host == "registry-1.docker.io"
    assert parse_reference("[::1]:5000/x").hostname == "::1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello:v1", "names no registry host; write it in full, e.g. 127.0.0.1:5000/hello:v1"),
        ("ghcr.io:v1", "no repository"),
        ("apps/hello", "does not start with a registry host"),
        ("ghcr.io", "no repository"),
        ("ghcr.io/Owner/App:v1", "lower case"),
        ("ghcr.io/o/app@sha256:abc", "is not a sha256"),
        ("ghcr.io/o/app:", "not an OCI reference"),
        ("ghcr.io/o//app", "not an OCI reference"),
    ],
)
def test_invalid_references_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError, match=reason):
        parse_reference(text)


@pytest.mark.parametrize(
    "text",
    ["examples/hello", "./spin.toml", "app", "tests/apps/py-hello", "/abs/spin.toml", "hello:v1", "dir/app.tar.gz"],
)
def test_paths_are_not_references(text: str) -> None:
    assert not looks_like_reference(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("registry.localhost", True), ("10.0.0.1", False), ("ghcr.io", False), ("localhost.example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_plain_http_only_for_loopback_or_when_asked() -> None:
    remote, local = parse_reference("registry.example.com:5000/a"), parse_reference("127.0.0.1:5000/a")
    assert plain_http_allowed(local, False, {})
    assert not plain_http_allowed(remote, False, {})
    assert plain_http_allowed(remote, True, {})
    assert plain_http_allowed(remote, False, {"KUBESPIN_INSECURE_REGISTRIES": "other.io, registry.example.com:5000"})
    assert plain_http_allowed(remote, False, {"KUBESPIN_INSECURE_REGISTRIES": "registry.example.com"})
    assert not plain_http_allowed(remote, False, {"KUBESPIN_INSECURE_REGISTRIES": "registry.example.com:6000"})


def test_pull_policy_defaults_follow_kubelet() -> None:
    assert pull_policy(parse_reference("ghcr.io/a/b"), None, {}) == "Always"
    assert pull_policy(parse_reference("ghcr.io/a/b:latest"), None, {}) == "Always"
    assert pull_policy(parse_reference("ghcr.io/a/b:v1"), None, {}) == "IfNotPresent"
    assert pull_policy(parse_reference(f"ghcr.io/a/b@{DIGEST}"), None, {}) == "IfNotPresent"
    assert pull_policy(parse_reference("ghcr.io/a/b:v1"), None, {"KUBESPIN_PULL_POLICY": "always"}) == "Always"
    assert pull_policy(parse_reference("ghcr.io/a/b"), "never", {"KUBESPIN_PULL_POLICY": "Always"}) == "Never"
    with pytest.raises(RegistryError, match="not one of Always, IfNotPresent, Never"):
        pull_policy(parse_reference("ghcr.io/a/b"), "sometimes", {})
