"""The click groups: ``kv``, ``link``, ``unlink``, ``apps`` (Fermyon Cloud's command shapes).

Only click is imported at module level: `kubespin` registers these groups for every invocation,
including `kubespin up` in app pods, which must not pay for lightkube's import (about 0.2 s).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from kubespin.cloud_cli.kube import Session

F = TypeVar("F", bound=Callable[..., Any])
REDIS_SCHEMES = ("redis", "rediss", "unix")
URL_SECRET_KEY = "url"


def cluster_options(func: F) -> F:
    """--kubeconfig / --context / --namespace, as kubectl spells them."""
    func = click.option("--namespace", "-n", default=None, help="Namespace (default: the kubeconfig context's).")(func)
    func = click.option("--context", default=None, help="kubeconfig context to use.")(func)
    func = click.option(
        "--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False), default=None, help="kubeconfig file."
    )(func)
    return func


def format_option(func: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)(
        func
    )


def _session(kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
    from kubespin.cloud_cli.kube import Session

    return Session.open(kubeconfig, context, namespace)


def _error(message: str) -> click.ClickException:
    from kubespin.cloud_cli.kube import CliError

    return CliError(message)


def _dns_name(text: str) -> str:
    """A DNS-1123 name from app and label (Spin labels may hold `_`, Kubernetes names may not)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "link"


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise _error(f"{question} Not confirmed: pass --yes to confirm without a prompt")
    if not click.confirm(question, default=False):
        raise _error("cancelled; nothing was changed")


# --- kv --------------------------------------------------------------------------------------------


@click.group("kv")
def kv() -> None:
    """Key-value stores (KeyValueStore objects) and their data, like `spin cloud kv`."""


@kv.command("create")
@click.argument("name")
@click.option(
    "--redis-url",
    default=None,
    metavar="URL",
    help="A Redis store at URL (kept in a Secret, never in the store object).",
)
@click.option(
    "--size", default="1Gi", show_default=True, help="Without --redis-url: size of the `spin` store's volume."
)
@cluster_options
def kv_create(
    name: str, redis_url: str | None, size: str, kubeconfig: str | None, context: str | None, namespace: str | None
) -> None:
    """Create store NAME: Redis with --redis-url, else a `spin` (SQLite on a volume) store."""
    import base64
    from urllib.parse import urlsplit

    from lightkube import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Secret

    from kubespin.cloud_cli.kube import KeyValueStore, explain

    session = _session(kubeconfig, context, namespace)
    spec: dict[str, Any]
    secret_name = f"kvstore-{name}-redis"
    if redis_url is not None:
        parts = urlsplit(redis_url)
        if parts.scheme not in REDIS_SCHEMES or (parts.scheme != "unix" and not parts.hostname):
            raise _error(
                "--redis-url must be a redis://, rediss:// or unix:// URL with a host "
                "(not shown: it may hold a password)"
            )
        spec = {"redis": {"urlFrom": {"secretKeyRef": {"name": secret_name, "key": URL_SECRET_KEY}}}}
    else:
        spec = {"spin": {"size": size}}
    store = KeyValueStore(metadata=ObjectMeta(name=name, namespace=session.namespace), spec=spec)
    try:
        created = session.client.create(store)
    except ApiError as err:
        raise explain(err, f"KeyValueStore {name}", session.namespace) from err
    if redis_url is not None:
        owner = {
            "apiVersion": f"{KeyValueStore._api_info.resource.group}/{KeyValueStore._api_info.resource.version}",
            "kind": "KeyValueStore",
            "name": name,
            "uid": created.metadata.uid,
        }
        secret = Secret(
            metadata=ObjectMeta(name=secret_name, namespace=session.namespace, ownerReferences=[owner]),  # type: ignore[list-item]
            type="Opaque",
            data={URL_SECRET_KEY: base64.b64encode(redis_url.encode()).decode()},
        )
        try:
            session.client.create(secret)
        except ApiError as err:
            raise explain(err, f"Secret {secret_name} (the Redis URL of store {name})", session.namespace) from err
        click.echo(f"Created key-value store {name} (Redis; URL in Secret {secret_name})")
    else:
        click.echo(f"Created key-value store {name} (spin: SQLite on a {size} PersistentVolumeClaim)")


