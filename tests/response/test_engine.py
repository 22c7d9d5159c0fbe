"""The engine end to end: no quarantine on normal trading, alerts under load, policy as data."""

from __future__ import annotations

import threading

import pytest

from trustfabric.audit.events import Kind
from trustfabric.response.alerts import Category
from trustfabric.response.errors import ResponseConfigError
from trustfabric.response.policy import QUARANTINE, TIGHTEN, ResponsePolicy

from .conftest import make_rig
from .fakes import normal_trading


def test_normal_trading_run_raises_no_quarantine(floor, sid):
    rig = make_rig(floor)
    events = normal_trading(floor, sid, rig.clock, rig.factory, seconds=240.0)
    assert len(events) > 5000
    assert sum(1 for e in events if e.decision == "deny") > 30  # benign limit denials are in the stream
    for ev in events:
        rig.engine.observe(ev)
    assert rig.policy.calls == [] and rig.revoker.revoked == []
    assert rig.store.incidents() == []
    lateral = [a for a, _ in rig.store.alerts(limit=10_000) if a.category.startswith("lateral")]
    assert lateral == []
    assert rig.engine.actions[QUARANTINE] == 0
    assert rig.engine.events_seen == len(events)


def test_attack_inside_a_busy_stream_is_caught_on_its_event(floor, sid):
    rig = make_rig(floor)
    normal = normal_trading(floor, sid, rig.clock, rig.factory, seconds=120.0)
    for ev in normal:
        rig.engine.observe(ev)
    algo = sid("algo-momentum")
    first = rig.factory.decision(algo, "execute", "venue-b/orders", False)
    rig.clock.advance(0.001)
    alerts = rig.engine.observe(first)
    assert alerts and rig.containment.is_quarantined(algo)
    incident = rig.containment.open_incident(algo)
    assert incident.contained and abs(incident.ttd_ms - 1.0) < 0.01
    assert incident.alerts[0].evidence[0].event_id == first.event_id
    for ev in normal_trading(floor, sid, rig.clock, rig.factory, seconds=30.0, seed=11):
        if ev.principal != algo:
            rig.engine.observe(ev)
    assert [p for p, q in rig.policy.calls] == [algo]


