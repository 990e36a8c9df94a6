"""Where registry credentials come from: flags, KUBESPIN_REGISTRY_AUTH (pull secrets), Docker configs, helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from kubespin_shim.registry.auth import config_paths, find_credentials
from kubespin_shim.registry.errors import RegistryAuthError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_search_order_flag_env_then_docker_config(tmp_path: Path) -> None:
    env = {"KUBESPIN_REGISTRY_AUTH": f"{tmp_path / 'a.json'}{os.pathsep}{tmp_path / 'b.json'}",
           "DOCKER_CONFIG": str(tmp_path / "docker")}
    assert config_paths([tmp_path / "flag.json"], env) == [
        (tmp_path / "flag.json", True),
        (tmp_path / "a.json", True),
        (tmp_path / "b.json", True),
        (tmp_path / "docker" / "config.json", False),
    ]
    assert config_paths([], {"HOME": "/nowhere"})[-1] == (Path.home() / ".docker" / "config.json", False)


def test_kubernetes_dockerconfigjson_secret_file(tmp_path: Path) -> None:
    # What a kubernetes.io/dockerconfigjson Secret mounted at /var/run/secrets/... contains.
    secret = write(tmp_path / "pull-secret" / ".dockerconfigjson",
                   {"auths": {"127.0.0.1:5000": {"username": "alice", "password": "pw", "auth": b64("alice:pw")}}})
    lookup = find_credentials("127.0.0.1:5000", (), {"KUBESPIN_REGISTRY_AUTH": str(secret),
                                                      "DOCKER_CONFIG": str(tmp_path / "none")})
    assert lookup.credentials is not None
    assert (lookup.credentials.username, lookup.credentials.password) == ("alice", "pw")
    assert str(secret) in lookup.credentials.source and "127.0.0.1:5000" in lookup.credentials.source


def test_legacy_dockercfg_and_username_password_fields(tmp_path: Path) -> None:
    legacy = write(tmp_path / ".dockercfg", {"https://registry.example.com/v1/": {"username": "bob", "password": "x"}})
    lookup = find_credentials("registry.example.com", [legacy], {"DOCKER_CONFIG": str(tmp_path)})
    assert lookup.credentials is not None and lookup.credentials.username == "bob"


def test_first_file_with_an_entry_wins_and_misses_are_listed(tmp_path: Path) -> None:
    first = write(tmp_path / "first.json", {"auths": {"other.io": {"auth": b64("o:o")}}})
    docker = write(tmp_path / "docker" / "config.json", {"auths": {"ghcr.io": {"auth": b64("g:secret")}}})
    lookup = find_credentials("ghcr.io", [first], {"DOCKER_CONFIG": str(docker.parent)})
    assert lookup.credentials is not None and lookup.credentials.username == "g"
    assert lookup.searched == [f"{first} (no entry for ghcr.io)"]
    missing = find_credentials("quay.io", [first], {"DOCKER_CONFIG": str(tmp_path / "empty")})
    assert missing.credentials is None
    assert missing.where() == f"{first} (no entry for quay.io); {tmp_path / 'empty' / 'config.json'} (no such file)"


@pytest.mark.parametrize(
    ("key", "registry", "matches"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", True),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000", True),
        ("127.0.0.1:5000", "127.0.0.1:5001", False),
        ("127.0.0.1", "127.0.0.1:5000", False),
        ("https://index.docker.io/v1/", "docker.io", True),
        ("docker.io", "registry-1.docker.io", True),
        ("*.example.com", "registry.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com:443", "registry.example.com", False),
        ("GHCR.IO", "ghcr.io", True),
    ],
)
def test_key_matching_like_docker_and_kubelet(tmp_path: Path, key: str, registry: str, matches: bool) -> None:
    config = write(tmp_path / "c.json", {"auths": {key: {"auth": b64("u:p")}}})
    lookup = find_credentials(registry, [config], {"DOCKER_CONFIG": str(tmp_path / "none")})
    assert (lookup.credentials is not None) is matches


def test_registry_token_is_kept_as_a_bearer_token(tmp_path: Path) -> None:
    config = write(tmp_path / "c.json", {"auths": {"ghcr.io": {"registrytoken": "s3cr3t-t0ken"}}})
    creds = find_credentials("ghcr.io", [config], {}).credentials
    assert creds is not None and (creds.token, creds.username) == ("s3cr3t-t0ken", None)
    assert "s3cr3t" not in repr(creds)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"auth": "%%%"}, "not base64"),
        ({"auth": b64("no-colon")}, "no user:password pair"),
        ({"identitytoken": "x"}, "identity token, which kubespin does not support"),
    ],
)
def test_unusable_entries_are_errors_naming_the_file(tmp_path: Path, entry: dict[str, str], message: str) -> None:
    config = write(tmp_path / "c.json", {"auths": {"ghcr.io": entry}})
    with pytest.raises(RegistryAuthError, match=message) as caught:
        find_credentials("ghcr.io", [config], {})
    assert str(config) in str(caught.value)


def test_files_asked_for_must_exist_and_parse(tmp_path: Path) -> None:
    with pytest.raises(RegistryAuthError, match=r"missing\.json does not exist \(given for ghcr\.io"):
        find_credentials("ghcr.io", [tmp_path / "missing.json"], {})
    with pytest.raises(RegistryAuthError, match="KUBESPIN_REGISTRY_AUTH"):
        find_credentials("ghcr.io", [], {"KUBESPIN_REGISTRY_AUTH": str(tmp_path / "gone.json")})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RegistryAuthError, match=r"cannot read registry credentials from .*bad\.json"):
        find_credentials("ghcr.io", [tmp_path / "bad.json"], {})


def helper(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers_run_like_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A real helper process: reads the server on stdin, answers JSON (or fails for unknown servers).
    helper(bin_dir, "kubespin-test", """read server
if [ "$server" = "ghcr.io" ]; then
  echo '{"ServerURL":"ghcr.io","Username":"helper-user","Secret":"helper-secret"}'
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = write(tmp_path / "c.json", {"credHelpers": {"ghcr.io": "kubespin-test"}, "credsStore": "kubespin-test"})
    creds = find_credentials("ghcr.io", [config], {}).credentials
    assert creds is not None and (creds.username, creds.password) == ("helper-user", "helper-secret")
    assert "docker-credential-kubespin-test" in creds.source
    lookup = find_credentials("quay.io", [config], {"DOCKER_CONFIG": str(tmp_path / "none")})
    assert lookup.credentials is None
    assert "credentials not found in native keychain" in lookup.where()
    absent = write(tmp_path / "d.json", {"credsStore": "not-installed"})
    assert "docker-credential-not-installed" in find_credentials("ghcr.io", [absent], {}).where()
