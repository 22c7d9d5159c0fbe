"""Scoring a scenario from what happened on the floor: attempts, successes, blast radius, ttd, ttc.

The attacker's own view (did it get an answer?) is kept for the record but never
scored. A *success* is an effect the target service performed for the attacker
(:class:`FloorEffects`, counted by the services themselves); the *blast radius* is

* every distinct (action, resource) the floor performed for the attacker outside
  the principal's grants in the topology,
* plus every order that reached a venue without a valid risk approval,
* plus every record read from protected data (client orders, positions,
  settlement, treasury).

A flood abuses a granted action: its successes are the orders the floor accepted
beyond the principal's allowed rate over the flood's duration.

Time to detect is the first malicious attempt (the attacker's send time) to the
first alert about the principal; time to contain is that alert to the last
enforcement point confirming it refuses the principal (the response engine's
incident). In perimeter mode the only detection is a periodic log review:
:func:`perimeter_review_ttd_ms` gives the delay to the next review after the first
attempt, with reviews every ``interval`` from the floor's start (a modelled figure;
the result says so). Pure: plain values in, a :class:`ScenarioResult` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from trustfabric.simulation.results import ScenarioResult
from trustfabric.simulation.scenarios import Scenario

PROTECTED_READS = frozenset({"read_client_orders", "read_positions"})
PROTECTED_RESOURCES = frozenset({"oms/client-orders", "oms/positions", "settlement/ledger", "treasury/cash"})
JOIN = ("join", "bootstrap")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One malicious attempt as the attacker saw it."""

    target: str
    action: str
    resource: str
    method: str
    sent_at: float  # wall seconds
    answered_ok: bool  # the attacker got an "ok" answer (not scored: effects are)
    reason: str = ""  # refusal reason code, when refused


@dataclass(frozen=True)
class FloorEffects:
    """What the floor performed for the attacker during one scenario (counted by the services)."""

    performed: dict[tuple[str, str], int] = field(default_factory=dict)  # (action, resource) -> times
    venue_orders_unapproved: int = 0
    records_read: int = 0
    identities_issued: int = 0  # certificates the control plane issued to the attacker's build


@dataclass(frozen=True, slots=True)
class Detection:
    """The fabric's response, as its control plane recorded it."""

    alert_at: float | None = None  # wall seconds of the first alert about the principal
    contained: bool = False
    ttc_ms: float | None = None
    alerts: int = 0
    incident_id: str = ""


def perimeter_review_ttd_ms(first_attempt: float, floor_started: float, interval_s: float) -> float:
    """Delay from ``first_attempt`` to the next log review (reviews at floor_started + k * interval)."""
    if interval_s <= 0:
        raise ValueError("the review interval must be positive")
    since = max(0.0, first_attempt - floor_started)
    wait = interval_s - (since % interval_s)
    return wait * 1000.0


def flood_allowance(max_rate: float | None, duration_s: float) -> int:
    """Orders the principal may legitimately place during a flood of ``duration_s`` (one second minimum)."""
    if max_rate is None:
        return 0
    return int(max_rate * max(1.0, duration_s))


def score(scenario: Scenario, mode: str, records: Iterable[AttemptRecord], effects: FloorEffects,
          grants: frozenset[tuple[str, str]], detection: Detection | None, *,
          flood_rate: float | None = None, floor_started: float = 0.0,
          review_interval_s: float | None = None) -> ScenarioResult:
    records = list(records)
    attempts = len(records)
    successes = 0
    for attempt in scenario.attempts:
        mine = [r for r in records if (r.target, r.action, r.resource, r.method) ==
                (attempt.target, attempt.action, attempt.resource, attempt.method)]
        if attempt.method == "join":
            successes += min(len(mine), effects.identities_issued)
            continue
        performed = effects.performed.get((attempt.action, attempt.resource), 0)
        if attempt.method == "flood":
            duration = (max(r.sent_at for r in mine) - min(r.sent_at for r in mine)) if mine else 0.0
            successes += max(0, min(len(mine), performed) - flood_allowance(flood_rate, duration))
        else:
            successes += min(len(mine), performed)
    outside = {key for key, n in effects.performed.items() if n > 0 and key not in grants and key != JOIN}
    blast = len(outside) + effects.venue_orders_unapproved + effects.records_read
    first = min((r.sent_at for r in records), default=None)
    details = {
        "refusal_reasons": sorted({r.reason for r in records if r.reason}),
        "answered_ok": sum(1 for r in records if r.answered_ok),
        "outside_grants": sorted(f"{a} {res}" for a, res in outside),
        "venue_orders_unapproved": effects.venue_orders_unapproved,
        "records_read": effects.records_read,
        "identities_issued": effects.identities_issued,
    }
    if mode == "perimeter":
        ttd = None
        if first is not None and review_interval_s:
            ttd = perimeter_review_ttd_ms(first, floor_started, review_interval_s)
        method = (f"modelled: the next periodic log review after the first attempt, reviews every "
                  f"{review_interval_s:g} s from the floor's start (assumes the review spots it); "
                  f"no automated containment") if review_interval_s else "no detection"
        return ScenarioResult(name=scenario.name, mode=mode, attempts=attempts, successes=successes,
                              blast_radius=blast, detected=ttd is not None, ttd_ms=ttd, contained=False,
                              ttc_ms=None, category=scenario.category, ttd_method=method, details=details)
    detection = detection or Detection()
    ttd = None
    if detection.alert_at is not None and first is not None:
        ttd = max(0.0, (detection.alert_at - first) * 1000.0)
    details["alerts"] = detection.alerts
    details["incident"] = detection.incident_id
    return ScenarioResult(name=scenario.name, mode=mode, attempts=attempts, successes=successes,
                          blast_radius=blast, detected=ttd is not None, ttd_ms=ttd,
                          contained=detection.contained, ttc_ms=detection.ttc_ms if detection.contained else None,
                          category=scenario.category,
                          ttd_method="measured: first attempt (attacker's send time) to the response engine's "
                                     "first alert about the principal; ttc: alert to every enforcement point "
                                     "confirming refusal",
                          details=details)
