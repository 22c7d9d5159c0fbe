"""Behavioural baselines: quiet while learning and on normal traffic, rising on real deviations."""

from __future__ import annotations

import random

from trustfabric.clock import FakeClock
from trustfabric.response.alerts import Category
from trustfabric.response.baseline import BaselineConfig, BehaviourBaselines
from trustfabric.response.policy import TIGHTEN

from .conftest import make_rig
from .fakes import StreamFactory

ALGO = "spiffe://prod.acme.example/algo/algo-meanrev"


class RecordingRisk:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, float, str]] = []
        self.fail = fail

    def set_risk(self, principal: str, score: float, source: str) -> None:
        if self.fail:
            raise ConnectionError("policy engine unreachable")
        self.calls.append((principal, score, source))


def _steady(factory: StreamFactory, clock: FakeClock, base: BehaviourBaselines, seconds: float,
            rate: float = 5.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    scores = []
    end = clock.now() + seconds
    while clock.now() < end:
        clock.advance(rng.expovariate(rate))
        qty = rng.choice((100, 200, 300))
        ev = factory.decision(ALGO, "submit_order", "risk/orders", True, qty=qty,
                              notional=round(qty * rng.uniform(40, 60), 2))
        scores.append(base.observe(ev))
    return scores


def test_no_score_while_learning_and_low_score_on_steady_behaviour():
    clock = FakeClock()
    factory = StreamFactory(clock)
    base = BehaviourBaselines(BaselineConfig(warmup_events=200, warmup_s=60))
    learning = _steady(factory, clock, base, 30)
    assert max(learning) == 0.0  # 30 s is inside the warm-up
    steady = _steady(factory, clock, base, 300, seed=2)
    assert max(steady) < 30.0


def test_notional_spike_new_resource_and_flood_raise_the_score_and_publish_risk():
    clock = FakeClock()
    factory = StreamFactory(clock)
    risk = RecordingRisk()
    base = BehaviourBaselines(BaselineConfig(), risk)
    _steady(factory, clock, base, 300)
    calm = base.score(ALGO)
    clock.advance(0.2)
    spike = base.observe(factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100_000,
                                          notional=5_000_000.0))
    assert spike > calm + 10 and "notional" in base.components(ALGO)
    clock.advance(0.2)
    novel = base.observe(factory.decision(ALGO, "read_positions", "oms/positions", False))
    assert "novelty" in base.components(ALGO) and novel > 0
    for _ in range(400):  # a flood: 400 orders in 2 seconds
        clock.advance(0.005)
        flood = base.observe(factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100, notional=5000.0))
    assert flood > 60.0 and "rate" in base.components(ALGO)
    assert risk.calls and risk.calls[-1][0] == ALGO and risk.calls[-1][2] == "response.baseline"
    assert max(c[1] for c in risk.calls) > 60.0


def test_scores_are_deterministic_for_the_same_stream():
    runs = []
    for _ in range(2):
        clock = FakeClock()
        factory = StreamFactory(clock)
        base = BehaviourBaselines()
        runs.append(_steady(factory, clock, base, 200, seed=9))
    assert runs[0] == runs[1]


def test_off_hours_activity_is_unusual():
    clock = FakeClock(start=1_790_000_000.0 - (1_790_000_000.0 % 86400) + 9 * 3600)  # 09:00 UTC
    factory = StreamFactory(clock)
    base = BehaviourBaselines()
    _steady(factory, clock, base, 600)
    clock.advance(14 * 3600)  # 23:10 UTC
    base.observe(factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100, notional=5000.0))
    assert "hour" in base.components(ALGO)


def test_a_failing_risk_sink_is_counted_not_fatal():
    clock = FakeClock()
    factory = StreamFactory(clock)
    base = BehaviourBaselines(BaselineConfig(), RecordingRisk(fail=True))
    _steady(factory, clock, base, 300)
    for _ in range(300):
        clock.advance(0.005)
        base.observe(factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100, notional=5000.0))
    assert base.risk_errors >= 1 and base.score(ALGO) > 60


def test_engine_turns_a_sustained_anomaly_into_one_tighten_alert(floor):
    rig = make_rig(floor)
    rng = random.Random(4)
    end = rig.clock.now() + 300
    while rig.clock.now() < end:
        rig.clock.advance(rng.expovariate(5.0))
        rig.engine.observe(rig.factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100,
                                                notional=round(rng.uniform(4000, 6000), 2)))
    assert rig.store.alerts(principal=ALGO) == []
    for _ in range(400):
        rig.clock.advance(0.005)
        rig.engine.observe(rig.factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100, notional=5000.0))
    rows = rig.store.alerts(principal=ALGO)
    assert [(a.category, act) for a, act in rows] == [(Category.BEHAVIOUR, TIGHTEN)]
    assert rig.policy.calls == []  # an anomaly alone tightens; it does not quarantine
    assert rig.policy.tightened[ALGO].max_notional == 50_000.0


def _steady_then_flood(rig):
    """Five minutes of an algo's normal orders, then a flood: the events, as the floor's spools hold them."""
    rng = random.Random(4)
    steady, flood = [], []
    end = rig.clock.now() + 300
    while rig.clock.now() < end:
        rig.clock.advance(rng.expovariate(5.0))
        steady.append(rig.factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100,
                                           notional=round(rng.uniform(4000, 6000), 2)))
    for _ in range(400):
        rig.clock.advance(0.005)
        flood.append(rig.factory.decision(ALGO, "submit_order", "risk/orders", True, qty=100, notional=5000.0))
    return steady, flood


def test_the_decision_stream_teaches_the_baseline_normal_traffic_and_its_anomalies_tighten(floor):
    rig = make_rig(floor)
    steady, flood = _steady_then_flood(rig)
    assert rig.engine.learn(steady) == []
    assert rig.engine.baselines.events(ALGO) == len(steady)  # allowed decisions learned, each once
    assert ("submit_order", "risk/orders") in rig.engine.baselines.pairs(ALGO)
    raised = []
    for i in range(0, len(flood), 50):  # as the collector hands them over, pass by pass
        raised += rig.engine.learn(flood[i:i + 50])
    assert [a.category for a in raised] == [Category.BEHAVIOUR]
    assert [(a.category, act) for a, act in rig.store.alerts(principal=ALGO)] == [(Category.BEHAVIOUR, TIGHTEN)]
    assert rig.engine.events_seen == 0  # the detectors were not fed: they see denials through observe


def test_reported_denials_are_not_learned_twice_once_the_stream_is_attached(floor, sid):
    rig = make_rig(floor)
    rig.engine.attach_decision_stream()
    denial = rig.factory.decision(ALGO, "submit_order", "risk/orders", False, reason="enforcement.rate")
    rig.engine.observe(denial)  # the report path: detectors only
    assert rig.engine.events_seen == 1 and rig.engine.baselines.events(ALGO) == 0
    rig.engine.learn([denial])  # the same record, shipped by the collector
    assert rig.engine.baselines.events(ALGO) == 1


def test_learning_is_not_detection_a_lateral_denial_in_the_stream_contains_nobody(floor, sid):
    rig = make_rig(floor)
    algo = sid("algo-momentum")
    lateral = rig.factory.decision(algo, "execute", "venue-b/orders", False)
    assert rig.engine.learn([lateral]) == [] and not rig.containment.is_quarantined(algo)
    assert rig.engine.observe(lateral) and rig.containment.is_quarantined(algo)  # the report path detects it
