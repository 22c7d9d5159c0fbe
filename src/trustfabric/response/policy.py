"""The response policy: what to do about an alert, as data.

Rules are tried in order; the first whose category prefix matches and whose
confidence and severity floors are met decides the action:

* ``quarantine`` - revoke the principal's certificates, mark it quarantined in
  the policy engine (epochs bump, invalidations go out), close its sessions
  everywhere; a security officer with fresh step-up MFA releases it;
* ``tighten`` - raise the principal's behavioural risk in the policy engine (and,
  when an obligation tightener is wired, cap its rate and notional);
* ``alert`` - record and emit the alert only.

No rule matching means ``alert``. The default rules quarantine high-confidence
lateral movement, indicator matches and attestation refusals, and tighten on
medium-confidence anomalies; a person (``user:<name>``) reaching protected data
or actions outside their role's grants (category ``insider``) is quarantined like a
workload - decisions deny, sessions closed, session opens refused everywhere. A
runaway order flood (category ``abuse``: a hundred rate refusals within a second) is
quarantined too: the rate obligation already refuses the excess; containment stops it.
A detector that fails on an event (category ``health``) is only an alert: the blind
spot is shown to people, and no principal is punished for our own fault.
Load other rules from TOML/JSON with :meth:`ResponsePolicy.from_mapping`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from trustfabric.policy.decision import Obligations
from trustfabric.response.alerts import Alert, Severity
from trustfabric.response.errors import ResponseConfigError

QUARANTINE = "quarantine"
TIGHTEN = "tighten"
ALERT_ONLY = "alert"
ACTIONS = (QUARANTINE, TIGHTEN, ALERT_ONLY)


class ResponseRule(msgspec.Struct, frozen=True, kw_only=True):
    category: str  # a category or a dotted prefix ("lateral" matches "lateral.cross_segment"); "*" = any
    action: str
    min_confidence: float = 0.0
    min_severity: str = Severity.LOW

    def matches(self, alert: Alert) -> bool:
        cat = self.category
        if cat != "*" and alert.category != cat and not alert.category.startswith(cat + "."):
            return False
        if alert.confidence < self.min_confidence:
            return False
        return Severity.ORDER.get(alert.severity, 0) >= Severity.ORDER[self.min_severity]


class Verdict(msgspec.Struct, frozen=True):
    action: str
    rule: int  # index of the deciding rule; -1 = no rule matched
    alert_id: str


DEFAULT_RULES: tuple[ResponseRule, ...] = (
    ResponseRule(category="intel", action=QUARANTINE, min_confidence=0.8),
    ResponseRule(category="supply_chain", action=QUARANTINE, min_confidence=0.8),
    ResponseRule(category="lateral", action=QUARANTINE, min_confidence=0.8, min_severity=Severity.HIGH),
    ResponseRule(category="insider", action=QUARANTINE, min_confidence=0.8, min_severity=Severity.HIGH),
    ResponseRule(category="abuse", action=QUARANTINE, min_confidence=0.8, min_severity=Severity.HIGH),
    ResponseRule(category="manual", action=QUARANTINE),
    ResponseRule(category="health", action=ALERT_ONLY),  # our own fault (a detector failed): tell people only
    ResponseRule(category="*", action=TIGHTEN, min_confidence=0.5, min_severity=Severity.MEDIUM),
    ResponseRule(category="*", action=ALERT_ONLY),
)


class ResponsePolicy(msgspec.Struct, frozen=True, kw_only=True):
    rules: tuple[ResponseRule, ...] = DEFAULT_RULES
    tighten_risk: float = 80.0  # risk score pushed to the policy engine on a tighten
    tighten_obligations: Obligations = Obligations(max_rate=5.0, max_notional=50_000.0)
    anomaly_alert_score: float = 60.0  # baseline score that raises an anomaly alert

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if rule.action not in ACTIONS:
                raise ResponseConfigError(f"rule {i}: unknown action {rule.action!r}")
            if rule.min_severity not in Severity.ORDER:
                raise ResponseConfigError(f"rule {i}: unknown severity {rule.min_severity!r}")
            if not 0.0 <= rule.min_confidence <= 1.0:
                raise ResponseConfigError(f"rule {i}: min_confidence outside 0..1")

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> "ResponsePolicy":
        """From parsed TOML/JSON; a bad document is a :class:`ResponseConfigError`."""
        try:
            return msgspec.convert(raw, cls)
        except (msgspec.ValidationError, TypeError) as exc:
            raise ResponseConfigError(f"response policy: {exc}") from exc

    def decide(self, alert: Alert) -> Verdict:
        for i, rule in enumerate(self.rules):
            if rule.matches(alert):
                return Verdict(rule.action, i, alert.alert_id)
        return Verdict(ALERT_ONLY, -1, alert.alert_id)
