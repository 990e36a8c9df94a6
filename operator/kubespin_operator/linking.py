"""Which StoreLink takes effect, and why the others do not. Pure: the same rules serve the SpinApp
reconciler (what to render) and the StoreLink reconciler (what to report), so both always agree.

Rules:
- One link per (app, label) takes effect: the oldest (creationTimestamp, then name). Others: Conflict.
- A link to a missing app or store takes effect by itself once the object appears.
- A store whose backend cannot be used (bad URL, missing Secret) binds nothing; the link says why.
- A `spin` store is SQLite on a volume that attaches to one node. It binds only to one app, running at
  most one replica and not autoscaled; anything else is refused rather than left to fail at runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubespin_operator.model import (
    Binding,
    InvalidSpec,
    LinkView,
    ObjectData,
    Problem,
    SpinBackend,
    StoreView,
    resolve_backend,
)

BOUND = "Bound"
CONFLICT = "Conflict"
APP_NOT_FOUND = "AppNotFound"
STORE_NOT_FOUND = "StoreNotFound"
REFUSED = "Refused"


@dataclass(frozen=True)
class LinkOutcome:
    reason: str  # BOUND, CONFLICT, APP_NOT_FOUND, STORE_NOT_FOUND, REFUSED or an InvalidSpec reason
    message: str
    binding: Binding | None = None
    winner: str | None = None  # the link that wins a conflict

    @property
    def bound(self) -> bool:
        return self.binding is not None


class LinkSet:
    """Links of one namespace with the conflict winners computed once (evaluating many links is O(n))."""

    def __init__(self, links: Iterable[LinkView]) -> None:
        self.links = {link.name: link for link in links}
        self.winners = winning_links(self.links.values())

    def spin_store_owner(self, store: str, apps: Mapping[str, Mapping[str, Any]]) -> LinkView | None:
        """The link whose app owns a spin store's volume: the oldest winning link to the store whose app
        exists and runs a single replica (a link that is refused anyway does not block the others)."""
        eligible = [
            w for w in self.winners.values() if w.store == store and w.app in apps and not may_scale_out(apps[w.app])
        ]
        return min(eligible, key=lambda w: w.order_key) if eligible else None


def winning_links(links: Iterable[LinkView]) -> dict[tuple[str, str], LinkView]:
    """(app, label) → the link that takes effect for it."""
    best: dict[tuple[str, str], LinkView] = {}
    for link in links:
        key = (link.app, link.label)
        if key not in best or link.order_key < best[key].order_key:
            best[key] = link
    return best


def may_scale_out(app_spec: Mapping[str, Any]) -> bool:
    """Whether an app may run more than one pod (several replicas or an external autoscaler)."""
    return bool(app_spec.get("enableAutoscaling")) or int(app_spec.get("replicas", 1) or 0) > 1


def evaluate_link(
    link: LinkView,
    links: LinkSet | Iterable[LinkView],
    apps: Mapping[str, Mapping[str, Any]],
    stores: Mapping[str, StoreView],
    secrets: ObjectData,
) -> LinkOutcome:
    """The outcome of one link, given the links it competes with, and the app specs and stores they name.

    `links` must hold every link with the same (app, label) and, for a spin store, every link to that
    store. `apps` maps app name → spec; `secrets` holds the decoded Secrets the store may reference.
    """
    linkset = links if isinstance(links, LinkSet) else LinkSet(links)
    winner = linkset.winners.get((link.app, link.label), link)
    if winner.name != link.name:
        return LinkOutcome(
            CONFLICT,
            f"StoreLink {winner.name} already binds label {link.label!r} of SpinApp {link.app}; this link has "
            f"no effect. Delete one of the two, or change this link's label.",
            winner=winner.name,
        )
    store = stores.get(link.store)
    if store is None:
        return LinkOutcome(
            STORE_NOT_FOUND,
            f"KeyValueStore {link.store} does not exist; the link takes effect once it is created",
        )
    try:
        backend = resolve_backend(store, secrets)
    except InvalidSpec as err:
        return LinkOutcome(err.reason, err.message)
    app_spec = apps.get(link.app)
    if app_spec is None:
        return LinkOutcome(
            APP_NOT_FOUND, f"SpinApp {link.app} does not exist; the link takes effect once it is created"
        )
    if isinstance(backend, SpinBackend):
        refusal = _spin_store_refusal(link, app_spec, linkset.spin_store_owner(store.name, apps), store)
        if refusal:
            return LinkOutcome(REFUSED, refusal)
    message = f"label {link.label!r} of SpinApp {link.app} is bound to KeyValueStore {store.name}"
    if store.deleting:
        message += "; the store is being deleted and waits until this link is deleted"
    return LinkOutcome(BOUND, message, binding=Binding(link.label, store.name, link.name, backend))


def _spin_store_refusal(
    link: LinkView, app_spec: Mapping[str, Any], first: LinkView | None, store: StoreView
) -> str | None:
    if may_scale_out(app_spec):
        return (
            f"KeyValueStore {store.name} is SQLite on a {store.spin_access_mode} volume, which attaches to one "
            f"node, but SpinApp {link.app} may run several replicas (replicas > 1 or enableAutoscaling). "
            "Use a redis store, or set replicas: 1."
        )
    first_app = first.app if first else link.app
    if first_app != link.app:
        return (
            f"KeyValueStore {store.name} is SQLite on a {store.spin_access_mode} volume already used by "
            f"SpinApp {first_app}; one volume cannot be shared safely across apps. Use a redis store or "
            "another spin store."
        )
    return None


def bindings_for_app(
    app_name: str,
    links: LinkSet | Iterable[LinkView],
    apps: Mapping[str, Mapping[str, Any]],
    stores: Mapping[str, StoreView],
    secrets: ObjectData,
) -> tuple[list[Binding], dict[str, LinkOutcome]]:
    """Bindings that take effect for one app (sorted by label), and the outcome of each of its links."""
    linkset = links if isinstance(links, LinkSet) else LinkSet(links)
    outcomes = {
        link.name: evaluate_link(link, linkset, apps, stores, secrets)
        for link in linkset.links.values()
        if link.app == app_name
    }
    bindings = sorted((o.binding for o in outcomes.values() if o.binding), key=lambda b: b.label)
    return bindings, outcomes


def link_problems(outcomes: Mapping[str, LinkOutcome]) -> list[Problem]:
    """Why an app's links do not take effect, as app problems (a conflict is the other link's problem)."""
    return [
        Problem(outcome.reason, f"StoreLink {name}: {outcome.message}")
        for name, outcome in sorted(outcomes.items())
        if not outcome.bound and outcome.reason != CONFLICT
    ]
