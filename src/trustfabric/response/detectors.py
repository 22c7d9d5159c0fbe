"""Lateral-movement and compromise detectors over the audit event stream.

Each detector looks at one :class:`~trustfabric.audit.events.AuditEventV1` at a
time (``observe(event, at)``, ``at`` = the detection moment from the caller's
clock) and returns the alerts that event completes - at once, on that event, never
after a batch. They are pure: their state is bounded per principal (an LRU of
principals, fixed-size windows) and they do no I/O.

Detectors:

* :class:`CrossSegmentDetector` - a denied attempt by a principal of one segment on
  a resource of another segment that it was never granted (an algo reaching for
  settlement or a venue is critical).
* :class:`HandshakeDetector` - a refused handshake / session of a workload at a
  service it has no declared flow to; and every handshake refused for a
  certificate of another trust domain (``cert.wrong_trust_domain``): with the
  SPIFFE ID it presented when the listener could read it (a sibling domain's
  certificate, refused by the transport's identity step: high, critical at a
  sensitive service), else - a chain of a CA nobody here knows, refused inside
  TLS - keyed by the source address (low: alert only, there is no principal to
  contain; the alert's resource is ``peer:<host>``, so folding is per source).
  Both name the source (``host:port``) in the summary.
* :class:`NeverGrantedDetector` - the first use (allowed or denied) of an
  (action, resource) pair the principal was never granted; an *allowed* one means
  policy drift and is critical.
* :class:`DenialBurstDetector` - N denials within T milliseconds.
* :class:`IndicatorDetector` - a threat-intel indicator matched a principal.
* :class:`AttestationDetector` - a certificate refused for attestation reasons
  (``attest.*``: an unpromoted code digest, a tampered build, a rogue deployment).
* :class:`FloodDetector` - ``flood_denials`` rate refusals (``enforcement.rate``) of one
  principal within ``flood_window_ms``: a runaway or hijacked order loop, far past
  what an honest burst against its rate obligation produces.
* :class:`InsiderDetector` - a person (``user:<name>``) asking for an action on a
  protected resource (client orders, positions, settlement, treasury, venue or
  routing order flow) that their roles were never granted: a trader reading client
  orders or booking into settlement. Not a slip of the desk application - the
  application offers no such action - so it is a high-confidence insider alert.
  Refusals about limits or freshness (rate, notional, MFA step-up age) on a
  *granted* pair never count.

Thresholds and confidences are data (:class:`DetectorConfig`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

import msgspec

from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.response.alerts import (
    Alert,
    Category,
    EvidenceLink,
    Severity,
    event_time,
    new_alert_id,
)
from trustfabric.response.floor_map import (
    SERVICE_RESOURCE_PREFIX,
    FloorMap,
    is_person,
    is_workload,
    service_from_spiffe_id,
)

DENY = "deny"
ALLOW = "allow"

# Signal events that carry a threat-intel match: kind SIGNAL_CHANGED for a principal
# with one of these reasons, or the signal hub's per-principal
# ``detail={"signal": "threat_intel", "value": {"indicators": [...non-empty]}}``.
INDICATOR_REASONS = frozenset({"intel.indicator_match", "signal.indicator_match", "threat_intel.match"})
ATTESTATION_REASON_PREFIX = "attest."

# Denial reasons that are about limits or plumbing, not about reaching for
# something: they never count as lateral movement.
NON_LATERAL_REASONS = frozenset({
    "enforcement.rate", "enforcement.notional", "enforcement.symbol", "enforcement.token_expired",
    "enforcement.engine_unreachable", "enforcement.internal", "enforcement.no_session",
})


# Pre-trade risk's own verdicts (action ``risk.check``, reasons ``risk.credit_agent``,
# ``risk.price_collar``...) are business rules (SEC 15c3-5 limits) on orders the
# principal may send, not access attempts: a credit-limit rejection in normal trading
# is never lateral movement nor an insider's reach (it was once taken for a
# never-granted pair and quarantined an algo). A storm of them still counts as a burst.
BUSINESS_RULE_PREFIX = "risk."


def is_business_rule(event: AuditEventV1) -> bool:
    return event.action.startswith(BUSINESS_RULE_PREFIX) or event.reason.startswith(BUSINESS_RULE_PREFIX)


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Detector thresholds and confidences (load from TOML/JSON with msgspec.convert)."""

    cross_segment_sensitive_confidence: float = 0.97
    cross_segment_confidence: float = 0.9
    cross_segment_person_confidence: float = 0.6
    handshake_confidence: float = 0.9
    cross_trust_domain_confidence: float = 0.95  # a sibling domain's certificate, read and refused by name
    unknown_ca_confidence: float = 0.7  # a chain of an unknown CA: an attack or a misconfigured client
    unknown_ca_repeat_s: float = 60.0  # one unknown-CA alert per source address within this
    never_granted_denied_confidence: float = 0.85
    never_granted_allowed_confidence: float = 0.95
    never_granted_person_confidence: float = 0.5
    burst_denials: int = 20
    burst_window_ms: float = 1000.0
    burst_confidence: float = 0.6
    indicator_confidence: float = 0.99
    attestation_confidence: float = 0.95
    insider_confidence: float = 0.9
    flood_denials: int = 100
    flood_window_ms: float = 1000.0
    flood_confidence: float = 0.9
    max_principals: int = 100_000  # bound on per-principal state


