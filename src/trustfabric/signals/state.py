"""Signals kept between command runs: a JSON snapshot under ``$TRUSTFABRIC_HOME/policy/signals.json``.

Beyond one machine (``$TRUSTFABRIC_DATABASE_URL``) the snapshot is the one row of the
``signal_state`` table instead (migration 0004, in ``$TRUSTFABRIC_DATABASE_SCHEMA``), so that every
control plane of the floor - a standby on another host included - starts from the same signals;
:func:`load_state` and :func:`save_state` choose, the ``path`` then naming nothing.

The embedded deployment's operators set signals with ``trustfabric signal ...``
and read decisions with ``trustfabric policy explain``; both rebuild a
:class:`~trustfabric.signals.hub.SignalHub` from this snapshot
(:func:`hub_from_state`) and write it back after a change (:func:`state_of`).
Posture is kept as the verdicts the hub reached on signed reports (never as a
bare "ok" typed by someone), with their issue time, so staleness still applies.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import ConfigError
from trustfabric.policy.topology import Topology
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import ACTIVE, MarketCalendar
from trustfabric.signals.posture import PostureVerdict, Requirements


class SignalState(msgspec.Struct, kw_only=True):
    quarantined: dict[str, str] = {}
    risk_scores: dict[str, int] = {}
    kill_switches: list[tuple[str, str, str]] = []  # (scope, name, state)
    calendar: dict[str, Any] = msgspec.field(default_factory=lambda: {"always_open": True})
    threat_bundle: str = ""
    observed: dict[str, dict[str, list[str]]] = {}
    posture: dict[str, PostureVerdict] = {}
    auth: dict[str, dict[str, Any]] = {}  # user key -> {mfa, step_up_at, device_host}
    # the writing control plane's policy epochs when it saved: (global, principal -> epoch); replicas adopt them
    epochs: tuple[int, dict[str, int]] = (0, {})


def load_state(path: Path) -> SignalState:
    database = _database()
    if database is not None:
        data = database.read()
        where = f"{database.schema}.signal_state"
    elif not path.exists():
        return SignalState()
    else:
        where = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: unreadable signal state: {exc}", reason="config.signal_state") from exc
    if data is None:
        return SignalState()
    try:
        return msgspec.json.decode(data, type=SignalState)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{where}: unreadable signal state: {exc}", reason="config.signal_state") from exc


def save_state(path: Path, state: SignalState) -> None:
    database = _database()
    if database is not None:
        database.write(msgspec.json.encode(state))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    tmp.replace(path)


class _StateRow:
    """The ``signal_state`` row on one kept connection (re-opened after a failure)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self._conn = None
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        import psycopg  # beyond one machine only: the embedded default never pays psycopg's import

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                                 options=f"-c search_path={self.schema}")
                cur = self._conn.execute(sql, args)
                return cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise ConfigError(f"{self.schema}.signal_state: {exc}".strip(), reason="db.unreachable") from None

    def read(self) -> bytes | None:
        rows = self._run("SELECT data FROM signal_state WHERE id = 1")
        return bytes(rows[0][0]) if rows else None

    def write(self, data: bytes) -> None:
        self._run("INSERT INTO signal_state (id, data, version) VALUES (1, %s, 1) ON CONFLICT (id) DO UPDATE "
                  "SET data = EXCLUDED.data, version = signal_state.version + 1", (data,))


_rows: dict[tuple[str, str], _StateRow] = {}


def _database() -> _StateRow | None:
    dsn = os.environ.get("TRUSTFABRIC_DATABASE_URL", "")
    if not dsn:
        return None
    key = (dsn, os.environ.get("TRUSTFABRIC_DATABASE_SCHEMA") or "trustfabric")
    if key not in _rows:
        _rows[key] = _StateRow(*key)
    return _rows[key]


