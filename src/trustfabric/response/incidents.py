"""Incident records and their stores (in memory, SQLite), with the queries reports need.

An :class:`Incident` is one containment of one principal: the alert(s) that led
to it, time to detect (first malicious attempt -> first alert), time to contain
(alert -> every enforcement point confirmed refusal), whether it was contained
(and which points had not confirmed), and its release (who, when). Incidents are
immutable; the store keeps the latest version of each by id. Alerts are stored
too, whatever action they led to, so that ``trustfabric response alerts`` lists
them all.

Both stores satisfy :class:`IncidentStore`; ``sqlite3`` errors are translated
into :class:`~trustfabric.response.errors.IncidentStoreError` here.
"""

from __future__ import annotations

import abc
import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import msgspec

from trustfabric.percentiles import percentile
from trustfabric.response.alerts import Alert
from trustfabric.response.errors import IncidentStoreError
from trustfabric.sqlitefile import connect as connect_sqlite


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    incident_id: str
    principal: str
    alerts: tuple[Alert, ...]
    opened_at: float  # Unix seconds (the first alert's detection time)
    ttd_ms: float | None
    ttc_ms: float | None = None
    contained: bool = False
    pending_points: tuple[str, ...] = ()  # enforcement points that have not confirmed yet
    errors: tuple[str, ...] = ()  # reason codes of containment steps that failed
    released: bool = False
    released_by: str = ""
    released_at: float | None = None
    trigger: str = ""  # "auto" (response policy) or "manual:<operator>"

    @property
    def open(self) -> bool:
        return not self.released


def new_incident_id() -> str:
    return "inc-" + os.urandom(8).hex()


class IncidentStore(Protocol):
    def put(self, incident: Incident) -> None: ...

    def get(self, incident_id: str) -> Incident | None: ...

    def add_alert(self, alert: Alert, action: str) -> None: ...

    def alerts(self, principal: str | None = None, since: float | None = None,
               limit: int = 100) -> list[tuple[Alert, str]]: ...

    def incidents(self, principal: str | None = None, open_only: bool = False,
                  limit: int = 1000) -> list[Incident]: ...


