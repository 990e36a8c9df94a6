"""`kubespin up` loads only the capabilities an app can reach (factors/optional.py), through a real
process: js-hello (built by @spinframework/build-tools) imports no key-value, sqlite, LLM or Redis
interface and declares no labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shimproc import built_app, run_shim, run_shim_expect_failure, write_atomically

pytestmark = pytest.mark.integration


def test_an_app_that_reaches_no_store_loads_only_what_it_uses(tmp_path: Path) -> None:
    with run_shim(built_app("js-hello"), tmp_path, ["--log-level", "info"]) as shim:
        with shim.client() as c:
            assert c.get("/").status_code == 200
        assert "(capabilities: wasi, variables, outbound-http)" in shim.log()


def test_a_broken_section_fails_at_start_even_when_the_app_does_not_use_it(tmp_path: Path) -> None:
    rc = tmp_path / "runtime-config.toml"
    rc.write_text('[key_value_store.x]\ntype = "nope"\n')
    result = run_shim_expect_failure(built_app("js-hello"), tmp_path, ["--runtime-config-file", str(rc)])
    assert result.returncode != 0
    assert "'x' has unknown type 'nope'" in result.stdout + result.stderr


def test_a_section_added_later_is_validated_then_applied(tmp_path: Path) -> None:
    rc = tmp_path / "conf" / "runtime-config.toml"
    rc.parent.mkdir()
    rc.write_text("")
    args = ["--runtime-config-file", str(rc), "--state-dir", str(tmp_path / "state"), "--log-level", "info"]
    with run_shim(built_app("js-hello"), tmp_path, args) as shim:
        assert "(capabilities: wasi, variables, outbound-http)" in shim.log()
        write_atomically(rc, '[llm_compute]\ntype = "nope"\n')
        shim.wait_for_log("keeping the previous config")
        assert "llm_compute" in shim.log()
        write_atomically(rc, f'[sqlite_database.default]\ntype = "spin"\npath = "{tmp_path / "db.sqlite"}"\n')
        shim.wait_for_log("applied (digest")
        with shim.client() as c:
            assert c.get("/").status_code == 200
