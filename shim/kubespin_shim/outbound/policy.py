"""Who may connect where: each component's allow-list, checked per request, and the denial log.

Spin parses a component's ``allowed_outbound_hosts`` when the app loads (failing on a bad entry)
and resolves ``{{ variable }}`` templates per instance, lazily, on the first check
(``factor-outbound-networking``). Same here: :class:`ComponentPolicy` is built at start;
:class:`RequestHosts` lives for one request and resolves templates only if the guest makes an
outbound call. Lists without templates are resolved once and shared.

A denied destination is logged with the key that would allow it, like ``spin up`` prints
"To allow this request, add 'allowed_outbound_hosts = [...]'", but naming the component.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from kubespin_shim.outbound.allowed_hosts import (
    AllowedHostError,
    AllowList,
    AllowListSpec,
    OutboundUrl,
    parse_component_hosts,
    well_known_port,
)
from kubespin_shim.variables import Template, VariableError

log = logging.getLogger("kubespin.shim.outbound")

#: A denied destination is logged at WARNING at most this often per component and destination.
DENIAL_LOG_INTERVAL_S = 60.0
_MEMO_LIMIT = 32


def _default_values(declared: Mapping[str, object]) -> Callable[[str], str | None]:
    def default(name: str) -> str | None:
        decl = declared.get(name)
        return getattr(decl, "default", None) if decl is not None else None

    return default


class ComponentPolicy:
    """One component's ``allowed_outbound_hosts``, parsed and validated at start."""

    def __init__(
        self,
        component_id: str,
        hosts: Sequence[str],
        component_ids: Sequence[str],
        declared_variables: Mapping[str, object] | None = None,
    ) -> None:
        self.component_id = component_id
        # Raises InvalidAllowedHosts (a ShimError) naming the component and the entry.
        self.spec: AllowListSpec = parse_component_hosts(
            component_id, list(hosts), list(component_ids), _default_values(declared_variables or {})
        )
        self._static: AllowList | None = self.spec.resolve(_no_templates) if self.spec.is_literal else None
        self._memo: dict[tuple[str, ...], AllowList] = {}
        self._memo_lock = threading.Lock()
        self._denials: dict[str, float] = {}

    def resolve(self, render: Callable[[Template], str]) -> AllowList:
        """The allow-list with current variable values. Raises VariableError / AllowedHostError."""
        if self._static is not None:
            return self._static
        key = tuple(render(item) if isinstance(item, Template) else "" for item in self.spec.items)
        with self._memo_lock:
            cached = self._memo.get(key)
        if cached is not None:
            return cached
        values = iter(key)
        resolved = self.spec.resolve(lambda _t: next(values))
        with self._memo_lock:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = resolved
        return resolved

    def report_denied(self, scheme: str, authority: str, suggestion: str) -> None:
        """Log a denied destination (rate-limited per destination) with the entry that would allow it."""
        now = time.monotonic()
        last = self._denials.get(suggestion)
        level = logging.WARNING if last is None or now - last >= DENIAL_LOG_INTERVAL_S else logging.DEBUG
        if level == logging.WARNING:
            self._denials[suggestion] = now
        if authority == "self":
            log.log(
                level,
                "component %r tried to make an HTTP request to its own app but it does not have permission; "
                'to allow it, add "%s" to allowed_outbound_hosts of component %r',
                self.component_id,
                suggestion,
                self.component_id,
            )
        else:
            log.log(
                level,
                "component %r tried to connect to disallowed destination %s://%s; "
                'to allow it, add "%s" to allowed_outbound_hosts of component %r',
                self.component_id,
                scheme,
                authority,
                suggestion,
                self.component_id,
            )


def _no_templates(t: Template) -> str:  # pragma: no cover - only called for lists with templates
    raise AssertionError("literal allow-list has no templates")


def suggestion_for(url: OutboundUrl) -> str:
    """The entry that allows ``url``: ``scheme://host`` plus the port unless it is the default."""
    if url.port is None or url.port == well_known_port(url.scheme):
        return f"{url.scheme}://{url.host}"
    return f"{url.scheme}://{url.host}:{url.port}"


class RequestHosts:
    """One request's view of its component's allow-list; templates resolved on first use."""

    __slots__ = ("_allow", "_failed", "_renderer", "policy")

    def __init__(self, policy: ComponentPolicy, renderer: Callable[[], Callable[[Template], str] | None]) -> None:
        """``renderer()`` gives the template renderer; called only if the list has templates."""
        self.policy = policy
        self._renderer = renderer
        self._allow: AllowList | None = None
        self._failed = False

    def allow_list(self) -> AllowList | None:
        """None when templates cannot be resolved (logged): then nothing is allowed, as in Spin."""
        if self._allow is None and not self._failed:
            try:
                render = None if self.policy.spec.is_literal else self._renderer()
                if render is None and not self.policy.spec.is_literal:
                    raise VariableError("other", "no variable resolver is available for this request")
                self._allow = self.policy.resolve(render or _no_templates)
            except (VariableError, AllowedHostError) as e:
                self._failed = True
                log.error(
                    "component %r: allowed_outbound_hosts %s cannot be resolved, so every outbound "
                    "connection is denied: %s",
                    self.policy.component_id,
                    self.policy.spec.entries_text(),
                    e,
                )
        return self._allow

    def check_url(self, url: str, scheme: str) -> bool:
        """``OutboundAllowedHosts::check_url``: parse (``scheme`` when the URL has none), match, report."""
        try:
            parsed = OutboundUrl.parse(url, scheme)
        except AllowedHostError as e:
            log.warning(
                "component %r made a request to a URL that cannot be parsed (%s): %s", self.policy.component_id, url, e
            )
            return False
        allow = self.allow_list()
        if allow is not None and allow.allows(parsed):
            return True
        self.policy.report_denied(parsed.scheme, parsed.authority, suggestion_for(parsed))
        return False

    def check_relative(self, schemes: Sequence[str]) -> bool:
        """``check_relative_url``: a request to the app itself (relative URL)."""
        allow = self.allow_list()
        if allow is not None and allow.allows_relative(schemes):
            return True
        self.policy.report_denied(schemes[0] if schemes else "", "self", "http://self")
        return False


def app_renderer(variables: object | None) -> Callable[[Template], str] | None:
    """Render templates against the *application* variables, as Spin's expression resolver does.

    ``variables`` is the request's ``ComponentVariables`` (``ctx.extras["variables"]``); allow-list
    templates name app variables, so we use the app-level resolver it was built from.
    """
    if variables is None:
        return None
    resolver = getattr(variables, "resolver", None)
    if resolver is None:
        return None
    return lambda template: template.render(resolver.resolve)
