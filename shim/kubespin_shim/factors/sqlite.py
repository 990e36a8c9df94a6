"""The SQLite factor: ``fermyon:spin/sqlite@2.0.0`` and ``spin:sqlite/sqlite@3.0.0``.

Databases are opened by label with the key-value factor's rules: only labels in the component's
``sqlite_databases`` (else ``access-denied``); ``default`` always exists (``sqlite_db.db`` in the
state directory); others need ``[sqlite_database.<label>]`` (else ``no-such-database``, logged
once, served as soon as a runtime config binds it). Statements are parameterised: the guest's
``list<value>`` is bound by SQLite, never spliced into SQL text.

3.0.0 adds ``last-insert-rowid`` and ``changes``; they are read on the same SQLite connection
right after each statement, so they are the guest's own numbers even though connections are
pooled between statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, HostResource, Ok, Variant
from kubespin_shim.kv.bindings import Lease, LiveBindings
from kubespin_shim.kv.config import SqliteDbSpec, prepare_directories, resolve_state_dir, sqlite_specs
from kubespin_shim.kv.sqlite_database import DatabaseSession, SqlError, SqliteDatabase
from kubespin_shim.kv.warnings import LabelWarnings
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime_config import RuntimeConfig

log = logging.getLogger("kubespin.shim.sqlite")

KEY = "sqlite"
#: Spin's connection table capacity per instance.
CONNECTION_CAPACITY = 256

ACCESS_DENIED = Err(Variant("access-denied"))
NO_SUCH_DATABASE = Err(Variant("no-such-database"))

_TAGS: dict[type, str] = {int: "integer", float: "real", str: "text", bytes: "blob", type(None): "null"}


def _make_database(spec: SqliteDbSpec) -> SqliteDatabase:
    return SqliteDatabase(spec.path, allow_attach_file=spec.allow_attach_file)


class SqliteFactor:
    name = "sqlite"
    interfaces: list[Interface] = []

    def __init__(self, app: AppManifest, *, state_dir: Path | None = None, cwd: Path | None = None) -> None:
        self.app = app
        self._cli_state_dir = state_dir
        self._cwd = cwd
        self.live: LiveBindings[SqliteDatabase] = LiveBindings("sqlite database")
        self._allowed = {c.id: frozenset(c.sqlite_databases) for c in app.components.values()}
        self._used = set().union(*self._allowed.values())
        self._no_databases: dict[str, SqliteRequest] = {}  # per component without labels: see prepare()
        self._warnings = LabelWarnings(log)

    @classmethod
    def from_app(cls, app: AppManifest, runtime_config: RuntimeConfig, *, state_dir: Path | None) -> SqliteFactor:
        factor = cls(app, state_dir=state_dir)
        factor.stage(runtime_config)()
        return factor

    def stage(self, rc: RuntimeConfig) -> Callable[[], None]:
        state_dir = resolve_state_dir(rc, self._cli_state_dir, self.app.base_dir)
        specs = sqlite_specs(rc, state_dir, self._cwd)
        prepare_directories(rc, "sqlite_database", specs, self._used, "sqlite database")
        return self.live.stage(
            rc, "sqlite_database", specs, _make_database, self._allowed, "no-such-database"
        )

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        allowed = self._allowed.get(component.id)
        if allowed is None:
            allowed = self._allowed[component.id] = frozenset(component.sqlite_databases)
        if not allowed:
            # A component that lists no labels can open nothing: it needs no hold on the bindings, and
            # its requests share one view that refuses every open (this runs on every request).
            shared = self._no_databases.get(component.id)
            if shared is None:
                shared = self._no_databases[component.id] = SqliteRequest(self, component.id, allowed, None)
            ctx.extras[KEY] = shared
            return
        ctx.extras[KEY] = SqliteRequest(self, component.id, allowed, self.live.acquire())

    def warn_once(self, component: str, label: str, kind: str, message: str) -> None:
        self._warnings.warn_once(component, label, kind, message)

    def close(self) -> None:
        self.live.close()


class SqliteRequest:
    """One request's databases: the bindings it started with and the sessions it opened.

    When the request's context is freed, sessions still open (guests often never drop their
    handles) give their connections back, rolling back an unfinished transaction.
    """

    __slots__ = ("allowed", "component_id", "factor", "lease", "sessions")

    def __init__(
        self, factor: SqliteFactor, component_id: str, allowed: frozenset[str], lease: Lease[Any] | None
    ) -> None:
        self.factor = factor
        self.component_id = component_id
        self.allowed = allowed
        self.lease = lease
        self.sessions: list[DatabaseSession] = []

    def open(self, label: str, *, track_changes: bool) -> DatabaseSession | Err:
        if label not in self.allowed:
            self.factor.warn_once(
                self.component_id, label, "denied",
                f"component {self.component_id!r} tried to open sqlite database {label!r}, which is not in its "
                f"sqlite_databases {sorted(self.allowed)}: access-denied (add {label!r} to "
                f"component.{self.component_id}.sqlite_databases in spin.toml to allow it)",
            )
            return ACCESS_DENIED
        assert self.lease is not None  # allowed is non-empty, so prepare() took a lease
        db = self.lease.generation.backend(label)
        if db is None:
            self.factor.warn_once(
                self.component_id, label, "unbound",
                f"component {self.component_id!r} opened sqlite database {label!r}, which the runtime config "
                f"does not define: no-such-database (add [sqlite_database.{label}] to the runtime config)",
            )
            return NO_SUCH_DATABASE
        if sum(not s.closed for s in self.sessions) >= CONNECTION_CAPACITY:
            return Err(Variant("io", "too many connections opened"))
        session = db.session(track_changes=track_changes)
        self.sessions.append(session)
        return session

    def __del__(self) -> None:
        for s in self.sessions:
            try:
                s.close()
            except Exception:
                log.exception("closing a sqlite session at the end of a request failed")
        self.sessions = []


class Connection(HostResource):
    """``fermyon:spin/sqlite@2.0.0`` ``connection``."""

    def __init__(self, session: DatabaseSession) -> None:
        self.session = session

    def close(self) -> None:
        self.session.close()

    def execute(self, statement: str, parameters: list[Variant]) -> Ok | Err:
        try:
            columns, rows = self.session.execute(statement, [p.value for p in parameters])
        except SqlError as e:
            return Err(Variant("io", str(e)))
        tags = _TAGS
        return Ok(
            {
                "columns": columns,
                "rows": [{"values": [Variant(tags[type(v)], v) for v in row]} for row in rows],
            }
        )


class ConnectionV3(Connection):
    """``spin:sqlite/sqlite@3.0.0`` ``connection``: adds last-insert-rowid and changes."""

    resource_id = -1  # its own host resource type, not the 2.0.0 one it inherits from

    def last_insert_rowid(self) -> int:
        return self.session.last_insert_rowid

    def changes(self) -> int:
        return self.session.changes


spin_sqlite_v2 = Interface("fermyon:spin/sqlite")
spin_sqlite_v2.resource("connection", Connection, ["execute"])


@spin_sqlite_v2.func("[static]connection.open")
def open_v2(ctx: CallContext, database: str) -> Ok | Err:
    session = ctx.extras[KEY].open(database, track_changes=False)
    return session if isinstance(session, Err) else Ok(Connection(session))


spin_sqlite_v3 = Interface("spin:sqlite/sqlite")
spin_sqlite_v3.resource("connection", ConnectionV3, ["execute", "last-insert-rowid", "changes"])


@spin_sqlite_v3.func("[static]connection.open")
def open_v3(ctx: CallContext, database: str) -> Ok | Err:
    session = ctx.extras[KEY].open(database, track_changes=True)
    return session if isinstance(session, Err) else Ok(ConnectionV3(session))


SqliteFactor.interfaces = [spin_sqlite_v2, spin_sqlite_v3]