class MemoryIncidentStore:
    """In-memory store; ``max_alerts`` bounds the alert history (oldest dropped)."""

    def __init__(self, max_alerts: int = 100_000) -> None:
        self._incidents: dict[str, Incident] = {}
        self._alerts: list[tuple[Alert, str]] = []
        self._max_alerts = max_alerts
        self._lock = threading.Lock()

    def put(self, incident: Incident) -> None:
        with self._lock:
            self._incidents.pop(incident.incident_id, None)
            self._incidents[incident.incident_id] = incident

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            return self._incidents.get(incident_id)

    def add_alert(self, alert: Alert, action: str) -> None:
        with self._lock:
            self._alerts.append((alert, action))
            if len(self._alerts) > self._max_alerts:
                del self._alerts[: len(self._alerts) - self._max_alerts]

    def alerts(self, principal: str | None = None, since: float | None = None,
               limit: int = 100) -> list[tuple[Alert, str]]:
        with self._lock:
            rows = [(a, act) for a, act in self._alerts
                    if (principal is None or a.principal == principal)
                    and (since is None or a.detected_at >= since)]
        rows.sort(key=lambda r: r[0].detected_at, reverse=True)
        return rows[:limit]

    def incidents(self, principal: str | None = None, open_only: bool = False,
                  limit: int = 1000) -> list[Incident]:
        with self._lock:
            rows = [i for i in self._incidents.values()
                    if (principal is None or i.principal == principal) and (not open_only or i.open)]
        rows.sort(key=lambda i: i.opened_at, reverse=True)
        return rows[:limit]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS incident (
    incident_id TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    opened_at   REAL NOT NULL,
    released    INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_principal ON incident(principal, opened_at);
CREATE TABLE IF NOT EXISTS alert (
    alert_id    TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    detected_at REAL NOT NULL,
    action      TEXT NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_time ON alert(detected_at);
"""

_incident_dec = msgspec.json.Decoder(Incident)
_alert_dec = msgspec.json.Decoder(Alert)
_enc = msgspec.json.Encoder()


class _SqlIncidentStore(abc.ABC):
    """The queries of both SQL stores; a subclass runs them (``_run``) and writes rows (``_upsert``)."""

    _P = "?"  # the driver's placeholder

    @abc.abstractmethod
    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Run ``sql`` with ``args``; the rows (none for a write)."""

    @abc.abstractmethod
    def _upsert(self, table: str, key: str, row: tuple) -> None:
        """Insert ``row`` into ``table``, replacing the row with the same ``key``."""

    def put(self, incident: Incident) -> None:
        self._upsert("incident", "incident_id", (incident.incident_id, incident.principal, incident.opened_at,
                                                 int(incident.released), _enc.encode(incident)))

    def get(self, incident_id: str) -> Incident | None:
        rows = self._run(f"SELECT body FROM incident WHERE incident_id={self._P}", (incident_id,))
        return _incident_dec.decode(bytes(rows[0][0])) if rows else None

    def add_alert(self, alert: Alert, action: str) -> None:
        self._upsert("alert", "alert_id", (alert.alert_id, alert.principal, alert.detected_at, action,
                                           _enc.encode(alert)))

    def alerts(self, principal: str | None = None, since: float | None = None,
               limit: int = 100) -> list[tuple[Alert, str]]:
        sql = "SELECT body, action FROM alert WHERE 1=1"
        args: list = []
        if principal is not None:
            sql += f" AND principal={self._P}"
            args.append(principal)
        if since is not None:
            sql += f" AND detected_at>={self._P}"
            args.append(since)
        sql += f" ORDER BY detected_at DESC LIMIT {self._P}"
        args.append(int(limit))
        return [(_alert_dec.decode(bytes(body)), action) for body, action in self._run(sql, tuple(args))]

    def incidents(self, principal: str | None = None, open_only: bool = False,
                  limit: int = 1000) -> list[Incident]:
        sql = "SELECT body FROM incident WHERE 1=1"
        args: list = []
        if principal is not None:
            sql += f" AND principal={self._P}"
            args.append(principal)
        if open_only:
            sql += " AND released=0"
        sql += f" ORDER BY opened_at DESC LIMIT {self._P}"
        args.append(int(limit))
        return [_incident_dec.decode(bytes(body)) for (body,) in self._run(sql, tuple(args))]


class SqliteIncidentStore(_SqlIncidentStore):
    """Incidents and alerts in one SQLite file (WAL); safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = connect_sqlite(self.path, _SCHEMA, pragmas=("synchronous=NORMAL",))
        except (sqlite3.Error, OSError) as exc:
            raise IncidentStoreError(f"{self.path}: {exc}") from exc

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise IncidentStoreError(f"{self.path}: {exc}") from exc

    def _upsert(self, table: str, key: str, row: tuple) -> None:
        self._run(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?)", row)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresIncidentStore(_SqlIncidentStore):
    """Incidents and alerts in PostgreSQL (migration 0004), shared by every control plane of the floor."""

    _P = "%s"

    def __init__(self, dsn: str, schema: str) -> None:
        from psycopg_pool import ConnectionPool  # beyond one machine only: psycopg's import is not paid otherwise

        from trustfabric.audit import postgres

        self.path = f"postgresql:{schema}"
        try:
            postgres.require_current(dsn, schema)
            self._pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True, timeout=2.0,
                                        kwargs={"options": f"-c search_path={schema}", "autocommit": True,
                                                "connect_timeout": 2})
        except IncidentStoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - psycopg's and the schema check's: a typed refusal
            raise IncidentStoreError(f"{self.path}: {exc}", reason=getattr(exc, "reason", "db.unreachable")) from None

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._pool.connection() as conn:
                cur = conn.execute(sql, args)
                return cur.fetchall() if cur.description is not None else []
        except Exception as exc:  # noqa: BLE001 - psycopg's (and the pool's): a typed refusal
            raise IncidentStoreError(f"{self.path}: {exc}", reason="db.unreachable") from None

    def _upsert(self, table: str, key: str, row: tuple) -> None:
        columns = {"incident": ("incident_id", "principal", "opened_at", "released", "body"),
                   "alert": ("alert_id", "principal", "detected_at", "action", "body")}[table]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
        self._run(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s) ON CONFLICT ({key}) DO UPDATE SET {updates}", row)

    def close(self) -> None:
        self._pool.close()


def open_incident_store(path: str | Path, environ: dict[str, str] | None = None) -> IncidentStore:
    """The incident store: on PostgreSQL when ``$TRUSTFABRIC_DATABASE_URL`` is set, else the SQLite file ``path``."""
    env = os.environ if environ is None else environ
    dsn = env.get("TRUSTFABRIC_DATABASE_URL", "")
    if dsn:
        return PostgresIncidentStore(dsn, env.get("TRUSTFABRIC_DATABASE_SCHEMA") or "trustfabric")
    return SqliteIncidentStore(path)


def summarize(incidents: list[Incident]) -> dict[str, object]:
    """Counts and time figures for reports: contained, released, ttd/ttc percentiles."""
    ttd = sorted(i.ttd_ms for i in incidents if i.ttd_ms is not None)
    ttc = sorted(i.ttc_ms for i in incidents if i.ttc_ms is not None)

    return {
        "incidents": len(incidents),
        "contained": sum(1 for i in incidents if i.contained),
        "released": sum(1 for i in incidents if i.released),
        "ttd_ms_p50": percentile(ttd, 50), "ttd_ms_p99": percentile(ttd, 99),
        "ttc_ms_p50": percentile(ttc, 50), "ttc_ms_p99": percentile(ttc, 99),
    }
