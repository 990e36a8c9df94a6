"""Pure renderers: SpinApp + bindings → Deployment, Service, runtime-config Secret."""

from __future__ import annotations

import base64
import tomllib
from typing import Any

import pytest
from kubespin_operator import constants as c
from kubespin_operator.model import Binding, RedisBackend, SpinBackend
from kubespin_operator.render import RenderConfig, referenced_objects, render_app, render_deployment

CONFIG = RenderConfig(shim_image="example.test/kubespin:1")


def app(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SpinApp",
        "metadata": {"name": "hello", "namespace": "ns1", "uid": "uid-1", "generation": 3},
        "spec": {"image": "registry.test/hello:v1", **spec},
    }


def redis(label: str, store: str, url: str = "redis://127.0.0.1:6379/0") -> Binding:
    return Binding(label=label, store=store, link=f"link-{label}", backend=RedisBackend(url))


def secret_toml(result: Any) -> dict[str, Any]:
    data = result.secret["data"][c.RUNTIME_CONFIG_KEY]
    return tomllib.loads(base64.b64decode(data).decode())


def test_deployment_runs_the_shim_with_the_mounted_runtime_config() -> None:
    result = render_app(app(replicas=2), [], {}, {}, CONFIG)
    dep = result.deployment
    assert result.problems == []
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.test/kubespin:1"
    assert container["command"] == [
        "kubespin",
        "up",
        "-f",
        "registry.test/hello:v1",
        "--listen",
        "0.0.0.0:80",
        "--runtime-config-file",
        "/etc/kubespin/runtime-config/runtime-config.toml",
    ]
    mount = next(m for m in container["volumeMounts"] if m["name"] == c.RUNTIME_CONFIG_VOLUME)
    assert mount == {"name": c.RUNTIME_CONFIG_VOLUME, "mountPath": c.RUNTIME_CONFIG_DIR, "readOnly": True}
    assert "subPath" not in mount
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == c.RUNTIME_CONFIG_VOLUME)
    assert volume["secret"]["secretName"] == "hello-runtime-config"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {c.APP_LABEL: "hello"}}
    assert container["readinessProbe"]["httpGet"] == {"path": c.HEALTH_PATH, "port": "http"}
    for obj in (dep, result.service, result.secret):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == "uid-1" and ref["kind"] == "SpinApp" and ref["controller"] is True


def test_relink_changes_only_the_secret() -> None:
    before = render_app(app(), [redis("promptstore", "case-a", "redis://a:6379")], {}, {}, CONFIG)
    after = render_app(app(), [redis("promptstore", "case-b", "redis://b:6379")], {}, {}, CONFIG)
    assert before.deployment == after.deployment
    assert before.service == after.service
    assert secret_toml(before)["key_value_store"]["promptstore"] == {"type": "redis", "url": "redis://a:6379"}
    assert secret_toml(after)["key_value_store"]["promptstore"] == {"type": "redis", "url": "redis://b:6379"}


def test_runtime_config_uses_spin_keys_for_both_backends() -> None:
    spin = Binding("cache", "local", "l2", SpinBackend("kvstore-local", "/var/lib/kubespin/stores/local", "RWO"))
    result = render_app(app(), [redis("default", "shared"), spin], {}, {}, CONFIG)
    doc = secret_toml(result)
    assert doc == {
        "key_value_store": {
            "cache": {"type": "spin", "path": "/var/lib/kubespin/stores/local/kv.db"},
            "default": {"type": "redis", "url": "redis://127.0.0.1:6379/0"},
        }
    }
    pod = result.deployment["spec"]["template"]["spec"]
    assert {"name": "kvstore-local", "persistentVolumeClaim": {"claimName": "kvstore-local"}} in pod["volumes"]


def test_environment_carries_variables_components_and_memory_limit() -> None:
    spec = {
        "variables": [
            {"name": "greeting", "value": "hi"},
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "tok"}}},
        ],
        "components": ["api", "web"],
        "invocationLimits": {"memory": "64Mi"},
    }
    result = render_app(app(**spec), [], {"creds": {"tok": "x"}}, {}, CONFIG)
    env = {e["name"]: e for e in result.deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SPIN_VARIABLE_GREETING"]["value"] == "hi"
    assert env["SPIN_VARIABLE_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "creds", "key": "tok"}}
    assert env["SPIN_HTTP_LISTEN_ADDR"]["value"] == "0.0.0.0:80"
    assert env["SPIN_COMPONENTS_TO_RETAIN"]["value"] == "api,web"
    assert env["SPIN_MAX_INSTANCE_MEMORY"]["value"] == str(64 * 1024 * 1024)
    assert result.problems == []


def test_pods_keep_serving_while_the_service_drops_them_and_get_the_time_to_finish() -> None:
    from kubespin_shim.cli import up

    result = render_app(app(), [], {}, {}, CONFIG)
    pod = result.deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    delay = float(env["KUBESPIN_SHUTDOWN_DELAY"])
    assert delay > 0
    # The grace period covers the delay and the requests in flight (the shim's request timeout).
    shim_timeout = next(p.default for p in up.params if p.name == "request_timeout")
    assert shim_timeout == c.SHIM_REQUEST_TIMEOUT_S
    assert pod["terminationGracePeriodSeconds"] > delay + shim_timeout


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"executor": "wagi"}, "UnknownExecutor"),
        ({"replicas": 2, "enableAutoscaling": True}, "ReplicasWithAutoscaling"),
        ({"invocationLimits": {"memory": "lots"}}, "InvalidInvocationLimit"),
        (
            {"invocationLimits": {"memory": "1Gi"}, "resources": {"limits": {"memory": "128Mi"}}},
            "InvalidInvocationLimit",
        ),
    ],
)
def test_blocking_input_renders_nothing(spec: dict[str, Any], reason: str) -> None:
    result = render_app(app(**spec), [], {}, {}, CONFIG)
    assert result.blocked
    assert result.deployment is None and result.secret is None
    assert result.problems[0].reason == reason
    assert result.problems[0].message


