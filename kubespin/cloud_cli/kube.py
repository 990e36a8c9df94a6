"""The CLI's view of the cluster: one lightkube client, the namespace, and API errors as sentences.

An ``ApiError`` says "forbidden" or "not found"; the person at the terminal needs to know which
object, in which namespace, and what to do next. ``explain`` turns the common cases into that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
from kubespin_operator import constants as c
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource

SpinApp = create_namespaced_resource(c.GROUP, c.VERSION, c.SPINAPP_KIND, c.SPINAPP_PLURAL)
KeyValueStore = create_namespaced_resource(c.GROUP, c.VERSION, c.STORE_KIND, c.STORE_PLURAL)
StoreLink = create_namespaced_resource(c.GROUP, c.VERSION, c.LINK_KIND, c.LINK_PLURAL)
FIELD_MANAGER = "kubespin-cli"


class CliError(click.ClickException):
    """A message for the person at the terminal: what is wrong, with which object, and what to do."""


def explain(err: ApiError, what: str, namespace: str, hint: str = "") -> CliError:
    """An API error about ``what`` (e.g. "KeyValueStore case-a") as an actionable message."""
    code = err.status.code
    if code == 404:
        text = f"{what} does not exist in namespace {namespace}"
    elif code == 403:
        text = (
            f"you are not allowed to do this with {what} in namespace {namespace} "
            f"(RBAC: {err.status.message}); ask a cluster admin for the permission"
        )
    elif code == 409:
        text = f"{what} already exists in namespace {namespace} (or was changed meanwhile): {err.status.message}"
    elif code == 422:
        text = f"the API server rejected {what}: {err.status.message}"
    elif code == 429:
        text = (
            f"{what}: the API server asked to come back later ({err.status.message}) and still did after "
            f"{RETRY_ATTEMPTS} tries; it is overloaded or still starting, try again in a minute"
        )
    else:
        text = f"{what}: {err.status.message} (HTTP {code})"
    return CliError(f"{text}{'; ' + hint if hint and code == 404 else ''}")


# client-go's rule: a 429 (the API server's max-inflight limit, or a CRD's storage that is still
# initializing right after the CRD was created) means "not processed, come back later", so every verb
# is retried, after the server's Retry-After, a bounded number of times.
RETRY_ATTEMPTS = 10
RETRY_BUDGET_S = 30.0
_RETRIED_VERBS = frozenset({"get", "list", "create", "patch", "delete", "replace", "apply"})


def _retry_after(err: ApiError) -> float:
    try:
        value = float(err.response.headers.get("Retry-After", "1")) if err.response is not None else 1.0
    except ValueError:
        value = 1.0
    return min(max(value, 0.2), 5.0)


class RetryingClient:
    """A lightkube ``Client`` whose API calls are retried on HTTP 429 (Too Many Requests)."""

    def __init__(self, client: Client, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in _RETRIED_VERBS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            waited = 0.0
            for attempt in range(1, RETRY_ATTEMPTS + 1):
                try:
                    result = attr(*args, **kwargs)
                    # list() is lazy: its request runs on iteration, so errors must surface here.
                    return list(result) if name == "list" else result
                except ApiError as err:
                    delay = _retry_after(err)
                    if err.status.code != 429 or attempt == RETRY_ATTEMPTS or waited + delay > RETRY_BUDGET_S:
                        raise
                    self._sleep(delay)
                    waited += delay
            raise AssertionError("unreachable")

        return call


@dataclass
class Session:
    client: Client
    namespace: str

    @classmethod
    def open(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
        try:
            config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        except Exception as err:
            raise CliError(
                f"cannot load a kubeconfig ({err}); pass --kubeconfig or set KUBECONFIG "
                "(for the dev cluster: `export KUBECONFIG=.devcluster/kubeconfig`)"
            ) from err
        try:
            single = config.get(context_name=context) if context else config.get()
        except Exception as err:
            raise CliError(f"kubeconfig has no context {context!r}: {err}") from err
        client = Client(config=single, namespace=namespace, field_manager=FIELD_MANAGER, timeout=30)
        return cls(RetryingClient(client), client.namespace)  # type: ignore[arg-type]

    def get(self, resource: Any, name: str, what: str, hint: str = "") -> dict[str, Any]:
        try:
            return self.client.get(resource, name, namespace=self.namespace).to_dict()
        except ApiError as err:
            raise explain(err, what, self.namespace, hint) from err
        except OSError as err:
            raise self.unreachable(err) from err

    def list(self, resource: Any, what: str, **kw: Any) -> list[dict[str, Any]]:
        try:
            return [o.to_dict() for o in self.client.list(resource, namespace=self.namespace, **kw)]
        except ApiError as err:
            raise explain(err, what, self.namespace) from err
        except OSError as err:
            raise self.unreachable(err) from err

    def unreachable(self, err: Exception) -> CliError:
        return CliError(f"cannot reach the Kubernetes API server ({err}); is the cluster up and KUBECONFIG right?")


def iter_links(links: list[dict[str, Any]], app: str, label: str) -> Iterator[dict[str, Any]]:
    for link in links:
        spec = link.get("spec") or {}
        if spec.get("app") == app and spec.get("label") == label:
            yield link
