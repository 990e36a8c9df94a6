"""Variables as Spin resolves them.

Expected values and texts are from spinframework/spin: crates/expressions/src/lib.rs and template.rs
(their unit tests), crates/expressions/tests/validation_test.rs, crates/factor-variables/src/host.rs
and tests/factor_test.rs, crates/variables-env/src/lib.rs, crates/variables-static/src/source.rs,
crates/runtime-config/src/variables.rs and crates/runtime-factors/src/build.rs (provider order).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubespin_shim.errors import ShimError
from kubespin_shim.manifest import VariableDecl
from kubespin_shim.variables import (
    CliProvider,
    ConfigStoreError,
    EnvProvider,
    ProviderConfigError,
    Resolver,
    SpinConfigError,
    StaticProvider,
    Template,
    VariableError,
    parse_providers,
    parse_variable_arg,
    provider_chain,
    rust_debug_str,
    validate_name,
)


def decl(default: str | None = None, *, secret: bool = False) -> VariableDecl:
    return VariableDecl(name="", default=default, required=default is None, secret=secret)


class Broken:
    """A provider whose backend fails (the `broken` key of the expressions crate's TestProvider)."""

    def get(self, name: str) -> str | None:
        if name == "broken":
            raise RuntimeError("backend down")
        return None


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "abc", "a1b2c3", "a_1", "a_1_b_3"])
def test_good_names(name: str) -> None:
    validate_name(name)


ONLY = "Variable names may contain only lower-case letters, numbers, and underscores."


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", '"": must not be empty'),
        ("aX", "\"aX\": invalid character 'X'. " + ONLY),
        ("1bc", '"1bc": must start with a lowercase ASCII letter'),
        ("_x", '"_x": must start with a lowercase ASCII letter'),
        ("x.y", "\"x.y\": invalid character '.'. " + ONLY),
        ("x_", '"x_": must end with a lowercase ASCII letter or digit'),
        ("a__b", '"a__b": must not contain multiple consecutive underscores'),
        ("x-y", "\"x-y\": invalid character '-'. " + ONLY),
    ],
)
def test_bad_names_with_spins_messages(name: str, message: str) -> None:
    with pytest.raises(VariableError) as e:
        validate_name(name)
    assert e.value.kind == "invalid-name"
    assert e.value.message == message
    assert str(e.value) == "invalid variable name: " + message
    assert isinstance(e.value, ShimError)


def test_rust_debug_quoting() -> None:
    assert rust_debug_str('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert rust_debug_str("it's") == '"it\'s"'
    assert rust_debug_str("\u200b") == '"\\u{200b}"'


# --- templates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", ()),
        ("a", ((False, "a"),)),
        ("a-{{ expr }}-b", ((False, "a-"), (True, "expr"), (False, "-b"))),
        ("{{ expr1 }}{{ expr2 }}", ((True, "expr1"), (True, "expr2"))),
        ("{{x}} }} {", ((True, "x"), (False, " }} {"))),
    ],
)
def test_template_parts(text: str, parts: tuple[tuple[bool, str], ...]) -> None:
    assert Template.parse(text).parts == parts


def test_unmatched_braces() -> None:
    with pytest.raises(VariableError) as e:
        Template.parse("{{ matched }} {{ unmatched")
    assert e.value.kind == "other"
    assert str(e.value) == "invalid variable template: unmatched '{{' in template"


# --- resolution (expressions lib.rs tests) ------------------------------------------------------


def make_component(template: str) -> tuple[Resolver, object]:
    resolver = Resolver(
        {"required": decl(), "default": decl("default-value"), "broken": decl()},
        [StaticProvider({"required": "provider-value"}), Broken()],
    )
    return resolver, resolver.component_getter({"test_key": template}, component_id="test-component")


