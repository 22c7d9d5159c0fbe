"""Scoring from floor effects: successes and blast radius come from what the floor did, not the attacker."""

from __future__ import annotations

import pytest

from trustfabric.simulation.measure import (
    AttemptRecord, Detection, FloorEffects, flood_allowance, perimeter_review_ttd_ms, score,
)
from trustfabric.simulation.scenarios import Attempt, Foothold, Scenario

VENUE = Attempt(target="venue-a", action="execute", resource="venue-a/orders", count=2)
SCENARIO = Scenario("s", "compromised_algo", "", Foothold("workload", "algo-meanrev"), (VENUE,))
GRANTS = frozenset({("submit_order", "risk/orders")})


def _records(n: int, ok: bool = False, t0: float = 100.0):
    return [AttemptRecord("venue-a", "execute", "venue-a/orders", "request", t0 + i * 0.01, ok,
                          "" if ok else "enforcement.not_in_table") for i in range(n)]


def test_attacker_seeing_ok_is_not_a_success_without_an_effect():
    result = score(SCENARIO, "zero-trust", _records(2, ok=True), FloorEffects(), GRANTS, Detection())
    assert result.successes == 0 and result.blast_radius == 0
    assert result.details["answered_ok"] == 2


def test_effects_outside_grants_count_as_successes_and_blast_radius():
    effects = FloorEffects(performed={("execute", "venue-a/orders"): 2}, venue_orders_unapproved=2)
    result = score(SCENARIO, "perimeter", _records(2), effects, GRANTS, None, floor_started=0.0,
                   review_interval_s=3600.0)
    assert result.successes == 2
    assert result.blast_radius == 1 + 2  # one (action, resource) outside grants + two unapproved venue orders
    assert result.detected and not result.contained and result.ttc_ms is None
    assert "modelled" in result.ttd_method


def test_zero_trust_ttd_is_first_attempt_to_alert_and_ttc_only_when_contained():
    detection = Detection(alert_at=100.05, contained=True, ttc_ms=12.5, alerts=1)
    result = score(SCENARIO, "zero-trust", _records(2), FloorEffects(), GRANTS, detection)
    assert result.ttd_ms == pytest.approx(50.0)
    assert result.contained and result.ttc_ms == 12.5
    undetected = score(SCENARIO, "zero-trust", _records(2), FloorEffects(), GRANTS, Detection())
    assert not undetected.detected and undetected.ttd_ms is None and undetected.ttc_ms is None


def test_flood_counts_only_orders_past_the_allowed_rate():
    flood = Attempt(target="pre-trade-risk", action="submit_order", resource="risk/orders", method="flood", count=600)
    scenario = Scenario("f", "compromised_algo", "", Foothold("workload", "algo-meanrev"), (flood,))
    records = [AttemptRecord("pre-trade-risk", "submit_order", "risk/orders", "flood", 10.0 + i / 1000, True)
               for i in range(600)]
    within = score(scenario, "zero-trust", records, FloorEffects(performed={("submit_order", "risk/orders"): 100}),
                   GRANTS, Detection(), flood_rate=100)
    assert within.successes == 0 and within.blast_radius == 0
    past = score(scenario, "perimeter", records, FloorEffects(performed={("submit_order", "risk/orders"): 450}),
                 GRANTS, None, flood_rate=100, review_interval_s=60)
    assert past.successes == 350
    assert flood_allowance(None, 5.0) == 0 and flood_allowance(100, 0.2) == 100


def test_join_success_is_an_identity_issued():
    join = Attempt(target="control-plane", action="join", resource="bootstrap", method="join")
    scenario = Scenario("j", "supply_chain", "", Foothold("build", "algo-momentum", digest="tampered"), (join,))
    records = [AttemptRecord("control-plane", "join", "bootstrap", "join", 1.0, False, "attest.unpromoted_digest")]
    assert score(scenario, "zero-trust", records, FloorEffects(), GRANTS, Detection()).successes == 0
    issued = score(scenario, "zero-trust", records, FloorEffects(identities_issued=1), GRANTS, Detection())
    assert issued.successes == 1


def test_perimeter_review_delay():
    assert perimeter_review_ttd_ms(10.0, 0.0, 3600.0) == pytest.approx(3590_000.0)
    assert perimeter_review_ttd_ms(3600.5, 0.0, 3600.0) == pytest.approx(3599_500.0)
    with pytest.raises(ValueError):
        perimeter_review_ttd_ms(1.0, 0.0, 0.0)
