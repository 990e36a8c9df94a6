"""Run the operator in-process: kopf's operator() with explicit settings and registry.

`kubespin operator` calls `run_operator`; tests and benchmarks start it as a real process the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import kopf
from lightkube import AsyncClient

from kubespin_operator import constants as c
from kubespin_operator.controller import Controller
from kubespin_operator.handlers import register
from kubespin_operator.kube import Kube, load_kubeconfig
from kubespin_operator.render import RenderConfig

log = logging.getLogger(__name__)

DEFAULT_SHIM_IMAGE = "ghcr.io/kubespin/kubespin:0.1.0"


@dataclass
class OperatorOptions:
    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    shim_image: str = DEFAULT_SHIM_IMAGE
    image_pull_policy: str | None = None
    liveness_endpoint: str | None = None
    workers: int = 32
    resync_seconds: float = 600.0
    redis_timeout: float = 1.0
    inspect_images: bool = True
    llm_node_recheck_seconds: float = 30.0
    verbose: bool = False


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """kopf computes an object's "essence" (a deep copy) on every event to diff it for change handlers.
    This operator has only event handlers and indexes, so the diff is never used: skip the copy."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def operator_settings(options: OperatorOptions) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.peering.standalone = True  # one replica (Deployment strategy Recreate); no peering CRDs needed
    settings.posting.level = logging.WARNING  # kopf's own events only for its errors; ours are explicit
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Only objects this operator rendered: filtered by the API server, not in Python.
    selector = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY_VALUE}"
    settings.watching.label_selectors["apps", "deployments"] = selector
    settings.watching.label_selectors["", "persistentvolumeclaims"] = selector
    # Secrets are watched for the ones apps and stores reference; the runtime-config Secrets the operator
    # writes itself are filtered out by the API server (one event less per write, at 1000s of apps).
    settings.watching.label_selectors["", "secrets"] = f"{c.MANAGED_BY_LABEL}!={c.MANAGED_BY_VALUE}"
    return settings


def _make_login(kubeconfig: str | None) -> Any:
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig:
            os.environ["KUBECONFIG"] = kubeconfig
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    return login


async def operate(options: OperatorOptions, stop_flag: asyncio.Event | None = None) -> None:
    registry = kopf.OperatorRegistry()
    controller = Controller(workers=options.workers, resync_seconds=options.resync_seconds)
    config = load_kubeconfig(options.kubeconfig)
    register(
        registry,
        controller,
        make_kube=lambda: Kube(AsyncClient(config=config, field_manager=c.FIELD_MANAGER, timeout=30, http2=True)),
        render_config=RenderConfig(shim_image=options.shim_image, image_pull_policy=options.image_pull_policy),
        redis_timeout=options.redis_timeout,
        inspect_images=options.inspect_images,
        llm_node_recheck_seconds=options.llm_node_recheck_seconds,
        login=_make_login(options.kubeconfig),
    )
    await kopf.operator(
        registry=registry,
        settings=operator_settings(options),
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        liveness_endpoint=options.liveness_endpoint,
        stop_flag=stop_flag,
    )


def run_operator(options: OperatorOptions) -> None:
    kopf.configure(verbose=options.verbose, log_format=kopf.LogFormat.PLAIN)
    # One line per HTTP request (httpx) or per socket step (httpcore) drowns the operator's own logs.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not options.verbose:
        # kopf logs every handler call per object at INFO: thousands of lines per minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(operate(options))
