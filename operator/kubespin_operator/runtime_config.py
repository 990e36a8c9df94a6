"""Render Spin's runtime-config.toml for an app. Pure.

Spin's own keys only (`[key_value_store.<label>]` with `type = "redis"` + `url`, or `type = "spin"` +
`path`; `[sqlite_database.<label>]`; `[llm_compute]`), so that the file works with upstream Spin too.
Precedence, lowest first: the Secret named by `runtimeConfig.loadFromSecret`, the inline
`runtimeConfig` of the SpinApp, then StoreLinks (a link is the explicit, latest word on a label).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

import tomli_w

from kubespin_operator import constants as c
from kubespin_operator.model import Binding, ObjectData, Problem, RedisBackend, SpinBackend


def binding_table(binding: Binding) -> dict[str, str]:
    """The `[key_value_store.<label>]` table for a linked store."""
    backend = binding.backend
    if isinstance(backend, RedisBackend):
        return {"type": "redis", "url": backend.url}
    if isinstance(backend, SpinBackend):
        return {"type": "spin", "path": backend.db_path}
    raise TypeError(f"unknown backend {backend!r}")


def _resolve_option(
    option: Mapping[str, Any], secrets: ObjectData, configmaps: ObjectData, where: str
) -> tuple[str | None, Problem | None]:
    if "value" in option:
        return str(option["value"]), None
    source = option.get("valueFrom") or {}
    for field, kind, data in (("secretKeyRef", "Secret", secrets), ("configMapKeyRef", "ConfigMap", configmaps)):
        ref = source.get(field)
        if not ref:
            continue
        obj = data.get(ref.get("name", ""))
        if obj is None or ref.get("key") not in obj:
            missing = (
                f"{kind} {ref.get('name')}" if obj is None else f"key {ref.get('key')!r} of {kind} {ref.get('name')}"
            )
            return None, Problem(
                f"{kind}NotFound",
                f"{where}: option {option.get('name')!r} reads {missing}, which does not exist; create it",
            )
        return obj[ref["key"]], None
    return "", None


def _inline_table(
    entry: Mapping[str, Any], secrets: ObjectData, configmaps: ObjectData, where: str
) -> tuple[dict[str, str] | None, list[Problem]]:
    table: dict[str, str] = {"type": str(entry.get("type", ""))}
    problems: list[Problem] = []
    for option in entry.get("options") or []:
        value, problem = _resolve_option(option, secrets, configmaps, where)
        if problem:
            problems.append(problem)
        elif value is not None:
            table[str(option["name"])] = value
    return (None if problems else table), problems


def render_runtime_config(
    app_spec: Mapping[str, Any],
    bindings: list[Binding],
    secrets: ObjectData,
    configmaps: ObjectData,
) -> tuple[str, list[Problem]]:
    """TOML text of runtime-config.toml and the problems met (tables with problems are left out)."""
    rc = app_spec.get("runtimeConfig") or {}
    problems: list[Problem] = []
    doc: dict[str, Any] = {}

    base_secret = rc.get("loadFromSecret")
    if base_secret:
        data = secrets.get(base_secret)
        if data is None or c.RUNTIME_CONFIG_KEY not in data:
            problems.append(
                Problem(
                    "SecretNotFound",
                    f"runtimeConfig.loadFromSecret: Secret {base_secret} with key {c.RUNTIME_CONFIG_KEY} "
                    "does not exist; create it",
                )
            )
        else:
            try:
                doc = tomllib.loads(data[c.RUNTIME_CONFIG_KEY])
            except tomllib.TOMLDecodeError as err:
                problems.append(
                    Problem(
                        "InvalidRuntimeConfig",
                        f"runtimeConfig.loadFromSecret: Secret {base_secret} key {c.RUNTIME_CONFIG_KEY} is not "
                        f"valid TOML ({err}); fix the Secret",
                    )
                )

    for field, section in (("keyValueStores", "key_value_store"), ("sqliteDatabases", "sqlite_database")):
        for entry in rc.get(field) or []:
            where = f"runtimeConfig.{field}[{entry.get('name')}]"
            table, found = _inline_table(entry, secrets, configmaps, where)
            problems.extend(found)
            if table is not None:
                doc.setdefault(section, {})[str(entry["name"])] = table

    llm = rc.get("llmCompute")
    if llm:
        table, found = _inline_table(llm, secrets, configmaps, "runtimeConfig.llmCompute")
        problems.extend(found)
        if table is not None:
            doc["llm_compute"] = table

    for binding in bindings:
        doc.setdefault("key_value_store", {})[binding.label] = binding_table(binding)

    return tomli_w.dumps(doc), problems