class Detector(Protocol):
    name: str

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]: ...


K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """An LRU dict: at most ``capacity`` keys; the least recently touched goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


class PrincipalWindows:
    """The last ``count`` events of each principal (LRU-bounded); full once they span ``window_ms`` or less.

    :meth:`add` returns (first event time, evidence) when the window fills and empties it:
    the next report needs a fresh run of ``count`` events.
    """

    def __init__(self, count: int, window_ms: float, max_principals: int) -> None:
        self.count = max(2, count)
        self.window_ms = window_ms
        self._windows: BoundedMap[str, deque[tuple[float, EvidenceLink]]] = BoundedMap(max_principals)

    def add(self, event: AuditEventV1) -> tuple[float, list[EvidenceLink]] | None:
        window = self._windows.get(event.principal)
        if window is None:
            window = deque(maxlen=self.count)
            self._windows.put(event.principal, window)
        t = event_time(event)
        window.append((t, EvidenceLink.of(event)))
        first = window[0][0]
        if len(window) < self.count or (t - first) * 1000.0 > self.window_ms:
            return None
        evidence = [link for _, link in window]
        window.clear()
        return first, evidence

    def __len__(self) -> int:
        return len(self._windows)


def _alert(event: AuditEventV1, at: float, *, detector: str, category: str, severity: str,
           confidence: float, summary: str, evidence: Iterable[EvidenceLink] | None = None,
           first_seen: float | None = None, principal: str | None = None, resource: str | None = None) -> Alert:
    return Alert(
        alert_id=new_alert_id(), severity=severity, confidence=confidence,
        principal=event.principal if principal is None else principal, category=category,
        detector=detector,
        evidence=tuple(evidence) if evidence is not None else (EvidenceLink.of(event),),
        first_seen=event_time(event) if first_seen is None else first_seen,
        detected_at=at, action=event.action, resource=event.resource if resource is None else resource,
        summary=summary,
    )


def target_service(event: AuditEventV1) -> str:
    """The service an event happened at: ``svc/<name>`` resource, detail, or the PEP source."""
    if event.resource.startswith(SERVICE_RESOURCE_PREFIX):
        return event.resource[len(SERVICE_RESOURCE_PREFIX):]
    for key in ("service", "audience"):
        value = event.detail.get(key) if event.detail else None
        if isinstance(value, str) and value:
            return service_from_spiffe_id(value) or value
    source = event.source
    source = source.removeprefix("pep:")
    return service_from_spiffe_id(source) or source


class CrossSegmentDetector:
    name = "cross_segment"

    def __init__(self, floor: FloorMap, config: DetectorConfig = DetectorConfig()) -> None:
        self.floor = floor
        self.config = config

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.DECISION or event.decision != DENY or not event.principal:
            return []
        if event.reason in NON_LATERAL_REASONS or is_business_rule(event):
            return []
        if self.floor.granted(event.principal, event.action, event.resource):
            return []
        own = self.floor.segment_of_principal(event.principal)
        target = self.floor.segment_of_resource(event.resource)
        if not own or not target or own == target:
            return []
        c = self.config
        if not is_workload(event.principal):
            severity, confidence = Severity.MEDIUM, c.cross_segment_person_confidence
        elif self.floor.is_sensitive(target):
            severity, confidence = Severity.CRITICAL, c.cross_segment_sensitive_confidence
        else:
            severity, confidence = Severity.HIGH, c.cross_segment_confidence
        return [_alert(event, at, detector=self.name, category=Category.CROSS_SEGMENT, severity=severity,
                       confidence=confidence,
                       summary=f"{own} -> {target}: denied {event.action} on {event.resource}")]


WRONG_TRUST_DOMAIN = "cert.wrong_trust_domain"  # the transport's refusal of another domain's certificate


def peer_address(event: AuditEventV1) -> str:
    """The source address of a refused handshake (``host:port``), or ""."""
    value = event.detail.get("peer_address") if event.detail else None
    return value if isinstance(value, str) else ""


class HandshakeDetector:
    name = "handshake"

    def __init__(self, floor: FloorMap, config: DetectorConfig = DetectorConfig()) -> None:
        self.floor = floor
        self.config = config
        self._unknown_ca_seen: BoundedMap[str, float] = BoundedMap(config.max_principals)

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind == Kind.HANDSHAKE_REFUSED and event.reason == WRONG_TRUST_DOMAIN:
            return self._cross_trust_domain(event, at)
        if event.kind not in (Kind.HANDSHAKE_REFUSED, Kind.SESSION_REFUSED) or not event.principal:
            return []
        if not is_workload(event.principal):
            return []
        service = target_service(event)
        if not service or self.floor.may_connect(event.principal, service):
            return []  # it has business there: an expired token or a quarantine, not movement
        if service_from_spiffe_id(event.principal) == service:
            return []
        target = self.floor.service_segments.get(service, "")
        severity = Severity.CRITICAL if self.floor.is_sensitive(target) else Severity.HIGH
        return [_alert(event, at, detector=self.name, category=Category.HANDSHAKE_NO_BUSINESS,
                       severity=severity, confidence=self.config.handshake_confidence,
                       summary=f"refused at {service} ({event.reason}); no declared flow")]

    def _cross_trust_domain(self, event: AuditEventV1, at: float) -> list[Alert]:
        service = target_service(event) or "?"
        source = peer_address(event) or "unknown source"
        ours = event.trust_domain or "our trust domain"
        if event.principal:
            target = self.floor.service_segments.get(service, "")
            severity = Severity.CRITICAL if self.floor.is_sensitive(target) else Severity.HIGH
            return [_alert(event, at, detector=self.name, category=Category.CROSS_TRUST_DOMAIN, severity=severity,
                           confidence=self.config.cross_trust_domain_confidence,
                           summary=f"{event.principal} from {source} presented a certificate not issued by "
                                   f"the {ours} CA at {service}")]
        host = source.rsplit(":", 1)[0]
        t = event_time(event)
        last = self._unknown_ca_seen.get(host)
        if last is not None and t - last < self.config.unknown_ca_repeat_s:
            return []
        self._unknown_ca_seen.put(host, t)
        return [_alert(event, at, detector=self.name, category=Category.CROSS_TRUST_DOMAIN, severity=Severity.LOW,
                       confidence=self.config.unknown_ca_confidence, principal="", resource=f"peer:{host}",
                       summary=f"{source} presented a certificate of a CA unknown to {ours} at {service}")]


class NeverGrantedDetector:
    """First use of each never-granted pair per principal (repeats go to the burst detector)."""

    name = "never_granted"

    def __init__(self, floor: FloorMap, config: DetectorConfig = DetectorConfig()) -> None:
        self.floor = floor
        self.config = config
        self._seen: BoundedMap[str, set[tuple[str, str]]] = BoundedMap(config.max_principals)

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.DECISION or not event.principal or not event.resource:
            return []
        if event.decision == DENY and event.reason in NON_LATERAL_REASONS:
            return []
        if is_business_rule(event) or self.floor.granted(event.principal, event.action, event.resource):
            return []
        pair = (event.action, event.resource)
        seen = self._seen.get(event.principal)
        if seen is None:
            seen = set()
            self._seen.put(event.principal, seen)
        if pair in seen or len(seen) >= 256:
            return []
        seen.add(pair)
        c = self.config
        if event.decision == ALLOW:
            severity, confidence = Severity.CRITICAL, c.never_granted_allowed_confidence
            summary = f"ALLOWED {event.action} on {event.resource}, never granted (policy drift)"
        elif not is_workload(event.principal):
            severity, confidence = Severity.LOW, c.never_granted_person_confidence
            summary = f"denied {event.action} on {event.resource}, never granted"
        else:
            severity, confidence = Severity.HIGH, c.never_granted_denied_confidence
            summary = f"denied {event.action} on {event.resource}, never granted"
        return [_alert(event, at, detector=self.name, category=Category.NEVER_GRANTED, severity=severity,
                       confidence=confidence, summary=summary)]


class DenialBurstDetector:
    """``burst_denials`` denials by one principal within ``burst_window_ms``; fires once per burst."""

    name = "denial_burst"

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config
        self._windows = PrincipalWindows(config.burst_denials, config.burst_window_ms, config.max_principals)

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.DECISION or event.decision != DENY or not event.principal:
            return []
        full = self._windows.add(event)
        if full is None:
            return []
        first, evidence = full
        return [_alert(event, at, detector=self.name, category=Category.DENIAL_BURST, severity=Severity.MEDIUM,
                       confidence=self.config.burst_confidence, evidence=evidence, first_seen=first,
                       summary=f"{self._windows.count} denials within {self.config.burst_window_ms:.0f} ms")]


class IndicatorDetector:
    name = "indicator"

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.SIGNAL_CHANGED or not event.principal:
            return []
        detail = event.detail or {}
        value = detail.get("value")
        hits = value.get("indicators") if isinstance(value, dict) else None
        matched = event.reason in INDICATOR_REASONS or (
            detail.get("signal") == "threat_intel"
            and (bool(detail.get("matched")) or (isinstance(hits, list) and bool(hits))))
        if not matched:
            return []
        indicator = detail.get("indicator") or ", ".join(map(str, hits or []))
        return [_alert(event, at, detector=self.name, category=Category.INDICATOR_MATCH, severity=Severity.CRITICAL,
                       confidence=self.config.indicator_confidence,
                       summary=f"threat-intel indicator matched {indicator}".strip())]


class AttestationDetector:
    name = "attestation"

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.CERT_REFUSED or not event.reason.startswith(ATTESTATION_REASON_PREFIX):
            return []
        if not event.principal:
            return []
        return [_alert(event, at, detector=self.name, category=Category.ATTESTATION_REFUSED,
                       severity=Severity.CRITICAL, confidence=self.config.attestation_confidence,
                       summary=f"certificate refused: {event.reason} (rogue deployment or tampered build)")]


class FloodDetector:
    """``flood_denials`` rate refusals by one principal within ``flood_window_ms``; fires once per flood."""

    name = "flood"
    RATE_REASON = "enforcement.rate"

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config
        self._windows = PrincipalWindows(config.flood_denials, config.flood_window_ms, config.max_principals)

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if (event.kind != Kind.DECISION or event.decision != DENY or event.reason != self.RATE_REASON
                or not event.principal):
            return []
        full = self._windows.add(event)
        if full is None:
            return []
        first, evidence = full
        return [_alert(event, at, detector=self.name, category=Category.ORDER_FLOOD, severity=Severity.HIGH,
                       confidence=self.config.flood_confidence, evidence=evidence[:16], first_seen=first,
                       summary=f"{self._windows.count} rate refusals within {self.config.flood_window_ms:.0f} ms "
                               "(order flood)")]


class InsiderDetector:
    """A person's request for a never-granted action on a protected resource (allowed or denied)."""

    name = "insider"

    def __init__(self, floor: FloorMap, config: DetectorConfig = DetectorConfig()) -> None:
        self.floor = floor
        self.config = config

    def observe(self, event: AuditEventV1, at: float) -> list[Alert]:
        if event.kind != Kind.DECISION or not is_person(event.principal) or not event.resource:
            return []
        if (event.decision == DENY and event.reason in NON_LATERAL_REASONS) or is_business_rule(event):
            return []
        if not self.floor.is_protected(event.resource):
            return []
        if self.floor.granted(event.principal, event.action, event.resource):
            return []
        verb = "ALLOWED" if event.decision == ALLOW else "denied"
        severity = Severity.CRITICAL if event.decision == ALLOW else Severity.HIGH
        return [_alert(event, at, detector=self.name, category=Category.INSIDER_PROTECTED, severity=severity,
                       confidence=self.config.insider_confidence,
                       summary=f"person {verb} {event.action} on protected {event.resource}, outside their role")]


def default_detectors(floor: FloorMap, config: DetectorConfig = DetectorConfig()) -> list[Detector]:
    return [
        CrossSegmentDetector(floor, config),
        HandshakeDetector(floor, config),
        NeverGrantedDetector(floor, config),
        DenialBurstDetector(config),
        IndicatorDetector(config),
        AttestationDetector(config),
        InsiderDetector(floor, config),
        FloodDetector(config),
    ]
