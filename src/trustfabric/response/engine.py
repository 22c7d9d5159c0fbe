"""The response engine: audit events in, alerts and containment out.

:class:`ResponseEngine` consumes the audit stream one event at a time
(:meth:`observe`): every detector sees the event, the behavioural baseline learns
from it (and may raise an anomaly alert), and each alert goes through the
response policy - quarantine, tighten or alert only - at once, on the event that
completed it. Every alert is stored and logged as a ``Kind.ALERT`` audit event
carrying ``ttd_ms``.

Where the baselines learn from: by default every decision event :meth:`observe` sees
(on a floor, the denials services report). Once the floor's whole decision stream is
attached - the audit collector hands over every decision record it shipped, allowed
and denied, through :meth:`learn` - the baselines learn from that stream alone and
:meth:`observe` feeds only the detectors: each decision is learned once, and the
baselines learn normal traffic, not just refusals. Call :meth:`learn` from the thread
that calls :meth:`observe` (the control plane's event loop): its effects - risk pushed
to the policy engine, containment - go out the same way.

Repeat alerts of the same (principal, category, resource) within
``suppress_s`` are folded (counted, not re-raised), and the engine ignores its
own output kinds (alert, containment, release) if they are fed back.

The risk a *tighten* pushes decays (:mod:`~trustfabric.response.risk_decay`): held
``hold_s`` after the last such alert, then halved every ``half_life_s``, combined
with the baseline's own score; :meth:`decay_risk` republishes it (the engine calls
it on its events at most every ``tick_every_s``; the control plane on its reports),
so an honest algo whose orders pre-trade risk rejected for a while returns to
normal without a person. A quarantine never decays: only a release lifts it. Memory is
bounded by the detectors' and baseline's LRUs and the suppression table's size.
One lock makes :meth:`observe` safe to call from many threads.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Protocol

from trustfabric.audit.events import AuditEventV1, Emitter, Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.policy.decision import Obligations
from trustfabric.response.alerts import Alert, Category, EvidenceLink, Severity, event_time, new_alert_id
from trustfabric.response.baseline import BaselineConfig, BehaviourBaselines, RiskSink
from trustfabric.response.containment import Containment, OfficerFacts
from trustfabric.response.detectors import BoundedMap, Detector, DetectorConfig, default_detectors
from trustfabric.response.floor_map import FloorMap
from trustfabric.response.incidents import Incident, IncidentStore
from trustfabric.response.policy import ALERT_ONLY, QUARANTINE, TIGHTEN, ResponsePolicy
from trustfabric.response.risk_decay import DecayingRisk, RiskDecayConfig

IGNORED_KINDS = frozenset({Kind.ALERT, Kind.CONTAINMENT, Kind.RELEASE})
ALERT_RISK_SOURCE = "response.alert"


class ObligationTightener(Protocol):
    """Optional: the policy administrator caps a principal's obligations (rate, notional)."""

    def tighten(self, principal: str, obligations: Obligations, reason: str) -> None: ...