def hub_from_state(topology: Topology, state: SignalState, *, clock: Clock = SYSTEM_CLOCK,
                   emitter: Emitter | None = None, posture_minimum: Requirements | None = None) -> SignalHub:
    """A hub holding the snapshot's signals (replayed silently, before anyone listens); ``posture_minimum``
    the hosts' requirements (default: the trust domain's)."""
    hub = SignalHub(topology, clock=clock, emitter=Emitter("signal-hub", MemorySink(), clock),
                    calendar=MarketCalendar.from_dict(state.calendar), posture_minimum=posture_minimum)
    for principal, reason in state.quarantined.items():
        hub.quarantine(principal, reason=reason, origin="state")
    for principal, score in state.risk_scores.items():
        hub.set_risk_score(principal, score, origin="state")
    for scope, name, value in state.kill_switches:
        hub.set_kill_switch(scope, name, value, origin="state")
    if state.threat_bundle:
        hub.load_threat_intel(state.threat_bundle, origin="state")
    for principal, seen in state.observed.items():
        for fp in seen.get("fingerprints", ()):
            hub.observe(principal, fingerprint=fp, origin="state")
        for digest in seen.get("code_digests", ()):
            hub.observe(principal, code_digest=digest, origin="state")
        for address in seen.get("addresses", ()):
            hub.observe(principal, address=address, origin="state")
    for host, verdict in state.posture.items():
        hub.restore_posture(host, verdict)
    for user, auth in state.auth.items():
        hub.record_authentication(user, mfa=bool(auth.get("mfa")), step_up_at=auth.get("step_up_at"),
                                  device_host=auth.get("device_host"), origin="state")
    if emitter is not None:
        hub.emitter = emitter
    return hub


def state_of(hub: SignalHub, calendar: dict[str, Any], threat_bundle: str,
             epochs: tuple[int, dict[str, int]] = (0, {})) -> SignalState:
    return SignalState(
        epochs=epochs,
        quarantined=hub.quarantined(),
        risk_scores=hub.risk.all(),
        kill_switches=[(s, n, v) for (s, n), v in hub.kill.states.items()],
        calendar=calendar,
        threat_bundle=threat_bundle,
        observed=hub.observations(),
        posture=hub.posture_verdicts(),
        auth=hub.authentications(),
    )


def follow_state(hub: SignalHub, state: SignalState, *, calendar: dict[str, Any], threat_bundle: str,
                 origin: str = "replica") -> tuple[dict[str, Any], str]:
    """Bring a live hub to ``state`` (what another control plane saved) through the hub's own setters, so
    that every difference moves its epochs and is pushed like any other change; what is already equal is
    left alone (a duplicate or replayed snapshot changes nothing). Returns the calendar and threat bundle
    the hub now holds (they are kept beside it, in the plane's :class:`SignalBook`)."""
    current = hub.quarantined()
    for principal in current.keys() - state.quarantined.keys():
        hub.release(principal, origin=origin)
    for principal, reason in state.quarantined.items():
        if current.get(principal) != reason:
            hub.quarantine(principal, reason=reason, origin=origin)
    scores = hub.risk.all()
    for principal, score in state.risk_scores.items():
        if scores.get(principal) != score:
            hub.set_risk_score(principal, score, origin=origin)
    for principal in scores.keys() - state.risk_scores.keys():
        hub.set_risk_score(principal, 0, origin=origin)
    switches = {(s, n): v for s, n, v in state.kill_switches}
    for scope, name in list(hub.kill.states):
        if (scope, name) not in switches:
            hub.set_kill_switch(scope, name, ACTIVE, origin=origin)
    for (scope, name), value in switches.items():
        if hub.kill.states.get((scope, name)) != value:
            hub.set_kill_switch(scope, name, value, origin=origin)
    if state.calendar != calendar:
        hub.set_calendar(MarketCalendar.from_dict(state.calendar), origin=origin)
        calendar = dict(state.calendar)
    if state.threat_bundle != threat_bundle:
        if state.threat_bundle:
            hub.load_threat_intel(state.threat_bundle, origin=origin)
        threat_bundle = state.threat_bundle
    seen = hub.observations()
    for principal, observed in state.observed.items():
        mine = seen.get(principal, {})
        for key, field in (("fingerprints", "fingerprint"), ("code_digests", "code_digest"), ("addresses", "address")):
            for value in set(observed.get(key, ())) - set(mine.get(key, ())):
                hub.observe(principal, origin=origin, **{field: value})
    verdicts = hub.posture_verdicts()
    for host, verdict in state.posture.items():
        if verdicts.get(host) != verdict:
            hub.restore_posture(host, verdict)
    people = hub.authentications()
    for user, auth in state.auth.items():
        if people.get(user) != auth:
            hub.record_authentication(user, mfa=bool(auth.get("mfa")), step_up_at=auth.get("step_up_at"),
                                      device_host=auth.get("device_host"), origin=origin)
    return calendar, threat_bundle
