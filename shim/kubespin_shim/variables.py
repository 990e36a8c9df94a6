"""Application variables the way Spin resolves them: names, templates, providers, guest-facing errors.

Sources in spinframework/spin: ``crates/expressions`` (names, templates, the resolver),
``crates/factor-variables/src/host.rs`` (what ``fermyon:spin/variables``, ``fermyon:spin/config``
and ``wasi:config/store`` return), ``crates/variables-env``, ``crates/variables-static``
(including ``--variable`` parsing in ``source.rs``), ``crates/runtime-config/src/variables.rs`` and
``crates/runtime-factors/src/build.rs`` (provider order).

Provider order, first answer wins, then the declared default (``spin up``):
  1. ``--variable`` values (one static provider, inserted at position 0 by runtime-factors/build.rs);
  2. each ``[[variables_provider]]`` of the runtime config, in file order;
  3. the default environment provider: ``SPIN_VARIABLE_<NAME>``, then a ``.env`` file in the
     working directory (always appended last by runtime-config/variables.rs).
So a runtime-config ``static`` provider overrides ``SPIN_VARIABLE_*``, and ``--variable`` overrides both.

Nothing is cached between calls, as in Spin: a guest's ``get`` asks the providers every time (they are
in-memory lookups here; ``vault`` and ``azure_key_vault`` are not supported).
"""

from __future__ import annotations

import io
import json
import os
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .errors import ShimError

ErrorKind = Literal["invalid-name", "undefined", "provider", "other"]

#: Spin's default prefix: ``SPIN_VARIABLE_<NAME>``.
DEFAULT_ENV_PREFIX = "SPIN_VARIABLE"

_DISPLAY_PREFIX: dict[str, str] = {
    "invalid-name": "invalid variable name: ",
    "undefined": "undefined variable: ",
    "provider": "provider error: ",
    "other": "",
}


class VariableError(ShimError):
    """A variable could not be resolved; ``kind`` and ``message`` are what the guest receives.

    ``kind`` is the case of ``fermyon:spin/variables.error`` (``invalid-name``, ``undefined``,
    ``provider``, ``other``) and ``message`` its payload, worded as Spin words it. ``str()`` is
    Spin's log/startup text (``undefined variable: no variable for "comp"."key"``).
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        self.kind: ErrorKind = kind
        self.message = message
        super().__init__(_DISPLAY_PREFIX[kind] + message)

    def __reduce__(self) -> tuple[type[VariableError], tuple[str, str]]:
        return (type(self), (self.kind, self.message))


class ConfigStoreError(ShimError):
    """A ``wasi:config/store`` error: ``kind`` is ``upstream`` or ``io``."""

    def __init__(self, kind: Literal["upstream", "io"], message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


class ProviderConfigError(ShimError):
    """A ``[[variables_provider]]`` entry (or a ``--variable`` argument) that cannot be used."""


# ---------------------------------------------------------------------------------------------
# Rust's Debug formatting, because Spin's messages quote names with {:?}.


def rust_debug_str(s: str) -> str:
    """``format!("{:?}", s)`` for a Rust str: double quotes, Rust's escapes."""
    return '"' + "".join(_escape_char(c, quote='"') for c in s) + '"'


def rust_debug_char(c: str) -> str:
    """``format!("{:?}", c)`` for a Rust char."""
    return "'" + _escape_char(c, quote="'") + "'"


def _escape_char(c: str, *, quote: str) -> str:
    simple = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", "\0": "\\0"}
    if c in simple:
        return simple[c]
    if c == quote:
        return "\\" + c
    # Rust escapes what it does not consider printable; Unicode's control, format, separator
    # (other than space), private-use and unassigned categories approximate that table.
    if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (
        unicodedata.category(c) == "Zs" and c != " "
    ):
        return f"\\u{{{ord(c):x}}}"
    return c