class ResponseEngine:
    def __init__(self, floor: FloorMap, containment: Containment, *,
                 policy: ResponsePolicy | None = None, detectors: Iterable[Detector] | None = None,
                 detector_config: DetectorConfig = DetectorConfig(),
                 baselines: BehaviourBaselines | None = None, risk: RiskSink | None = None,
                 tightener: ObligationTightener | None = None, emitter: Emitter | None = None,
                 clock: Clock = SYSTEM_CLOCK, store: IncidentStore | None = None,
                 suppress_s: float = 60.0, max_suppressed: int = 100_000,
                 risk_decay: RiskDecayConfig = RiskDecayConfig()) -> None:
        self.floor = floor
        self.containment = containment
        self.policy = policy or ResponsePolicy()
        self.detectors = list(detectors) if detectors is not None else default_detectors(floor, detector_config)
        # the alert part of the risk decays; the baseline's part passes through; the sink gets the max
        self.risk = DecayingRisk(risk, clock, risk_decay) if risk is not None else None
        self.baselines = (baselines if baselines is not None
                          else BehaviourBaselines(BaselineConfig(), self.risk))
        self.tightener = tightener
        self.emitter = emitter
        self.clock = clock
        self.store: IncidentStore = store if store is not None else containment.store
        self.suppress_s = suppress_s
        self._recent: BoundedMap[tuple[str, str, str], float] = BoundedMap(max_suppressed)
        self._released_at: BoundedMap[str, float] = BoundedMap(max_suppressed)  # folding restarts at release
        self._lock = threading.Lock()
        self.events_seen = 0
        self.alerts_raised = 0
        self.alerts_suppressed = 0
        self.detector_errors = 0
        self.audit_errors = 0
        self.actions = {QUARANTINE: 0, TIGHTEN: 0, ALERT_ONLY: 0}
        self._anomalous: set[str] = set()
        self.decision_stream = False  # True once the baselines learn from learn() alone
        self.decisions_learned = 0

    def observe(self, event: AuditEventV1) -> list[Alert]:
        """Feed one audit event; returns the alerts it raised (already acted upon)."""
        if event.kind in IGNORED_KINDS:
            return []
        self.decay_risk()
        with self._lock:
            self.events_seen += 1
            at = self.clock.now()
            raised: list[Alert] = []
            for detector in self.detectors:
                try:
                    raised.extend(detector.observe(event, at))
                except Exception as exc:  # noqa: BLE001 - one broken detector must not blind the others
                    self.detector_errors += 1
                    raised.append(self._detector_failure(detector, event, at, exc))
            anomaly = None if self.decision_stream else self._anomaly(event, at)
            if anomaly is not None:
                raised.append(anomaly)
            fresh = [a for a in raised if self._fresh(a)]
        for alert in fresh:
            self._act(alert)
        return fresh

    def attach_decision_stream(self) -> None:
        """From now on the baselines learn from :meth:`learn` only (the floor's every decision, once)."""
        self.decision_stream = True

    def learn(self, events: Iterable[AuditEventV1]) -> list[Alert]:
        """The baselines learn from decision records - allowed and denied, each once, in time order.

        The detectors are not fed here (they see the denials through :meth:`observe`). An anomaly
        alert is raised and acted upon as in :meth:`observe`; returns the alerts raised. Attaches
        the decision stream (:meth:`attach_decision_stream`) if it was not yet.
        """
        self.decision_stream = True
        self.decay_risk()
        with self._lock:
            at = self.clock.now()
            fresh: list[Alert] = []
            for event in events:
                if event.kind != Kind.DECISION:
                    continue
                self.decisions_learned += 1
                anomaly = self._anomaly(event, at)
                if anomaly is not None and self._fresh(anomaly):
                    fresh.append(anomaly)
        for alert in fresh:
            self._act(alert)
        return fresh

    def observe_many(self, events: Iterable[AuditEventV1]) -> int:
        n = 0
        for event in events:
            n += len(self.observe(event))
        return n

    def __call__(self, event: AuditEventV1) -> None:  # usable as an audit-stream subscriber
        self.observe(event)

    append = __call__  # and as an EventSink

    # ------------------------------------------------------------------ internals
    def _anomaly(self, event: AuditEventV1, at: float) -> Alert | None:
        try:
            score = self.baselines.observe(event)
        except Exception:  # noqa: BLE001
            self.detector_errors += 1
            return None
        if score is None:
            return None
        principal = event.principal
        threshold = self.policy.anomaly_alert_score
        if score < threshold:
            if score < threshold * 0.5:
                self._anomalous.discard(principal)  # hysteresis: re-arm once well below
            return None
        if principal in self._anomalous:
            return None
        self._anomalous.add(principal)
        components = self.baselines.components(principal)
        return Alert(alert_id=new_alert_id(), severity=Severity.MEDIUM if score < 85 else Severity.HIGH,
                     confidence=round(min(1.0, score / 100.0), 3), principal=principal,
                     category=Category.BEHAVIOUR, detector="baseline", evidence=(EvidenceLink.of(event),),
                     first_seen=event_time(event), detected_at=at, action=event.action,
                     resource=event.resource,
                     summary="anomaly score {:.0f} ({})".format(score, ", ".join(sorted(components)) or "-"))

    def _detector_failure(self, detector: Any, event: AuditEventV1, at: float, exc: Exception) -> Alert:
        """An alert that a detector failed on this event: people see the blind spot (alert only)."""
        name = getattr(detector, "name", type(detector).__name__)
        return Alert(alert_id=new_alert_id(), severity=Severity.MEDIUM, confidence=1.0, principal=event.principal,
                     category=Category.DETECTOR_FAILURE, detector=str(name), evidence=(EvidenceLink.of(event),),
                     first_seen=event_time(event), detected_at=at, action=event.action, resource=event.resource,
                     summary=f"detector {name} failed on this event: {type(exc).__name__}")

    def _fresh(self, alert: Alert) -> bool:
        key = (alert.principal, alert.category, alert.resource)
        last = self._recent.get(key)
        released = self._released_at.get(alert.principal)
        if last is not None and released is not None and last <= released:
            last = None  # alerts before a release do not fold a re-offence after it
        if last is not None and alert.detected_at - last < self.suppress_s:
            self.alerts_suppressed += 1
            return False
        self._recent.put(key, alert.detected_at)
        self.alerts_raised += 1
        return True

    def _act(self, alert: Alert) -> None:
        verdict = self.policy.decide(alert)
        action = verdict.action
        if action != QUARANTINE and self.containment.is_quarantined(alert.principal):
            action = QUARANTINE  # already contained: the alert joins the open incident
        with self._lock:
            self.actions[action] += 1
        self._record_alert(alert, action)
        if action == QUARANTINE:
            self.containment.quarantine(alert.principal, (alert,), trigger="auto")
        elif action == TIGHTEN:
            if self.risk is not None:
                try:
                    self.risk.set_risk(alert.principal, self.policy.tighten_risk, ALERT_RISK_SOURCE)
                except Exception:  # noqa: BLE001
                    self.audit_errors += 1
            if self.tightener is not None:
                try:
                    self.tightener.tighten(alert.principal, self.policy.tighten_obligations, alert.category)
                except Exception:  # noqa: BLE001
                    self.audit_errors += 1

    def _record_alert(self, alert: Alert, action: str) -> None:
        """Keep the alert and its response in the store (a failure is counted) and emit it to the audit log."""
        try:
            self.store.add_alert(alert, action)
        except Exception:  # noqa: BLE001
            self.audit_errors += 1
        self._emit_alert(alert, action)

    def _emit_alert(self, alert: Alert, action: str) -> None:
        if self.emitter is None:
            return
        try:
            self.emitter.emit(
                Kind.ALERT, principal=alert.principal, action=alert.action, resource=alert.resource,
                reason=alert.category,
                detail={"alert_id": alert.alert_id, "severity": alert.severity, "confidence": alert.confidence,
                        "detector": alert.detector, "response": action, "ttd_ms": alert.ttd_ms,
                        "first_seen": alert.first_seen, "detected_at": alert.detected_at,
                        "summary": alert.summary,
                        "evidence": [[e.event_id, e.source, e.seq] for e in alert.evidence[:32]]})
        except Exception:  # noqa: BLE001
            self.audit_errors += 1

    def decay_risk(self, now: float | None = None, force: bool = False) -> list[tuple[str, float]]:
        """Republish decayed alert risk (at most every ``tick_every_s`` unless ``force``); returns what moved."""
        if self.risk is None:
            return []
        now = self.clock.now() if now is None else now
        if not force and not self.risk.due(now):
            return []
        return self.risk.tick(now)

    def release(self, principal: str, officer: OfficerFacts, now: float | None = None) -> Incident:
        """Release through :meth:`Containment.release` (a fresh-MFA security officer), then restart
        alert folding for the principal: a re-offence after the release raises - and contains - afresh."""
        incident = self.containment.release(principal, officer, now)
        if self.risk is not None:
            self.risk.forget(principal)
        with self._lock:
            self._released_at.put(principal, self.clock.now() if now is None else now)
            self._anomalous.discard(principal)
        return incident

    def quarantine_manually(self, principal: str, operator: str, reason: str = "") -> Alert:
        """An operator's quarantine: an alert of category ``manual.operator``, then containment."""
        now = self.clock.now()
        alert = Alert(alert_id=new_alert_id(), severity=Severity.HIGH, confidence=1.0, principal=principal,
                      category=Category.MANUAL, detector=f"operator:{operator}", evidence=(), first_seen=now,
                      detected_at=now, summary=reason or "manual quarantine")
        with self._lock:
            self.alerts_raised += 1
            self.actions[QUARANTINE] += 1
        self._record_alert(alert, QUARANTINE)
        self.containment.quarantine(principal, (alert,), trigger=f"manual:{operator}")
        return alert

    def stats(self) -> dict[str, object]:
        return {"events": self.events_seen, "alerts": self.alerts_raised, "suppressed": self.alerts_suppressed,
                "actions": dict(self.actions), "detector_errors": self.detector_errors,
                "audit_errors": self.audit_errors, "principals": len(self.baselines),
                "decisions_learned": self.decisions_learned}
