"""Alerts: what a detector says about a principal, with the audit records that prove it.

An :class:`Alert` is immutable. ``first_seen`` is the event time of the first
malicious attempt the detector saw (so that time to detect is
``detected_at - first_seen``); ``evidence`` links back to the audit log by event
id and by ``(source, seq)``, which is how the audit log itself is addressed.
"""

from __future__ import annotations

import os

import msgspec

from trustfabric.audit.events import AuditEventV1


class Severity:
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    ORDER = {LOW: 0, MEDIUM: 1, HIGH: 2, CRITICAL: 3}


class Category:
    """Alert categories (dotted; response rules match them by prefix)."""

    CROSS_SEGMENT = "lateral.cross_segment"
    HANDSHAKE_NO_BUSINESS = "lateral.handshake_no_business"
    CROSS_TRUST_DOMAIN = "lateral.cross_trust_domain"  # a certificate of another trust domain (or unknown CA)
    NEVER_GRANTED = "lateral.never_granted"
    DENIAL_BURST = "anomaly.denial_burst"
    BEHAVIOUR = "anomaly.behaviour"
    INDICATOR_MATCH = "intel.indicator_match"
    ATTESTATION_REFUSED = "supply_chain.attestation_refused"
    INSIDER_PROTECTED = "insider.protected_access"
    ORDER_FLOOD = "abuse.order_flood"
    MANUAL = "manual.operator"
    DETECTOR_FAILURE = "health.detector_failure"  # a detector raised: that event went partly unexamined


class EvidenceLink(msgspec.Struct, frozen=True, array_like=True):
    """One audit record: its id and its address in its source's sequence."""

    event_id: str
    source: str
    seq: int

    @classmethod
    def of(cls, event: AuditEventV1) -> "EvidenceLink":
        return cls(event.event_id, event.source, event.seq)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    severity: str
    confidence: float  # 0..1
    principal: str
    category: str
    detector: str
    evidence: tuple[EvidenceLink, ...]
    first_seen: float  # Unix seconds: the first malicious attempt's event time
    detected_at: float  # Unix seconds: when the detector raised it
    action: str = ""
    resource: str = ""
    summary: str = ""

    @property
    def ttd_ms(self) -> float:
        """Time to detect: first malicious attempt -> alert, in milliseconds (never negative)."""
        return max(0.0, (self.detected_at - self.first_seen) * 1000.0)


def new_alert_id() -> str:
    return "al-" + os.urandom(8).hex()


def event_time(event: AuditEventV1) -> float:
    """When the recorded thing happened, in Unix seconds.

    Enforcement points buffer decisions and emit them at flush time; they keep the
    moment of the decision in ``detail["decided_at"]``, which is the time that
    counts for detection. Otherwise the event's own timestamp.
    """
    detail = event.detail
    if detail:
        decided = detail.get("decided_at")
        if isinstance(decided, (int, float)) and decided > 0:
            return float(decided)
    return event.time_ns / 1e9
