"""Containment: quarantine a principal everywhere, measure it, and release it under MFA.

:meth:`Containment.quarantine` does, in this order, and never stops half-way
because one step failed (each failure is kept as a reason code on the incident):

1. revoke the principal's certificates by SPIFFE ID (:class:`Revoker`);
2. mark it quarantined in the policy engine (:class:`PolicyControl`), which bumps
   its epochs and publishes invalidations (``reason="quarantine..."``), so every
   enforcement point re-decides - and refuses - before the next message;
3. close its sessions at every enforcement point (:class:`SessionCloser`, when
   the invalidation does not already do it).

Each registered enforcement point then confirms refusal through
:meth:`Containment.acknowledge` (a callback). Time to contain is measured from the
alert to the last confirmation; when it is complete a ``Kind.CONTAINMENT`` audit
event carries ``ttd_ms`` and ``ttc_ms``. Points that have not confirmed within
``ack_timeout_s`` are reported by :meth:`check_overdue` (contained: no).

:meth:`release` is for a ``security_officer`` whose step-up MFA is fresh; the
facts come in as plain data (:class:`OfficerFacts`, filled from
``trustfabric.identity.users``). Anything else is a typed
:class:`~trustfabric.response.errors.ReleaseRefused`, logged as a refused
``Kind.RELEASE``. A released principal gets fresh decisions (new epochs) and may
attest again for a new certificate; its old certificates stay revoked.

No lock is held while a protocol is called, so confirmations may arrive from
any thread, or synchronously from inside ``set_quarantined``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import msgspec

from trustfabric.audit.events import Emitter, Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.response import errors as E
from trustfabric.response.alerts import Alert
from trustfabric.response.baseline import RiskSink
from trustfabric.response.errors import ReleaseRefused
from trustfabric.response.floor_map import is_workload
from trustfabric.response.incidents import Incident, IncidentStore, MemoryIncidentStore, new_incident_id

SECURITY_OFFICER = "security_officer"
DEFAULT_STEP_UP_MAX_AGE_S = 300.0
MAX_CLOCK_SKEW_S = 30.0
QUARANTINE_REASON = "quarantine.response"
RELEASE_REASON = "release.officer"
RISK_SOURCE = "response.containment"


class Revoker(Protocol):
    """The identity plane's revocation (``trustfabric.identity.revocation``)."""

    def revoke_spiffe_id(self, spiffe_id: str, reason: str) -> object:
        """Refuse every certificate naming ``spiffe_id`` from now on (whatever its serial)."""
        ...

    def release_spiffe_id(self, spiffe_id: str, reason: str) -> object:
        """Lift that refusal (old certificates' serials may stay revoked)."""
        ...


class PolicyControl(Protocol):
    """The policy administrator: quarantine flag per principal (bumps epochs, publishes invalidations)."""

    def set_quarantined(self, principal: str, quarantined: bool) -> None: ...


class SessionCloser(Protocol):
    def close_sessions(self, principal: str, reason: str) -> int: ...


class OfficerFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Who asks for a release, as the identity plane's users module knows them."""

    name: str
    roles: tuple[str, ...] = ()
    step_up_at: float | None = None  # Unix seconds of the last successful step-up MFA
    mfa_method: str = "totp"


@dataclass
class _Open:
    incident: Incident
    started: float  # ttc clock starts here (the first alert's detected_at, or the manual request)
    pending: set[str]
    acked_at: float = 0.0
    steps_done: bool = False
    done_at: float = 0.0
    errors: list[str] = field(default_factory=list)
    reported: bool = False