@kv.command("list")
@format_option
@cluster_options
def kv_list(fmt: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Links (app, label, store) and the stores linked to no app."""
    from kubespin.cloud_cli.kube import KeyValueStore, StoreLink
    from kubespin.cloud_cli.views import kv_listing, render_kv

    session = _session(kubeconfig, context, namespace)
    stores = session.list(KeyValueStore, "KeyValueStores")
    links = session.list(StoreLink, "StoreLinks")
    click.echo(render_kv(kv_listing(stores, links), fmt))


@kv.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask, even if apps are linked to the store.")
@cluster_options
def kv_delete(name: str, yes: bool, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Delete store NAME. External Redis data is never deleted."""
    from lightkube import ApiError

    from kubespin.cloud_cli.kube import KeyValueStore, StoreLink, explain

    session = _session(kubeconfig, context, namespace)
    session.get(KeyValueStore, name, f"KeyValueStore {name}", hint="`kubespin kv list` shows the stores")
    links = [lk for lk in session.list(StoreLink, "StoreLinks") if (lk.get("spec") or {}).get("store") == name]
    if links:
        names = ", ".join(f"{lk['spec']['app']}/{lk['spec']['label']}" for lk in links)
        _confirm(
            f"Store {name} is linked to {names}. The operator keeps it until those links are removed "
            f"(kubespin unlink key-value LABEL --app APP). Delete it anyway?",
            yes,
        )
    try:
        session.client.delete(KeyValueStore, name, namespace=session.namespace)
    except ApiError as err:
        raise explain(err, f"KeyValueStore {name}", session.namespace) from err
    click.echo(f"Deleted key-value store {name}" + (" (pending until its links are removed)" if links else ""))


def _target(session: Session, store: str | None, app: str | None, label: str | None) -> Any:
    from kubespin.cloud_cli.kube import StoreLink, iter_links
    from kubespin.cloud_cli.store_data import redis_target

    if store and (app or label):
        raise click.UsageError("give --store, or --app with --label, not both")
    if not store:
        if not (app and label):
            raise click.UsageError("give --store NAME, or --app APP --label LABEL")
        linked = list(iter_links(session.list(StoreLink, "StoreLinks"), app, label))
        if not linked:
            raise _error(f"app {app} has no store linked to label {label}; `kubespin kv list` shows the links")
        store = linked[0]["spec"]["store"]
    return redis_target(session, store)


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        pairs[key] = val
    return pairs


@kv.command("set")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--store", "-s", default=None, help="The store to write to.")
@click.option("--app", "-a", default=None, help="With --label: the store linked to this app's label.")
@click.option("--label", "-l", default=None, help="With --app: the label whose store to write to.")
@cluster_options
def kv_set(
    pairs: tuple[str, ...],
    store: str | None,
    app: str | None,
    label: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Set keys in a Redis store (needs read access to the store's Secret)."""
    from kubespin.cloud_cli.store_data import kv_set as write

    values = _pairs(pairs)
    target = _target(_session(kubeconfig, context, namespace), store, app, label)
    write(target, values)
    click.echo(f"Set {len(values)} key(s) in store {target.store}")


@kv.command("get")
@click.argument("key")
@click.option("--store", "-s", default=None, help="The store to read from.")
@click.option("--app", "-a", default=None, help="With --label: the store linked to this app's label.")
@click.option("--label", "-l", default=None, help="With --app: the label whose store to read.")
@cluster_options
def kv_get(
    key: str,
    store: str | None,
    app: str | None,
    label: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Print the value of KEY (raw bytes); exit 1 if the key is absent."""
    from kubespin.cloud_cli.store_data import kv_get as read

    target = _target(_session(kubeconfig, context, namespace), store, app, label)
    value = read(target, key)
    if value is None:
        raise _error(f"store {target.store} has no key {key!r}")
    sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") or not sys.stdout.isatty() else b"\n"))
    sys.stdout.flush()


# --- link / unlink ---------------------------------------------------------------------------------


@click.group("link")
def link() -> None:
    """Link a resource to an app's label, like `spin cloud link`."""


@link.command("key-value")
@click.argument("label")
@click.option("--app", "-a", required=True, help="The SpinApp.")
@click.option("--store", "-s", required=True, help="The KeyValueStore.")
@click.option("--yes", "-y", is_flag=True, help="Relink without asking when the label is linked to another store.")
@cluster_options
def link_key_value(
    label: str, app: str, store: str, yes: bool, kubeconfig: str | None, context: str | None, namespace: str | None
) -> None:
    """Link store STORE to key-value label LABEL of app APP (relinks if the label has another store)."""
    from lightkube import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.types import PatchType

    from kubespin.cloud_cli.kube import KeyValueStore, SpinApp, StoreLink, explain, iter_links

    session = _session(kubeconfig, context, namespace)
    session.get(KeyValueStore, store, f"KeyValueStore {store}", hint=f"create it with `kubespin kv create {store}`")
    session.get(SpinApp, app, f"SpinApp {app}", hint="`kubespin apps list` shows the apps")
    existing = list(iter_links(session.list(StoreLink, "StoreLinks"), app, label))
    if existing:
        current = existing[0]
        name = current["metadata"]["name"]
        if current["spec"].get("store") == store:
            click.echo(f"Label {label} of app {app} is already linked to store {store} (StoreLink {name})")
            return
        _confirm(
            f"Label {label} of app {app} is linked to store {current['spec'].get('store')} (StoreLink {name}). "
            f"Relink it to {store}?",
            yes,
        )
        try:
            session.client.patch(
                StoreLink, name, {"spec": {"store": store}}, namespace=session.namespace, patch_type=PatchType.MERGE
            )
        except ApiError as err:
            raise explain(err, f"StoreLink {name}", session.namespace) from err
        click.echo(f"Relinked label {label} of app {app} from store {current['spec'].get('store')} to {store}")
        return
    spec = {"app": app, "label": label, "store": store}
    name = _dns_name(f"{app}-{label}")
    try:
        created = session.client.create(
            StoreLink(metadata=ObjectMeta(name=name, namespace=session.namespace), spec=spec)
        )
    except ApiError as err:
        if err.status.code != 409:
            raise explain(err, f"StoreLink {name}", session.namespace) from err
        meta = ObjectMeta(generateName=f"{name[:57]}-", namespace=session.namespace)
        try:
            created = session.client.create(StoreLink(metadata=meta, spec=spec))
        except ApiError as err2:
            raise explain(err2, "StoreLink", session.namespace) from err2
    click.echo(f"Linked label {label} of app {app} to store {store} (StoreLink {created.metadata.name})")


@click.group("unlink")
def unlink() -> None:
    """Unlink a resource from an app's label, like `spin cloud unlink`."""


@unlink.command("key-value")
@click.argument("label")
@click.option("--app", "-a", required=True, help="The SpinApp.")
@cluster_options
def unlink_key_value(label: str, app: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Remove the link of key-value label LABEL of app APP (the store and its data stay)."""
    from lightkube import ApiError

    from kubespin.cloud_cli.kube import StoreLink, explain, iter_links

    session = _session(kubeconfig, context, namespace)
    existing = list(iter_links(session.list(StoreLink, "StoreLinks"), app, label))
    if not existing:
        raise _error(f"app {app} has no link for key-value label {label}; `kubespin kv list` shows the links")
    for current in existing:
        name = current["metadata"]["name"]
        try:
            session.client.delete(StoreLink, name, namespace=session.namespace)
        except ApiError as err:
            raise explain(err, f"StoreLink {name}", session.namespace) from err
        click.echo(
            f"Unlinked label {label} of app {app} from store {current['spec'].get('store')} (deleted StoreLink {name})"
        )


# --- apps ------------------------------------------------------------------------------------------


@click.group("apps")
def apps() -> None:
    """Spin apps (SpinApp objects), like `spin cloud apps`."""


@apps.command("list")
@format_option
@cluster_options
def apps_list(fmt: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Apps with their readiness, links and, on a kubespin local node, the URL where they answer."""
    from kubespin_operator.constants import APP_LABEL
    from lightkube.resources.core_v1 import Pod

    from kubespin.cloud_cli.kube import SpinApp, StoreLink
    from kubespin.cloud_cli.views import apps_listing, render_apps

    session = _session(kubeconfig, context, namespace)
    spin_apps = session.list(SpinApp, "SpinApps")
    links = session.list(StoreLink, "StoreLinks")
    try:
        pods = session.list(Pod, "Pods", labels={APP_LABEL: None}) if spin_apps else []
    except click.ClickException:
        pods = []  # without permission to list pods, show the apps without URLs
    click.echo(render_apps(apps_listing(spin_apps, links, pods), fmt))


COMMANDS = (kv, link, unlink, apps)
