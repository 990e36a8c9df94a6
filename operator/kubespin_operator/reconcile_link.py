"""StoreLink reconcile: report whether the link takes effect, and if not, why. The binding itself is
rendered by the SpinApp reconcile from the same rules (linking.py), so the two never disagree."""

from __future__ import annotations

from kubespin_operator import constants as c
from kubespin_operator.context import Context
from kubespin_operator.linking import evaluate_link
from kubespin_operator.model import LinkView
from kubespin_operator.status import link_status


async def reconcile_link(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.world.link(namespace, name)
    if body is None:
        return None
    link = LinkView.from_body(body)
    linkset = ctx.world.linkset_around(namespace, [link])
    links = list(linkset.links.values())
    stores = ctx.world.stores_for(namespace, links)
    apps = ctx.world.apps_for(namespace, links)
    store = stores.get(link.store)
    secrets, _ = await ctx.read_objects(namespace, store.referenced_secrets() if store else ())
    outcome = evaluate_link(link, linkset, apps, stores, secrets)
    status = link_status(body, outcome)
    old = ctx.previous_status(body)
    if await ctx.write_status(c.LINK_KIND, body, status):
        await ctx.event_on_transition(body, old.get("conditions"), status["conditions"], "Ready", "False")
    return None