def test_missing_variable_secret_is_reported_but_not_blocking() -> None:
    spec = {"variables": [{"name": "token", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}
    result = render_app(app(**spec), [], {}, {}, CONFIG)
    assert not result.blocked
    assert [p.reason for p in result.problems] == ["SecretNotFound"]
    assert "gone" in result.problems[0].message


def test_autoscaled_app_leaves_replicas_to_the_autoscaler() -> None:
    dep = render_deployment(app(enableAutoscaling=True), [], CONFIG)
    assert "replicas" not in dep["spec"]


def test_inline_runtime_config_and_load_from_secret_are_merged_links_last() -> None:
    base = '[key_value_store.default]\ntype = "spin"\npath = "/data/default.db"\n[llm_compute]\ntype = "spin"\n'
    spec = {
        "runtimeConfig": {
            "loadFromSecret": "base-rc",
            "keyValueStores": [
                {
                    "name": "sessions",
                    "type": "redis",
                    "options": [{"name": "url", "valueFrom": {"secretKeyRef": {"name": "redis-cred", "key": "url"}}}],
                }
            ],
            "sqliteDatabases": [{"name": "default", "type": "spin", "options": [{"name": "path", "value": "/d.db"}]}],
        }
    }
    secrets = {"base-rc": {c.RUNTIME_CONFIG_KEY: base}, "redis-cred": {"url": "redis://:pw@r:6379"}}
    result = render_app(app(**spec), [redis("default", "linked")], secrets, {}, CONFIG)
    assert result.problems == []
    doc = secret_toml(result)
    assert doc["key_value_store"]["default"]["type"] == "redis"  # the link overrides the base file
    assert doc["key_value_store"]["sessions"] == {"type": "redis", "url": "redis://:pw@r:6379"}
    assert doc["sqlite_database"]["default"] == {"type": "spin", "path": "/d.db"}
    assert doc["llm_compute"] == {"type": "spin"}


def test_unresolvable_inline_option_drops_its_table_and_reports() -> None:
    spec = {
        "runtimeConfig": {
            "keyValueStores": [
                {
                    "name": "s",
                    "type": "redis",
                    "options": [{"name": "url", "valueFrom": {"secretKeyRef": {"name": "x", "key": "u"}}}],
                }
            ]
        }
    }
    result = render_app(app(**spec), [], {}, {}, CONFIG)
    assert [p.reason for p in result.problems] == ["SecretNotFound"]
    assert "key_value_store" not in secret_toml(result)


def test_referenced_objects_lists_every_secret_and_configmap() -> None:
    spec = {
        "variables": [
            {"name": "a", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
            {"name": "b", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}},
        ],
        "runtimeConfig": {
            "loadFromSecret": "s2",
            "llmCompute": {
                "type": "remote_http",
                "options": [{"name": "auth_token", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "t"}}}],
            },
        },
    }
    assert referenced_objects(spec) == ({"s1", "s2", "s3"}, {"cm1"})


def test_image_pull_secrets_reach_the_shim_as_files() -> None:
    # The shim pulls the app itself: the pull secrets are mounted and listed in KUBESPIN_REGISTRY_AUTH.
    result = render_app(app(imagePullSecrets=[{"name": "regcred"}, {"name": "other"}]), [], {}, {}, CONFIG)
    pod = result.deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBESPIN_REGISTRY_AUTH"] == (
        "/var/run/kubespin/pull-secrets/regcred/.dockerconfigjson:/var/run/kubespin/pull-secrets/other/.dockerconfigjson"
    )
    secret_vols = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert {"regcred", "other"} <= secret_vols
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/run/kubespin/pull-secrets/regcred" in mounts


def test_no_pull_secrets_no_registry_auth_env() -> None:
    result = render_app(app(), [], {}, {}, CONFIG)
    env = {e["name"] for e in result.deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KUBESPIN_REGISTRY_AUTH" not in env
