"""Reading [key_value_store.*] / [sqlite_database.*] and the state directory with Spin's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim.kv.config import (
    RedisKvSpec,
    SpinKvSpec,
    SqliteDbSpec,
    key_value_specs,
    resolve_state_dir,
    sqlite_specs,
)
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError, parse_runtime_config


def rc(text: str, path: Path | None = None) -> RuntimeConfig:
    return parse_runtime_config(text.encode(), path)


def test_default_label_exists_without_configuration(tmp_path: Path) -> None:
    specs = key_value_specs(RuntimeConfig(None), tmp_path / ".spin")
    assert specs == {"default": SpinKvSpec(tmp_path / ".spin" / "sqlite_key_value.db")}
    db = sqlite_specs(RuntimeConfig(None), tmp_path / ".spin")
    assert db == {"default": SqliteDbSpec(tmp_path / ".spin" / "sqlite_db.db")}


def test_no_state_dir_means_in_memory_defaults() -> None:
    assert key_value_specs(RuntimeConfig(None), None) == {"default": SpinKvSpec(None)}
    assert sqlite_specs(RuntimeConfig(None), None) == {"default": SqliteDbSpec(None)}


def test_state_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = tmp_path / "app"
    assert resolve_state_dir(RuntimeConfig(None), None, app) == app / ".spin"
    from_file = rc('state_dir = "st"')
    assert resolve_state_dir(from_file, None, app) == tmp_path / "st"  # relative to the working dir
    assert resolve_state_dir(from_file, Path("flag"), app) == tmp_path / "flag"  # the flag wins
    assert resolve_state_dir(rc('state_dir = ""'), None, app) is None  # "" = no state dir: in memory
    with pytest.raises(RuntimeConfigError, match="state_dir"):
        resolve_state_dir(rc("state_dir = 3"), None, app)


def test_spin_and_redis_stores(tmp_path: Path) -> None:
    conf = rc(
        """
        [key_value_store.default]
        type = "redis"
        url = "redis://127.0.0.1:6379/2"

        [key_value_store.rel]
        type = "spin"
        path = "data/kv.db"

        [key_value_store.abs]
        type = "spin"
        path = "/var/kv.db"

        [key_value_store.mem]
        type = "spin"
        """,
        tmp_path / "conf" / "runtime-config.toml",
    )
    specs = key_value_specs(conf, tmp_path / ".spin")
    assert specs == {
        "default": RedisKvSpec("redis://127.0.0.1:6379/2"),  # an explicit default replaces the file
        "rel": SpinKvSpec(tmp_path / "conf" / "data" / "kv.db"),  # relative to the runtime config's dir
        "abs": SpinKvSpec(Path("/var/kv.db")),
        "mem": SpinKvSpec(None),  # Spin: no path = in memory
    }


def test_sqlite_relative_path_is_relative_to_the_working_dir(tmp_path: Path) -> None:
    conf = rc(
        """
        [sqlite_database.orders]
        type = "spin"
        path = "orders.db"
        allow_attach_file = true
        """,
        tmp_path / "conf" / "runtime-config.toml",
    )
    specs = sqlite_specs(conf, None, cwd=tmp_path / "work")
    assert specs["orders"] == SqliteDbSpec(tmp_path / "work" / "orders.db", allow_attach_file=True)
    assert specs["default"] == SqliteDbSpec(None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[key_value_store.cache]\ntype = "memcached"', r"'cache' has unknown type 'memcached'.*'spin' and 'redis'"),
        ('[key_value_store.cache]\ntype = "azure_cosmos"', r"'cache' has type 'azure_cosmos', which Spin knows"),
        ('[key_value_store.cache]\nurl = "redis://x"', r"key_value_store\.cache: missing field `type`"),
        ('[key_value_store.cache]\ntype = "redis"', r"missing field `url`"),
        ('[key_value_store.cache]\ntype = "redis"\nurl = "http://x"', r"key_value_store\.cache\.url: invalid"),
        ('[key_value_store.cache]\ntype = "spin"\npath = 5', r"key_value_store\.cache\.path: expected a string"),
        ("[key_value_store]\ncache = 1", r"key_value_store\.cache: expected a table"),
        ('[sqlite_database.db]\ntype = "libsql"\nurl = "https://x"\ntoken = "t"', r"'db' has type 'libsql'"),
        ('[sqlite_database.db]\ntype = "spin"\npth = "x.db"', r"unknown field\(s\) \['pth'\]"),
        ('[sqlite_database.db]\ntype = "spin"\nallow_attach_file = "yes"', r"allow_attach_file: expected true"),
    ],
)
def test_bad_tables_are_refused_with_label_and_key(text: str, match: str, tmp_path: Path) -> None:
    conf = rc(text, tmp_path / "runtime-config.toml")
    with pytest.raises(RuntimeConfigError, match=match) as err:
        key_value_specs(conf, None)
        sqlite_specs(conf, None)
    assert str(tmp_path / "runtime-config.toml") in str(err.value)


def test_extra_keys_in_key_value_tables_are_ignored_as_spin_does() -> None:
    conf = rc('[key_value_store.x]\ntype = "redis"\nurl = "redis://h:1/0"\nfuture_option = true')
    assert key_value_specs(conf, None)["x"] == RedisKvSpec("redis://h:1/0")