def test_resolve_static_default_and_provider() -> None:
    assert make_component("static-value")[1]("test_key") == "static-value"  # type: ignore[operator]
    assert make_component("prefix-{{ default }}-suffix")[1]("test_key") == "prefix-default-value-suffix"  # type: ignore[operator]
    assert make_component("prefix-{{ required }}-suffix")[1]("test_key") == "prefix-provider-value-suffix"  # type: ignore[operator]


def test_provider_failure_is_a_provider_error() -> None:
    _, getter = make_component("{{ broken }}")
    with pytest.raises(VariableError) as e:
        getter("test_key")  # type: ignore[operator]
    assert (e.value.kind, e.value.message) == ("provider", "backend down")


def test_factor_test_provider_works() -> None:
    # factor-variables tests/factor_test.rs: foo required, provider has foo=bar, baz = "<{{ foo }}>"
    r = Resolver({"foo": decl()}, [StaticProvider({"foo": "bar"})])
    r.validate()
    assert r.component_getter({"baz": "<{{ foo }}>"}, component_id="test-component").get("baz") == "<bar>"


def test_required_without_value_is_a_provider_error_on_get() -> None:
    r = Resolver({"api_key": decl()}, [StaticProvider({})])
    with pytest.raises(VariableError) as e:
        r.resolve("api_key")
    assert (e.value.kind, e.value.message) == ("provider", 'no provider resolved required variable "api_key"')


def test_guest_errors_for_undefined_and_invalid_names() -> None:
    r = Resolver({"x": decl("1")}, [])
    getter = r.component_getter({"a": "{{ x }}"}, component_id="comp")
    with pytest.raises(VariableError) as e:
        getter.get("nope")
    assert (e.value.kind, e.value.message) == ("undefined", 'no variable for "comp"."nope"')
    assert str(e.value) == 'undefined variable: no variable for "comp"."nope"'
    with pytest.raises(VariableError) as e:
        getter.get("Nope")
    assert e.value.kind == "invalid-name"
    # an app variable the component did not map is undefined for it, even though the app declares it
    with pytest.raises(VariableError, match="undefined variable"):
        getter.get("x")


def test_component_templates_are_checked_when_loaded() -> None:
    r = Resolver({"x": decl("1")}, [])
    with pytest.raises(VariableError) as e:
        r.component_getter({"a": "{{ y }}"})
    assert (e.value.kind, str(e.value)) == ("other", 'invalid variable template: unknown variable "y"')
    with pytest.raises(VariableError) as e:
        r.component_getter({"Bad": "{{ x }}"})
    assert e.value.kind == "invalid-name"
    with pytest.raises(VariableError) as e:
        Resolver({"Bad": decl("1")}, [])
    assert e.value.kind == "invalid-name"


# --- required-variable validation (expressions tests/validation_test.rs) ------------------------


def test_validation_rules() -> None:
    Resolver({"database_host": decl()}, [StaticProvider({"database_host": "localhost"})]).validate()
    with pytest.raises(VariableError) as e:
        Resolver({"api_key": decl(), "hello": decl()}, [StaticProvider({"database_host": "x"})]).validate()
    assert e.value.kind == "provider"
    assert str(e.value) == 'provider error: no provider resolved required variable(s): [Key("api_key"), Key("hello")]'

    class Dynamic:  # no may_resolve: Spin's default is "might resolve"
        def get(self, name: str) -> str | None:
            return None

    Resolver({"api_key": decl()}, [Dynamic()]).validate()
    Resolver({"api_key": decl()}, [StaticProvider({}), StaticProvider({"api_key": "k"})]).validate()
    Resolver({"api_key": decl("super-secret-key")}, []).validate()


def test_validation_with_env_provider_checks_the_environment() -> None:
    with pytest.raises(VariableError):
        Resolver({"token": decl()}, [EnvProvider(environ={})]).validate()
    Resolver({"token": decl()}, [EnvProvider(environ={"SPIN_VARIABLE_TOKEN": "t"})]).validate()


# --- env provider (variables-env) ---------------------------------------------------------------