# ---------------------------------------------------------------------------------------------
# Names and templates (spin crates/expressions).


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid variable name (Spin's wording), or None."""
    if not name:
        return "must not be empty"
    for c in name:
        if not (("a" <= c <= "z") or ("0" <= c <= "9") or c == "_"):
            return (
                f"invalid character {rust_debug_char(c)}. Variable names may contain only lower-case letters, "
                "numbers, and underscores."
            )
    if not ("a" <= name[0] <= "z"):
        return "must start with a lowercase ASCII letter"
    if not name[-1].isalnum():
        return "must end with a lowercase ASCII letter or digit"
    if "__" in name:
        return "must not contain multiple consecutive underscores"
    return None


def validate_name(name: str) -> None:
    """Raise ``VariableError('invalid-name', '"Bad": <reason>')`` as Spin's ``Key::new`` does."""
    problem = name_problem(name)
    if problem is not None:
        raise VariableError("invalid-name", f"{rust_debug_str(name)}: {problem}")


@dataclass(frozen=True)
class Template:
    """A Spin template: literal text with ``{{ name }}`` expressions (spaces inside trimmed).

    There is no escape for ``{{`` (Spin has none): every ``{{`` opens an expression and must be
    closed by a later ``}}``; a lone ``}}`` is literal text.
    """

    parts: tuple[tuple[bool, str], ...]  # (is_expression, text)

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[bool, str]] = []
        rest = text
        while rest:
            if rest.startswith("{{"):
                end = rest.find("}}", 2)
                if end < 0:
                    raise VariableError("other", "invalid variable template: unmatched '{{' in template")
                parts.append((True, rest[2:end].strip()))
                rest = rest[end + 2 :]
            else:
                start = rest.find("{{")
                lit, rest = (rest, "") if start < 0 else (rest[:start], rest[start:])
                parts.append((False, lit))
        return cls(tuple(parts))

    @property
    def references(self) -> list[str]:
        return [text for is_expr, text in self.parts if is_expr]

    def render(self, lookup: Callable[[str], str]) -> str:
        return "".join(lookup(text) if is_expr else text for is_expr, text in self.parts)


# ---------------------------------------------------------------------------------------------
# Providers.


class Decl(Protocol):
    """An app variable declaration (``manifest.VariableDecl`` fits): required iff no default."""

    @property
    def default(self) -> str | None: ...
    @property
    def required(self) -> bool: ...
    @property
    def secret(self) -> bool: ...


@runtime_checkable
class Provider(Protocol):
    """A variable source. ``get`` returns None when it has no value; raises for a failure."""

    def get(self, name: str) -> str | None: ...


def may_resolve(provider: Provider, name: str) -> bool:
    """Spin's ``Provider::may_resolve``: whether a required variable can be served (default True)."""
    check = getattr(provider, "may_resolve", None)
    return True if check is None else bool(check(name))


