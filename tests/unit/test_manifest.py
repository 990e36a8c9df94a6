"""spin.toml (v2) → AppManifest: the good fixture app field by field, and every broken fixture."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest
from kubespin_shim.errors import ManifestError, ShimError
from kubespin_shim.manifest import (
    FileMount,
    HttpTrigger,
    VariableDecl,
    convert_allowed_http_hosts,
    glob_matches,
    guest_files,
    id_problem,
    load_app,
    load_manifest,
    template_references,
)

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
# The smallest valid core module; the loader only needs the file to exist and be hashable.
WASM = b"\0asm\x01\0\0\0"


def make_app(tmp_path: Path) -> Path:
    """Copy the fixture app (``*.wasm`` is git-ignored, so the component binary is written here)."""
    app = tmp_path / "app"
    shutil.copytree(FIXTURES / "app", app)
    (app / "hello.wasm").write_bytes(WASM)
    return app


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return make_app(tmp_path)


def write_manifest(app_dir: Path, text: str) -> Path:
    (app_dir / "spin.toml").write_text(text)
    return app_dir


MINIMAL = """spin_manifest_version = 2
[application]
name = "mini"
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "hello.wasm"
"""


def test_fixture_app_application_variables_and_triggers(app_dir: Path) -> None:
    app = load_manifest(app_dir)
    assert (app.name, app.version, app.description) == (
        "fixture-app",
        "1.2.3",
        "Fixture for the shim's manifest loader",
    )
    assert app.base_dir == app_dir and app.origin == str(app_dir / "spin.toml") and app.http_base == "/"
    assert app.variables == {
        "greeting": VariableDecl("greeting", "hello", False, False),
        "suffix": VariableDecl("suffix", "", False, False),
        "api_token": VariableDecl("api_token", None, True, True),
        "api_host": VariableDecl("api_host", "api.example.com", False, False, "where the API lives"),
    }
    assert app.http_triggers == (
        HttpTrigger("hello", "/...", False, "hello-http-trigger"),
        HttpTrigger("assets", "/static/...", False, "assets-http-trigger"),
        HttpTrigger("internal", None, True, "internal-http-trigger"),
        HttpTrigger("inline-one-component", "/inline", False, "inline-one"),
    )
    assert list(app.components) == ["hello", "assets", "internal", "inline-one-component"]


def test_fixture_app_component_fields(app_dir: Path) -> None:
    hello = load_manifest(app_dir / "spin.toml").components["hello"]
    assert hello.source == app_dir / "hello.wasm" and hello.source.is_absolute()
    assert hello.description == "says hello"
    assert hello.environment == {"MODE": "test", "EMPTY": ""}
    assert hello.allowed_outbound_hosts == ("https://example.com", "https://{{ api_host }}")
    assert hello.key_value_stores == ("default", "cache-store")
    assert hello.sqlite_databases == ("default",)
    assert hello.ai_models == ("llama2-chat",)
    assert hello.variables == {"message": "{{ greeting }}, world", "token": "{{api_token}}"}


def test_fixture_app_inline_component_and_deprecated_allowed_http_hosts(app_dir: Path) -> None:
    app = load_manifest(app_dir)
    inline = app.components["inline-one-component"]
    assert inline.environment == {"INLINE": "yes"} and inline.source == app_dir / "hello.wasm"
    assert app.components["internal"].allowed_outbound_hosts == ("http://example.org:8080", "https://example.org:8080")


def test_file_mounts_follow_spin_patterns_placements_and_excludes(app_dir: Path) -> None:
    app = load_manifest(app_dir)
    static = app_dir / "static"
    # "static/**/*" is a glob: one mount per matched file, hidden files included, *.tmp excluded.
    assert app.components["hello"].files == (
        FileMount("/static/.hidden", static / ".hidden", False),
        FileMount("/static/app.js", static / "app.js", False),
        FileMount("/static/css/site.css", static / "css" / "site.css", False),
        FileMount("/static/index.html", static / "index.html", False),
        FileMount("/etc/app", app_dir / "config", True),
        FileMount("/one.txt", app_dir / "data" / "one.txt", False),
    )
    # A directory placement that exclude_files thins out is expanded into its remaining files.
    assert [m.guest_path for m in app.components["assets"].files] == [
        "/.hidden",
        "/app.js",
        "/css/site.css",
        "/index.html",
    ]
    # A pattern naming an existing directory mounts the whole directory at its own path.
    assert app.components["internal"].files == (FileMount("/config", app_dir / "config", True),)
    assert app.components["inline-one-component"].files == ()


def test_directory_placement_without_matching_excludes_stays_one_mount(app_dir: Path) -> None:
    text = MINIMAL + 'files = [{ source = "static", destination = "/www" }]\nexclude_files = ["**/*.png"]\n'
    app = load_manifest(write_manifest(app_dir, text))
    assert app.components["hello"].files == (FileMount("/www", app_dir / "static", True),)
    assert guest_files(app.components["hello"].files)["/www/css/site.css"] == app_dir / "static" / "css" / "site.css"


def test_single_file_pattern_and_glob_without_matches(app_dir: Path) -> None:
    text = MINIMAL + 'files = ["./data/one.txt", "data/*.csv"]\n'
    app = load_manifest(write_manifest(app_dir, text))
    assert app.components["hello"].files == (FileMount("/data/one.txt", app_dir / "data" / "one.txt", False),)


BROKEN = sorted((FIXTURES / "broken").glob("*.toml"))


def expectation(fixture: Path) -> tuple[str, str]:
    lines = fixture.read_text().splitlines()
    assert lines[0].startswith("# key: ") and lines[1].startswith("# error: "), fixture
    return lines[0].removeprefix("# key: "), lines[1].removeprefix("# error: ")


@pytest.mark.parametrize("fixture", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_manifest_names_file_key_and_problem(fixture: Path, app_dir: Path) -> None:
    key, fragment = expectation(fixture)
    shutil.copy(fixture, app_dir / "spin.toml")
    with pytest.raises(ManifestError) as caught:
        load_manifest(app_dir, url_cache_dir=app_dir / "no-cache")
    error = caught.value
    assert error.file == str(app_dir / "spin.toml")
    assert error.key == key, str(error)
    assert fragment in error.message, str(error)
    assert str(error) == (f"{error.file}: {key}: {error.message}" if key else f"{error.file}: {error.message}")


def test_broken_fixtures_cover_each_kind() -> None:
    assert len(BROKEN) >= 50
    kinds = {p.stem.split("-")[0] for p in BROKEN}
    assert {"v1", "variable", "component", "files", "trigger", "outbound", "application"} <= kinds


def url_source(digest: str) -> str:
    return MINIMAL.replace(
        'source = "hello.wasm"', f'source = {{ url = "https://example.com/h.wasm", digest = "{digest}" }}'
    )


def test_url_source_found_in_cache_by_digest(app_dir: Path, tmp_path: Path) -> None:
    hex_digest = hashlib.sha256(WASM).hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hex_digest).write_bytes(WASM)
    app = load_manifest(write_manifest(app_dir, url_source(f"sha256:{hex_digest}")), url_cache_dir=cache)
    assert app.components["hello"].source == cache / hex_digest


def test_url_source_default_cache_follows_kubespin_cache(
    app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hex_digest = hashlib.sha256(WASM).hexdigest()
    (tmp_path / "kc" / "wasm-by-digest").mkdir(parents=True)
    (tmp_path / "kc" / "wasm-by-digest" / hex_digest).write_bytes(WASM)
    monkeypatch.setenv("KUBESPIN_CACHE", str(tmp_path / "kc"))
    app = load_manifest(write_manifest(app_dir, url_source(f"sha256:{hex_digest}")))
    assert app.components["hello"].source == tmp_path / "kc" / "wasm-by-digest" / hex_digest


def test_url_source_absent_says_where_to_put_it(app_dir: Path, tmp_path: Path) -> None:
    hex_digest = hashlib.sha256(WASM).hexdigest()
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(app_dir, url_source(f"sha256:{hex_digest}")), url_cache_dir=tmp_path / "c")
    assert caught.value.key == "component.hello.source"
    assert "https://example.com/h.wasm" in caught.value.message and f"sha256:{hex_digest}" in caught.value.message
    assert str(tmp_path / "c" / hex_digest) in caught.value.message


def test_url_source_with_wrong_content_is_rejected(app_dir: Path, tmp_path: Path) -> None:
    hex_digest = hashlib.sha256(WASM).hexdigest()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / hex_digest).write_bytes(WASM + b"tampered")
    with pytest.raises(ManifestError, match="delete it and download") as caught:
        load_manifest(write_manifest(app_dir, url_source(f"sha256:{hex_digest}")), url_cache_dir=tmp_path / "c")
    assert hashlib.sha256(WASM + b"tampered").hexdigest() in caught.value.message


def test_trigger_ids_and_inline_ids_are_normalised_like_spin(app_dir: Path) -> None:
    text = MINIMAL + (
        '[[trigger.http]]\nroute = "/again"\ncomponent = "hello"\n'
        '[[trigger.http]]\nid = "9bad"\nroute = "/inline"\ncomponent = { source = "hello.wasm" }\n'
        '[[trigger.http]]\nroute = "/inline2"\ncomponent = { source = "hello.wasm" }\n'
    )
    app = load_manifest(write_manifest(app_dir, text))
    assert [(t.id, t.component) for t in app.http_triggers] == [
        ("hello-http-trigger", "hello"),
        ("http-trigger1", "hello"),
        ("9bad", "inline-component1"),  # "9bad-component" is no valid id
        ("http-trigger2", "http-trigger2-component"),
    ]


def test_load_app_dispatches_on_what_it_is_given(app_dir: Path, tmp_path: Path) -> None:
    by_dir = load_app(app_dir, work_dir=tmp_path / "work")
    by_file = load_app(str(app_dir / "spin.toml"), work_dir=tmp_path / "work")
    assert by_dir == by_file
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"neither spin\.toml nor an OCI image layout"):
        load_app(tmp_path / "empty", work_dir=tmp_path / "work")
    with pytest.raises(ManifestError, match="no such file"):
        load_app(tmp_path / "missing.toml", work_dir=tmp_path / "work")


def test_manifest_error_is_a_shim_error_and_survives_pickling() -> None:
    error = ManifestError("/a/spin.toml", "component.x.source", "gone")
    assert isinstance(error, ShimError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.key, copy.message, str(copy)) == (error.file, error.key, error.message, str(error))
    assert str(copy) == "/a/spin.toml: component.x.source: gone"


@pytest.mark.parametrize(
    ("text", "delim", "lower", "valid"),
    [
        ("hello", "-", False, True),
        ("hello-world2", "-", False, True),
        ("HELLO-world", "-", False, True),
        ("Hello", "-", False, False),
        ("hello_world", "-", False, False),
        ("a--b", "-", False, False),
        ("1abc", "-", False, False),
        ("hello-2", "-", False, False),
        ("", "-", False, False),
        ("api_token", "_", True, True),
        ("API_TOKEN", "_", True, False),
        ("API_TOKEN", "_", False, True),
        ("api__token", "_", True, False),
        ("api_", "_", True, False),
    ],
)
def test_id_rules_match_spin_serde(text: str, delim: str, lower: bool, valid: bool) -> None:
    assert (id_problem(text, delim, lower=lower) is None) is valid


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*.tmp", "notes.tmp", True),
        ("**/*.tmp", "static/a/notes.tmp", True),
        ("static/*.tmp", "static/sub/notes.tmp", True),  # Rust glob's default: '*' crosses '/'
        ("static/*.tmp", "other/notes.tmp", False),
        ("static/**/x", "static/x", True),
        ("data/[!a]*.txt", "data/one.txt", True),
        ("data/[!o]*.txt", "data/one.txt", False),
        ("*.TXT", "a.txt", False),
    ],
)
def test_exclude_globs_follow_rust_glob_pattern(pattern: str, path: str, matches: bool) -> None:
    assert glob_matches(pattern, path) is matches


def test_allowed_http_hosts_conversion() -> None:
    assert convert_allowed_http_hosts(["example.com", "https://api.example.com:8443", "self"]) == [
        "http://example.com",
        "https://example.com",
        "http://api.example.com:8443",
        "https://api.example.com:8443",
        "http://self",
    ]
    assert convert_allowed_http_hosts(["a.com", "insecure:allow-all"]) == ["http://*:*", "https://*:*", "http://self"]
    for bad in ("ftp://a.com", "a.com/path", "a.com:port"):
        with pytest.raises(ValueError):
            convert_allowed_http_hosts([bad])


def test_template_references() -> None:
    assert template_references("a-{{ x }}-{{y}}") == ["x", "y"]
    assert template_references("plain") == []
    with pytest.raises(ValueError):
        template_references("{{ x }} {{ y")


def test_guest_files_later_mount_wins(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("from dir")
    (tmp_path / "b.txt").write_text("single")
    mounts = [FileMount("/x", tmp_path / "d", True), FileMount("/x/a.txt", tmp_path / "b.txt", False)]
    assert guest_files(mounts) == {"/x/a.txt": tmp_path / "b.txt"}