def test_env_provider_prefix_and_upper_case() -> None:
    env = {"TESTING_SPIN_ENV_KEY1": "val", "SPIN_VARIABLE_DB_URL": "u", "_EMPTY": "e"}
    assert EnvProvider("TESTING_SPIN", environ=env).get("env_key1") == "val"
    assert EnvProvider(environ=env).get("db_url") == "u"
    assert EnvProvider(environ=env).get("definitely_not_set") is None
    assert EnvProvider("", environ=env).get("empty") == "e"  # Spin joins with "_" even for ""


def test_env_provider_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / "vars.env"
    dotenv.write_text('TESTING_SPIN_ENV_KEY2=dotenv_val\nexport TESTING_SPIN_Q="quoted # not comment"\n')
    p = EnvProvider("TESTING_SPIN", dotenv, environ={})
    assert p.get("env_key2") == "dotenv_val"
    assert p.get("q") == "quoted # not comment"
    # the process environment wins over the file
    assert EnvProvider("TESTING_SPIN", dotenv, environ={"TESTING_SPIN_ENV_KEY2": "env"}).get("env_key2") == "env"
    # the file is read once, like Spin's OnceLock cache
    dotenv.write_text("TESTING_SPIN_ENV_KEY2=changed\n")
    assert p.get("env_key2") == "dotenv_val"
    assert EnvProvider("TESTING_SPIN", tmp_path / "missing.env", environ={}).get("env_key2") is None


def test_malformed_dotenv_is_a_provider_error(tmp_path: Path) -> None:
    bad = tmp_path / ".env"
    bad.write_text("GOOD=1\nthis line is not an assignment\n")
    r = Resolver({"good": decl()}, [EnvProvider(None, bad, environ={})])
    with pytest.raises(VariableError) as e:
        r.resolve("good")
    assert e.value.kind == "provider"
    assert "line 2" in e.value.message


def test_default_env_provider_reads_dot_env_in_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SPIN_VARIABLE_FROM_FILE=yes\n")
    monkeypatch.chdir(tmp_path)
    assert EnvProvider.spin_default(environ={}).get("from_file") == "yes"
    # a configured `type = "env"` provider has no dotenv unless given one
    assert EnvProvider(environ={}).get("from_file") is None


# --- --variable (variables-static source.rs) ----------------------------------------------------


def test_cli_variable_forms(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("file value\n")
    (tmp_path / "vars.json").write_text(json.dumps({"j": "json", "k": "from-json"}))
    (tmp_path / "vars.toml").write_text('t = "toml"\n')
    assert parse_variable_arg("k=v") == {"k": "v"}
    assert parse_variable_arg("k=a=b") == {"k": "a=b"}
    assert parse_variable_arg("k=@v.txt", base_dir=tmp_path) == {"k": "file value\n"}
    cli = CliProvider.from_args(["k=v", f"@{tmp_path / 'vars.json'}", f"@{tmp_path / 'vars.toml'}"])
    assert cli.values == {"k": "from-json", "j": "json", "t": "toml"}  # later arguments win


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("nope", "variables must be in the form 'key=value' or '@file'"),
        ("@whatami", "variable files must end in .json or .toml"),
        ("@wrong.kind", "variable files must end in .json or .toml"),
    ],
)
def test_cli_variable_errors(arg: str, message: str) -> None:
    with pytest.raises(ProviderConfigError) as e:
        parse_variable_arg(arg)
    assert str(e.value) == message


def test_cli_variable_file_errors(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ProviderConfigError, match="table of string values"):
        parse_variable_arg(f"@{tmp_path / 'list.json'}")
    with pytest.raises(ProviderConfigError, match="Failed to read"):
        parse_variable_arg(f"k=@{tmp_path / 'absent.txt'}")


# --- runtime-config providers and the order of `spin up` ----------------------------------------