class Containment:
    """The containment orchestrator; one per control plane."""

    def __init__(self, revoker: Revoker | None, policy: PolicyControl | None, *,
                 closer: SessionCloser | None = None, risk: RiskSink | None = None,
                 emitter: Emitter | None = None, clock: Clock = SYSTEM_CLOCK,
                 store: IncidentStore | None = None, ack_timeout_s: float = 5.0,
                 step_up_max_age_s: float = DEFAULT_STEP_UP_MAX_AGE_S) -> None:
        self.revoker = revoker
        self.policy = policy
        self.closer = closer
        self.risk = risk
        self.emitter = emitter
        self.clock = clock
        self.store: IncidentStore = store if store is not None else MemoryIncidentStore()
        self.ack_timeout_s = ack_timeout_s
        self.step_up_max_age_s = step_up_max_age_s
        self._points: set[str] = set()
        self._open: dict[str, _Open] = {}  # principal -> open incident
        self._lock = threading.RLock()
        self.audit_errors = 0
        self.stray_acks = 0

    # ------------------------------------------------------------------ registry
    def register_point(self, point_id: str) -> None:
        """An enforcement point that must confirm refusal for an incident to count as contained."""
        with self._lock:
            self._points.add(point_id)

    def unregister_point(self, point_id: str) -> None:
        with self._lock:
            self._points.discard(point_id)
            for state in self._open.values():
                state.pending.discard(point_id)
            principals = list(self._open)
        for principal in principals:
            self._maybe_complete(principal)

    @property
    def points(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._points)

    def is_quarantined(self, principal: str) -> bool:
        with self._lock:
            return principal in self._open

    def open_incident(self, principal: str) -> Incident | None:
        with self._lock:
            state = self._open.get(principal)
            return state.incident if state is not None else None

    def restore_open_incidents(self) -> int:
        """Take over the store's unreleased incidents (a restarted control plane, the CLI)."""
        restored = 0
        for incident in self.store.incidents(open_only=True, limit=100_000):
            with self._lock:
                if incident.principal in self._open:
                    continue
                state = _Open(incident, incident.opened_at, set(incident.pending_points), steps_done=True,
                              reported=True)
                self._open[incident.principal] = state
                restored += 1
        return restored

    # ------------------------------------------------------------------ quarantine
    def quarantine(self, principal: str, alerts: Sequence[Alert] = (), *, trigger: str = "auto") -> Incident:
        """Contain ``principal``; idempotent (a second call adds its alerts to the open incident)."""
        if not principal:
            raise E.ContainmentError("no principal to quarantine", reason="containment.no_principal")
        now = self.clock.now()
        with self._lock:
            state = self._open.get(principal)
            if state is not None:
                if alerts:
                    state.incident = msgspec.structs.replace(
                        state.incident, alerts=state.incident.alerts + tuple(alerts))
                    self._save(state.incident)
                return state.incident
            first = min(alerts, key=lambda a: a.detected_at) if alerts else None
            ttd = None
            if first is not None:
                ttd = max(0.0, (first.detected_at - min(a.first_seen for a in alerts)) * 1000.0)
            incident = Incident(incident_id=new_incident_id(), principal=principal, alerts=tuple(alerts),
                                opened_at=first.detected_at if first else now, ttd_ms=ttd,
                                pending_points=tuple(sorted(self._points)), trigger=trigger)
            state = _Open(incident, incident.opened_at, set(self._points))
            self._open[principal] = state
            self._save(incident)
        errors = self._run_steps(principal)
        with self._lock:
            state.errors.extend(errors)
            state.steps_done = True
            state.done_at = self.clock.now()
        self._maybe_complete(principal)
        with self._lock:
            return state.incident

    def _run_steps(self, principal: str) -> list[str]:
        errors: list[str] = []

        def step(name: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - keep containing; the failure is recorded
                errors.append(f"{name}:{getattr(exc, 'reason', type(exc).__name__)}")

        revoker, policy, closer = self.revoker, self.policy, self.closer
        if not is_workload(principal):
            pass  # a person has no certificate: policy refusal and closed sessions contain them
        elif revoker is not None:
            step("revoke", lambda: revoker.revoke_spiffe_id(principal, QUARANTINE_REASON))
        else:
            errors.append("revoke:not_wired")
        if policy is not None:
            step("policy", lambda: policy.set_quarantined(principal, True))
        else:
            errors.append("policy:not_wired")
        if closer is not None:
            step("close", lambda: closer.close_sessions(principal, QUARANTINE_REASON))
        return errors

    def acknowledge(self, principal: str, point_id: str, at: float | None = None) -> None:
        """Callback of an enforcement point: it now refuses ``principal`` (sessions closed, handshakes refused)."""
        when = self.clock.now() if at is None else at
        with self._lock:
            state = self._open.get(principal)
            if state is None or point_id not in state.pending:
                self.stray_acks += 1
                return
            state.pending.discard(point_id)
            state.acked_at = max(state.acked_at, when)
        self._maybe_complete(principal)

    def _maybe_complete(self, principal: str) -> None:
        with self._lock:
            state = self._open.get(principal)
            if state is None or state.reported or not state.steps_done or state.pending:
                return
            refused_somewhere = bool(state.incident.pending_points) or not any(
                e.startswith("policy:") for e in state.errors)
            if not refused_somewhere:
                incident = msgspec.structs.replace(state.incident, errors=tuple(state.errors), pending_points=())
                state.incident = incident
                self._save(incident)
                return
            end = state.acked_at if state.incident.pending_points else state.done_at
            ttc = max(0.0, (end - state.started) * 1000.0)
            incident = msgspec.structs.replace(state.incident, ttc_ms=ttc, contained=True, pending_points=(),
                                               errors=tuple(state.errors))
            state.incident = incident
            state.reported = True
            self._save(incident)
        self._emit(Kind.CONTAINMENT, principal=principal, decision="deny", reason=QUARANTINE_REASON,
                   detail={"incident": incident.incident_id, "ttd_ms": incident.ttd_ms, "ttc_ms": ttc,
                           "contained": True, "errors": list(incident.errors), "trigger": incident.trigger,
                           "alerts": [a.alert_id for a in incident.alerts]})

    def check_overdue(self, now: float | None = None) -> list[Incident]:
        """Incidents whose points did not all confirm within ``ack_timeout_s``: logged, contained no."""
        now = self.clock.now() if now is None else now
        overdue: list[Incident] = []
        with self._lock:
            for state in self._open.values():
                if state.reported or now - state.started < self.ack_timeout_s:
                    continue
                state.reported = True
                incident = msgspec.structs.replace(state.incident, contained=False,
                                                   pending_points=tuple(sorted(state.pending)),
                                                   errors=tuple(state.errors))
                state.incident = incident
                self._save(incident)
                overdue.append(incident)
        for incident in overdue:
            self._emit(Kind.CONTAINMENT, principal=incident.principal, decision="deny",
                       reason="containment.unconfirmed",
                       detail={"incident": incident.incident_id, "ttd_ms": incident.ttd_ms, "ttc_ms": None,
                               "contained": False, "pending_points": list(incident.pending_points),
                               "errors": list(incident.errors)})
        return overdue

    # ------------------------------------------------------------------ release
    def check_officer(self, officer: OfficerFacts, now: float) -> None:
        """Raise :class:`ReleaseRefused` unless ``officer`` may release now."""
        if SECURITY_OFFICER not in officer.roles:
            raise ReleaseRefused(f"{officer.name} is not a {SECURITY_OFFICER}", reason=E.RELEASE_NOT_OFFICER)
        at = officer.step_up_at
        if at is None or at <= 0:
            raise ReleaseRefused(f"{officer.name}: no step-up MFA", reason=E.RELEASE_STEP_UP_REQUIRED)
        age = now - at
        if age > self.step_up_max_age_s or age < -MAX_CLOCK_SKEW_S:
            raise ReleaseRefused(f"{officer.name}: step-up MFA {age:.0f} s old (max {self.step_up_max_age_s:.0f} s)",
                                 reason=E.RELEASE_STEP_UP_STALE)

    def release(self, principal: str, officer: OfficerFacts, now: float | None = None) -> Incident:
        """Lift the quarantine of ``principal``; refused unless a fresh-MFA security officer asks."""
        now = self.clock.now() if now is None else now
        try:
            self.check_officer(officer, now)
            with self._lock:
                state = self._open.get(principal)
            if state is None:
                raise ReleaseRefused(f"{principal} is not quarantined", reason=E.RELEASE_NOT_QUARANTINED)
        except ReleaseRefused as exc:
            self._emit(Kind.RELEASE, principal=principal, decision="deny", reason=exc.reason,
                       detail={"officer": officer.name})
            raise
        if self.policy is None:
            raise E.ContainmentError("no policy control wired: cannot release", reason="containment.not_wired")
        if self.revoker is not None and is_workload(principal):
            self.revoker.release_spiffe_id(principal, RELEASE_REASON)  # raises: stays refused
        self.policy.set_quarantined(principal, False)  # raises: stays quarantined (fail closed)
        if self.risk is not None:
            try:
                self.risk.set_risk(principal, 0.0, RISK_SOURCE)
            except Exception:  # noqa: BLE001 - the quarantine is lifted; a stale risk only tightens
                pass
        with self._lock:
            state = self._open.pop(principal, None)
            base = state.incident if state is not None else None
        if base is None:  # released concurrently
            raise ReleaseRefused(f"{principal} is not quarantined", reason=E.RELEASE_NOT_QUARANTINED)
        incident = msgspec.structs.replace(base, released=True, released_by=officer.name, released_at=now)
        self._save(incident)
        self._emit(Kind.RELEASE, principal=principal, decision="allow", reason=RELEASE_REASON,
                   detail={"officer": officer.name, "incident": incident.incident_id,
                           "step_up_age_s": round(now - (officer.step_up_at or now), 3)})
        return incident

    # ------------------------------------------------------------------ plumbing
    def _save(self, incident: Incident) -> None:
        try:
            self.store.put(incident)
        except Exception:  # noqa: BLE001 - the containment itself must not fail on its bookkeeping
            self.audit_errors += 1

    def _emit(self, kind: str, **fields) -> None:
        if self.emitter is None:
            return
        try:
            self.emitter.emit(kind, **fields)
        except Exception:  # noqa: BLE001
            self.audit_errors += 1