def test_detection_keeps_working_under_load_from_many_threads(floor, sid):
    rig = make_rig(floor)
    events = normal_trading(floor, sid, rig.clock, rig.factory, seconds=120.0, seed=3)
    attackers = [sid("analytics"), sid("risk-dashboard"), sid("market-data"), sid("venue-a")]
    attacks = [rig.factory.decision(p, "settle", "settlement/ledger", False) for p in attackers]
    chunks = [events[i::4] + [attacks[i]] for i in range(4)]

    def feed(chunk):
        for ev in chunk:
            rig.engine.observe(ev)

    threads = [threading.Thread(target=feed, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert rig.engine.events_seen == len(events) + len(attacks)
    assert {p for p, q in rig.policy.calls if q} == set(attackers)
    assert all(rig.containment.open_incident(p).contained for p in attackers)


def test_memory_stays_bounded_with_many_principals(floor):
    from trustfabric.response.baseline import BaselineConfig, BehaviourBaselines
    from trustfabric.response.detectors import DetectorConfig, default_detectors

    rig = make_rig(floor, baselines=BehaviourBaselines(BaselineConfig(max_principals=100)),
                   detectors=default_detectors(floor, DetectorConfig(max_principals=100)), max_suppressed=100)
    for i in range(2000):
        rig.engine.observe(rig.factory.decision(f"spiffe://prod.acme.example/scan/p{i}", "read", f"x/{i}", False))
    assert len(rig.engine.baselines) == 100
    assert len(rig.engine._recent) <= 100
    assert all(len(getattr(d, "_seen", getattr(d, "_windows", []))) <= 100 for d in rig.engine.detectors)


def test_repeated_identical_alerts_are_folded(rig, sid):
    venue = sid("venue-a")
    first = rig.engine.observe(rig.factory.decision(venue, "subscribe", "md/AAPL", False))
    assert first
    again = rig.engine.observe(rig.factory.decision(venue, "subscribe", "md/AAPL", False))
    assert again == [] and rig.engine.alerts_suppressed == 1
    rig.clock.advance(rig.engine.suppress_s + 1)
    later = rig.engine.observe(rig.factory.decision(venue, "subscribe", "md/AAPL", False))
    assert [a.category for a in later] == [Category.CROSS_SEGMENT]


def test_denial_burst_tightens_instead_of_quarantining(rig, sid):
    algo = sid("algo-meanrev")
    for _ in range(25):
        rig.clock.advance(0.005)
        rig.engine.observe(rig.factory.decision(algo, "submit_order", "risk/orders", False,
                                                reason="enforcement.rate"))
    assert rig.policy.calls == []
    assert rig.policy.risk[algo] == (80.0, "response.alert")
    assert rig.policy.tightened[algo].max_rate == 5.0
    [(alert, action)] = rig.store.alerts(principal=algo)
    assert alert.category == Category.DENIAL_BURST and action == TIGHTEN


def test_response_rules_are_data(floor, sid):
    policy = ResponsePolicy.from_mapping({"rules": [
        {"category": "lateral", "action": "alert", "min_confidence": 0.0},
    ]})
    rig = make_rig(floor, policy=policy)
    alerts = rig.engine.observe(rig.factory.decision(sid("algo-meanrev"), "settle", "settlement/ledger", False))
    assert alerts and rig.policy.calls == []
    assert [e.detail["response"] for e in rig.sink.of_kind(Kind.ALERT)] == ["alert"] * len(alerts)


@pytest.mark.parametrize("raw", [
    {"rules": [{"category": "lateral", "action": "shrug"}]},
    {"rules": [{"category": "lateral", "action": "quarantine", "min_severity": "dire"}]},
    {"rules": [{"category": "lateral", "action": "quarantine", "min_confidence": 2}]},
    {"rules": "nope"},
])
def test_bad_response_policy_is_refused(raw):
    with pytest.raises(ResponseConfigError):
        ResponsePolicy.from_mapping(raw)


def test_indicator_and_attestation_events_quarantine(rig, sid):
    rig.engine.observe(rig.factory.event(Kind.SIGNAL_CHANGED, principal=sid("analytics"),
                                         reason="intel.indicator_match"))
    rig.engine.observe(rig.factory.event(Kind.CERT_REFUSED, principal=sid("algo-momentum"),
                                         reason="attest.digest_not_promoted"))
    assert {p for p, _ in rig.policy.calls} == {sid("analytics"), sid("algo-momentum")}


def test_a_broken_detector_does_not_blind_the_others(floor, sid):
    from trustfabric.response.detectors import default_detectors

    class Broken:
        name = "broken"

        def observe(self, event, at):
            raise RuntimeError("bug")

    rig = make_rig(floor, detectors=[Broken(), *default_detectors(floor)])
    alerts = rig.engine.observe(rig.factory.decision(sid("algo-meanrev"), "settle", "settlement/ledger", False))
    assert rig.engine.detector_errors == 1 and rig.containment.is_quarantined(sid("algo-meanrev"))
    failures = [a for a in alerts if a.category == Category.DETECTOR_FAILURE]
    assert len(failures) == 1 and failures[0].detector == "broken"  # the blind spot is an alert, not silence
    assert failures[0].evidence  # linked to the event it could not examine


def test_a_detector_failure_alone_only_alerts(floor, sid):
    class Broken:
        name = "broken"

        def observe(self, event, at):
            raise RuntimeError("bug")

    rig = make_rig(floor, detectors=[Broken()])
    alerts = rig.engine.observe(rig.factory.decision(sid("algo-meanrev"), "read", "oms/positions", True))
    assert [a.category for a in alerts] == [Category.DETECTOR_FAILURE]
    assert not rig.containment.is_quarantined(sid("algo-meanrev"))  # our bug never punishes the principal
    assert rig.engine.actions["tighten"] == 0 and rig.engine.actions["alert"] == 1


def test_engine_ignores_its_own_output_kinds(rig, sid):
    rig.engine.observe(rig.factory.decision(sid("algo-meanrev"), "settle", "settlement/ledger", False))
    seen = rig.engine.events_seen
    for ev in list(rig.sink.events):
        rig.engine.observe(ev)
    assert rig.engine.events_seen == seen