def test_parse_providers_and_order() -> None:
    env = {"SPIN_VARIABLE_A": "env-a", "SPIN_VARIABLE_B": "env-b", "SPIN_VARIABLE_C": "env-c", "MY_C": "my-c"}
    sections = [{"type": "static", "values": {"a": "static-a", "b": "static-b"}}, {"type": "env", "prefix": "MY"}]
    chain = provider_chain(sections, cli_variables=["a=cli-a"], environ=env)
    assert [type(p).__name__ for p in chain] == ["CliProvider", "StaticProvider", "EnvProvider", "EnvProvider"]
    r = Resolver({"a": decl(), "b": decl(), "c": decl(), "d": decl("default-d")}, chain)
    assert r.resolve("a") == "cli-a"  # --variable first
    assert r.resolve("b") == "static-b"  # runtime config before SPIN_VARIABLE_*
    assert r.resolve("c") == "my-c"  # configured env provider (prefix MY) before the default one
    assert r.resolve("d") == "default-d"  # no provider: the declared default
    # without a runtime config, only the default env provider
    only = parse_providers([], environ=env)
    assert len(only) == 1 and only[0].get("a") == "env-a"


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"type": "vault", "url": "x"}, "'vault' is not supported"),
        ({"type": "azure_key_vault"}, "'azure_key_vault' is not supported"),
        ({"type": "magic"}, "unknown variant `magic`, expected one of `azure_key_vault`, `static`, `vault`, `env`"),
        ({"values": {}}, "missing field `type`"),
        ({"type": "static"}, "missing field `values`"),
        ({"type": "static", "values": {"a": 1}}, "`values` must be a table of strings"),
        ({"type": "env", "prefixx": "A"}, "unknown field `prefixx`"),
    ],
)
def test_provider_config_errors(section: dict[str, object], fragment: str) -> None:
    with pytest.raises(ProviderConfigError) as e:
        parse_providers([section], environ={})
    assert fragment in str(e.value)
    assert str(e.value).startswith("variables_provider[0]: ")


# --- what the guest sees through each interface (factor-variables host.rs) ----------------------


def test_wasi_config_store_mapping() -> None:
    r = Resolver({"x": decl("1"), "broken": decl()}, [Broken()])
    getter = r.component_getter({"a": "{{ x }}", "b": "b-{{ x }}"}, component_id="comp")
    assert getter.config_get("a") == "1"
    assert getter.config_get("missing") is None  # undefined -> none
    assert getter.config_get("Bad-Name") is None  # invalid name -> none (wasi-runtime-config guidance)
    assert getter.config_get_all() == [("a", "1"), ("b", "b-1")]
    failing = r.component_getter({"a": "{{ broken }}"}, component_id="comp")
    with pytest.raises(ConfigStoreError) as e:
        failing.config_get("a")
    assert (e.value.kind, e.value.message) == ("upstream", "backend down")
    with pytest.raises(ConfigStoreError) as e:
        failing.config_get_all()
    assert e.value.kind == "upstream"


def test_spin_config_v1_mapping() -> None:
    r = Resolver({"x": decl(), "y": decl("1")}, [])
    getter = r.component_getter({"a": "{{ x }}", "b": "{{ y }}"}, component_id="comp")
    assert getter.spin_config_get("b") == "1"
    with pytest.raises(SpinConfigError) as e:
        getter.spin_config_get("Bad")
    assert e.value.kind == "invalid-key"
    with pytest.raises(SpinConfigError) as e:
        getter.spin_config_get("nope")
    assert (e.value.kind, e.value.message) == ("provider", 'no variable for "comp"."nope"')
    with pytest.raises(SpinConfigError) as e:
        getter.spin_config_get("a")
    assert e.value.kind == "other"
    assert e.value.message == 'Error::Provider("no provider resolved required variable \\"x\\"")'


def test_no_caching_values_follow_the_provider() -> None:
    env: dict[str, str] = {"SPIN_VARIABLE_X": "1"}
    r = Resolver({"x": decl()}, [EnvProvider(environ=env)])
    getter = r.component_getter({"x": "{{ x }}"})
    assert getter("x") == "1"
    env["SPIN_VARIABLE_X"] = "2"
    assert getter("x") == "2"