class StaticProvider:
    """Fixed values: a runtime-config ``type = "static"`` provider, or the ``--variable`` values."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def may_resolve(self, name: str) -> bool:
        return name in self.values

    def __repr__(self) -> str:
        return f"StaticProvider({sorted(self.values)})"  # names only: values may be secrets


class EnvProvider:
    """``<PREFIX>_<NAME upper-cased>`` from the environment, then from a dotenv file if one is set.

    ``prefix`` None means ``SPIN_VARIABLE``; an empty prefix gives ``_<NAME>`` (Spin joins with ``_``
    unconditionally). The dotenv file is read once, on the first miss; a missing file counts as
    empty, a malformed one is a provider error (as with Spin's dotenvy). Parsing is python-dotenv's:
    unlike dotenvy it expands ``${VAR}`` but not a bare ``$VAR``.
    """

    def __init__(
        self,
        prefix: str | None = None,
        dotenv_path: str | Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.dotenv_path = Path(dotenv_path) if dotenv_path is not None else None
        self._environ = environ if environ is not None else os.environ
        self._dotenv: dict[str, str] | None = None

    @classmethod
    def spin_default(cls, *, environ: Mapping[str, str] | None = None) -> EnvProvider:
        """The provider Spin always adds last: default prefix, ``.env`` in the working directory."""
        return cls(None, ".env", environ=environ)

    def env_key(self, name: str) -> str:
        prefix = self.prefix if self.prefix is not None else DEFAULT_ENV_PREFIX
        return f"{prefix}_{name.upper()}"

    def get(self, name: str) -> str | None:
        key = self.env_key(name)
        value = self._environ.get(key)
        if value is not None:
            return value
        if self.dotenv_path is None:
            return None
        if self._dotenv is None:
            self._dotenv = _load_dotenv(self.dotenv_path)
        return self._dotenv.get(key)

    def may_resolve(self, name: str) -> bool:
        try:
            return self.get(name) is not None
        except ProviderConfigError:
            return False

    def __repr__(self) -> str:
        return f"EnvProvider(prefix={self.prefix!r}, dotenv_path={self.dotenv_path!r})"


def _load_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ProviderConfigError(
                f"cannot parse dotenv file {str(path)!r} at line {binding.original.line}: "
                f"{binding.original.string.rstrip()!r}"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {k: v for k, v in values.items() if v is not None}


class CliProvider(StaticProvider):
    """The values of ``spin up --variable``: ``KEY=VALUE``, ``KEY=@FILE``, ``@FILE.json``, ``@FILE.toml``.

    Later arguments override earlier ones. ``KEY=@FILE`` takes the whole file content (no
    trimming); the JSON/TOML files hold a flat table of strings. Names are not checked here, as in
    Spin: an undeclared name is simply never asked for.
    """

    @classmethod
    def from_args(cls, args: Iterable[str], *, base_dir: Path | None = None) -> CliProvider:
        values: dict[str, str] = {}
        for arg in args:
            values.update(parse_variable_arg(arg, base_dir=base_dir))
        return cls(values)


def parse_variable_arg(arg: str, *, base_dir: Path | None = None) -> dict[str, str]:
    """One ``--variable`` argument as a dict, with Spin's error texts."""

    def resolve(p: str) -> Path:
        path = Path(p)
        return path if base_dir is None or path.is_absolute() else base_dir / path

    def read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except OSError as e:
            raise ProviderConfigError(f'Failed to read "{path}": {e.strerror or e}') from None

    if arg.startswith("@"):
        path = resolve(arg[1:])
        if path.suffix == ".json":
            try:
                data: Any = json.loads(read(path))
            except json.JSONDecodeError as e:
                raise ProviderConfigError(f'Failed to parse JSON from "{path}": {e}') from None
        elif path.suffix == ".toml":
            try:
                data = tomllib.loads(read(path))
            except tomllib.TOMLDecodeError as e:
                raise ProviderConfigError(f'Failed to parse TOML from "{path}": {e}') from None
        else:
            raise ProviderConfigError("variable files must end in .json or .toml")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ProviderConfigError(f'"{path}" must hold a table of string values, e.g. {{"name": "value"}}')
        return dict(data)
    key, sep, value = arg.partition("=")
    if not sep:
        raise ProviderConfigError("variables must be in the form 'key=value' or '@file'")
    if value.startswith("@"):
        return {key: read(resolve(value[1:]))}
    return {key: value}


_PROVIDER_TYPES = ("azure_key_vault", "static", "vault", "env")


def parse_providers(
    runtime_config_sections: Sequence[Mapping[str, Any]],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[Provider]:
    """Spin's ``runtime_config_from_toml`` for variables: the configured providers, then the default env one.

    ``runtime_config_sections`` is the ``[[variables_provider]]`` array (``RuntimeConfig.providers()``).
    Prepend ``CliProvider`` for ``--variable`` (see ``provider_chain``).
    """
    providers: list[Provider] = []
    for index, section in enumerate(runtime_config_sections):
        where = f"variables_provider[{index}]"
        if not isinstance(section, Mapping):
            raise ProviderConfigError(f"{where}: expected a table with a `type`")
        kind = section.get("type")
        if kind is None:
            raise ProviderConfigError(f"{where}: missing field `type`")
        if kind == "static":
            values = section.get("values")
            if values is None:
                raise ProviderConfigError(f"{where}: missing field `values`")
            if not isinstance(values, Mapping) or not all(isinstance(v, str) for v in values.values()):
                raise ProviderConfigError(f'{where}: `values` must be a table of strings, e.g. {{ name = "value" }}')
            providers.append(StaticProvider(values))
        elif kind == "env":
            unknown = sorted(set(section) - {"type", "prefix", "dotenv_path"})
            if unknown:
                raise ProviderConfigError(f"{where}: unknown field `{unknown[0]}`, expected `prefix` or `dotenv_path`")
            prefix = section.get("prefix")
            dotenv = section.get("dotenv_path")
            if prefix is not None and not isinstance(prefix, str):
                raise ProviderConfigError(f"{where}: `prefix` must be a string")
            if dotenv is not None and not isinstance(dotenv, str):
                raise ProviderConfigError(f"{where}: `dotenv_path` must be a string")
            providers.append(EnvProvider(prefix, dotenv, environ=environ))
        elif kind in ("vault", "azure_key_vault"):
            raise ProviderConfigError(
                f"{where}: variables provider type {kind!r} is not supported by kubespin; use `static` "
                "(for example rendered from a Kubernetes Secret) or `env` (SPIN_VARIABLE_* from the pod)"
            )
        else:
            expected = ", ".join(f"`{t}`" for t in _PROVIDER_TYPES)
            raise ProviderConfigError(f"{where}: unknown variant `{kind}`, expected one of {expected}")
    providers.append(EnvProvider.spin_default(environ=environ))
    return providers


def provider_chain(
    runtime_config_sections: Sequence[Mapping[str, Any]],
    *,
    cli_variables: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> list[Provider]:
    """All providers in ``spin up``'s order: ``--variable``, runtime config, default env."""
    return [
        CliProvider.from_args(cli_variables, base_dir=base_dir),
        *parse_providers(runtime_config_sections, environ=environ),
    ]


# ---------------------------------------------------------------------------------------------
# The resolver.


class Resolver:
    """App-level variables: declarations plus providers. One per app (rebuild it when providers change)."""

    def __init__(self, declarations: Mapping[str, Decl], providers: Sequence[Provider]) -> None:
        for name in declarations:
            validate_name(name)
        self.declarations = dict(declarations)
        self.providers = list(providers)

    def validate(self) -> None:
        """Spin's startup check: every required variable must be resolvable by some provider."""
        missing = [
            name
            for name, decl in sorted(self.declarations.items())
            if decl.default is None and not any(may_resolve(p, name) for p in self.providers)
        ]
        if missing:
            listed = ", ".join(f"Key({rust_debug_str(n)})" for n in missing)
            raise VariableError("provider", f"no provider resolved required variable(s): [{listed}]")

    def resolve(self, name: str) -> str:
        """The value of app variable ``name``: first provider that has it, else the default."""
        decl = self.declarations.get(name)
        if decl is None:
            raise VariableError("invalid-name", name)
        for provider in self.providers:
            try:
                value = provider.get(name)
            except VariableError:
                raise
            except Exception as e:  # a provider failure is reported to the guest, not raised through it
                raise VariableError("provider", str(e)) from e
            if value is not None:
                return value
        if decl.default is not None:
            return decl.default
        raise VariableError("provider", f"no provider resolved required variable {rust_debug_str(name)}")

    def render(self, template: str | Template) -> str:
        """Resolve a template such as ``"https://{{ host }}/api"`` against the app variables."""
        parsed = Template.parse(template) if isinstance(template, str) else template
        return parsed.render(self.resolve)

    def check_template(self, template: str) -> Template:
        """Parse and check that every ``{{ name }}`` is declared (Spin fails the app load otherwise)."""
        parsed = Template.parse(template)
        for ref in parsed.references:
            if ref not in self.declarations:
                raise VariableError("other", f"invalid variable template: unknown variable {rust_debug_str(ref)}")
        return parsed

    def component_getter(self, templates: Mapping[str, str], *, component_id: str = "") -> ComponentVariables:
        """The variables one component may read (its ``[component.x.variables]``), validated now."""
        return ComponentVariables(self, component_id, templates)


class ComponentVariables:
    """What a component's guest sees through ``fermyon:spin/variables`` and ``wasi:config/store``.

    Callable: ``getter(name)`` is ``get(name)``.
    """

    def __init__(self, resolver: Resolver, component_id: str, templates: Mapping[str, str]) -> None:
        self._resolver = resolver
        self.component_id = component_id
        self._templates: dict[str, Template] = {}
        for key, text in templates.items():
            validate_name(key)
            self._templates[key] = resolver.check_template(text)

    def __call__(self, name: str) -> str:
        return self.get(name)

    @property
    def resolver(self) -> Resolver:
        """The app-level resolver (outbound host templates render against app variables)."""
        return self._resolver

    def names(self) -> list[str]:
        return list(self._templates)

    def get(self, name: str) -> str:
        """``fermyon:spin/variables.get``: raises VariableError with the guest's error case."""
        validate_name(name)
        template = self._templates.get(name)
        if template is None:
            raise VariableError(
                "undefined", f"no variable for {rust_debug_str(self.component_id)}.{rust_debug_str(name)}"
            )
        return template.render(self._resolver.resolve)

    def get_all(self) -> list[tuple[str, str]]:
        """Every component variable, resolved (order: as declared in the component)."""
        return [(name, self.get(name)) for name in self._templates]

    def config_get(self, name: str) -> str | None:
        """``wasi:config/store.get``: None for an invalid or undefined name, errors as upstream/io."""
        try:
            return self.get(name)
        except VariableError as e:
            if e.kind in ("undefined", "invalid-name"):
                return None
            raise ConfigStoreError("upstream" if e.kind == "provider" else "io", e.message) from e

    def config_get_all(self) -> list[tuple[str, str]]:
        """``wasi:config/store.get-all``: provider failures are ``upstream``, anything else ``io``."""
        try:
            return self.get_all()
        except VariableError as e:
            raise ConfigStoreError("upstream" if e.kind == "provider" else "io", e.message) from e

    def spin_config_get(self, name: str) -> str:
        """``fermyon:spin/config.get-config`` (Spin 1 API). Raises SpinConfigError."""
        try:
            return self.get(name)
        except VariableError as e:
            raise SpinConfigError.from_variable_error(e) from e


class SpinConfigError(ShimError):
    """``fermyon:spin/config.error``: ``provider``, ``invalid-key``, ``invalid-schema`` or ``other``."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")

    @classmethod
    def from_variable_error(cls, e: VariableError) -> SpinConfigError:
        # factor-variables host.rs: InvalidName -> InvalidKey, Undefined -> Provider, others -> Other
        # with the v2 error's Display, which wasmtime's bindgen makes its Debug: Error::Provider("...").
        if e.kind == "invalid-name":
            return cls("invalid-key", e.message)
        if e.kind == "undefined":
            return cls("provider", e.message)
        variant = {"provider": "Provider", "other": "Other"}[e.kind]
        return cls("other", f"Error::{variant}({rust_debug_str(e.message)})")
