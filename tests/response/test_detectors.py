"""Each detector fires on its malicious pattern, on that very event, and stays quiet on normal traffic."""

from __future__ import annotations

from trustfabric.audit.events import Kind
from trustfabric.clock import FakeClock
from trustfabric.response.alerts import Category, Severity
from trustfabric.response.detectors import (
    AttestationDetector,
    CrossSegmentDetector,
    DenialBurstDetector,
    DetectorConfig,
    HandshakeDetector,
    IndicatorDetector,
    NeverGrantedDetector,
    target_service,
)
from trustfabric.response.floor_map import FloorMap

from .fakes import StreamFactory


def _factory():
    clock = FakeClock()
    return clock, StreamFactory(clock)


def test_cross_segment_denial_to_settlement_by_an_algo_is_critical_on_that_event(floor, sid):
    clock, f = _factory()
    det = CrossSegmentDetector(floor)
    ev = f.decision(sid("algo-meanrev"), "settle", "settlement/ledger", False)
    clock.advance(0.002)
    alerts = det.observe(ev, clock.now())
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.category, a.severity, a.principal) == (Category.CROSS_SEGMENT, Severity.CRITICAL, sid("algo-meanrev"))
    assert a.confidence >= 0.95
    assert a.evidence[0].event_id == ev.event_id and a.evidence[0].seq == ev.seq
    assert abs(a.ttd_ms - 2.0) < 0.01  # float seconds near 1.8e9 carry ~0.2 us


def test_cross_segment_venue_direct_access_is_critical(floor, sid):
    clock, f = _factory()
    alerts = CrossSegmentDetector(floor).observe(
        f.decision(sid("algo-momentum"), "execute", "venue-a/orders", False), clock.now())
    assert alerts and alerts[0].severity == Severity.CRITICAL


def test_cross_segment_ignores_allowed_granted_and_limit_denials(floor, sid):
    clock, f = _factory()
    det = CrossSegmentDetector(floor)
    algo = sid("algo-meanrev")
    quiet = [
        f.decision(algo, "submit_order", "risk/orders", True),  # granted, allowed
        f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"),  # a limit
        f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.notional"),
        f.decision(sid("oms"), "settle", "settlement/ledger", True),  # oms settles: its flow
        f.decision(sid("venue-a"), "execute", "venue-b/orders", False),  # same segment: not cross
    ]
    assert all(det.observe(e, clock.now()) == [] for e in quiet)


def test_cross_segment_by_a_person_is_medium_not_critical(floor):
    clock, f = _factory()
    fm = FloorMap.build({"oms": "oms"}, {"oms/fills": "oms"}, {"alice": []})
    fm = FloorMap(service_segments={**fm.service_segments, "alice": "desk"},
                  resource_segments=fm.resource_segments, grants=fm.grants)
    alerts = CrossSegmentDetector(fm).observe(f.decision("alice", "report_fill", "oms/fills", False), clock.now())
    assert alerts and alerts[0].severity == Severity.MEDIUM and alerts[0].confidence < 0.8


def test_handshake_refused_outside_flows_alerts_but_not_for_a_service_with_business(floor, sid):
    clock, f = _factory()
    det = HandshakeDetector(floor)
    venue_pep = "pep:" + sid("venue-a")
    bad = f.event(Kind.SESSION_REFUSED, at=venue_pep, principal=sid("algo-meanrev"), reason="session.token_invalid")
    alerts = det.observe(bad, clock.now())
    assert len(alerts) == 1 and alerts[0].category == Category.HANDSHAKE_NO_BUSINESS
    assert alerts[0].severity == Severity.CRITICAL  # a venue is sensitive
    ok = f.event(Kind.SESSION_REFUSED, at=venue_pep, principal=sid("order-router"), reason="session.token_expired")
    assert det.observe(ok, clock.now()) == []
    analytics = f.event(Kind.HANDSHAKE_REFUSED, at="pep:" + sid("oms"), principal=sid("analytics"),
                        reason="handshake.peer_refused")
    assert det.observe(analytics, clock.now())[0].severity == Severity.HIGH
    anonymous = f.event(Kind.HANDSHAKE_REFUSED, at=venue_pep, reason="handshake.tls_failed")
    assert det.observe(anonymous, clock.now()) == []


def test_target_service_from_resource_detail_or_source(sid):
    clock, f = _factory()
    assert target_service(f.event(Kind.SESSION_REFUSED, resource="svc/oms")) == "oms"
    assert target_service(f.event(Kind.SESSION_REFUSED, detail={"service": "venue-b"})) == "venue-b"
    assert target_service(f.event(Kind.SESSION_REFUSED, at="pep:" + sid("settlement"))) == "settlement"


def test_never_granted_first_use_once_per_pair_and_allowed_drift_is_critical(floor, sid):
    clock, f = _factory()
    det = NeverGrantedDetector(floor)
    venue = sid("venue-a")
    first = det.observe(f.decision(venue, "execute", "venue-b/orders", False), clock.now())
    assert len(first) == 1 and first[0].severity == Severity.HIGH
    assert det.observe(f.decision(venue, "execute", "venue-b/orders", False), clock.now()) == []
    drift = det.observe(f.decision(sid("risk-dashboard"), "halt", "risk/kill-switch", True), clock.now())
    assert drift and drift[0].severity == Severity.CRITICAL
    assert det.observe(f.decision(venue, "report_fill", "oms/fills", True), clock.now()) == []


def test_denial_burst_needs_n_denials_within_t(floor, sid):
    clock, f = _factory()
    det = DenialBurstDetector(DetectorConfig(burst_denials=10, burst_window_ms=500))
    algo = sid("algo-momentum")
    slow = []
    for _ in range(10):  # 10 denials over 2.7 s: not a burst
        slow += det.observe(f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"),
                            clock.now())
        clock.advance(0.3)
    assert slow == []
    fast = []
    for _ in range(10):
        clock.advance(0.01)
        fast += det.observe(f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"),
                            clock.now())
    assert len(fast) == 1 and fast[0].category == Category.DENIAL_BURST and len(fast[0].evidence) == 10
    assert fast[0].first_seen < fast[0].detected_at


def test_indicator_match_and_not_other_signals(sid):
    clock, f = _factory()
    det = IndicatorDetector()
    hit = f.event(Kind.SIGNAL_CHANGED, principal=sid("analytics"), reason="intel.indicator_match",
                  detail={"indicator": "indicator--1234"})
    assert det.observe(hit, clock.now())[0].category == Category.INDICATOR_MATCH
    stix = f.event(Kind.SIGNAL_CHANGED, principal=sid("oms"), detail={"signal": "threat_intel", "matched": True})
    assert det.observe(stix, clock.now())
    posture = f.event(Kind.SIGNAL_CHANGED, principal=sid("oms"), reason="posture.failing")
    assert det.observe(posture, clock.now()) == []


def test_attestation_refusal_is_critical_other_cert_refusals_are_not(sid):
    clock, f = _factory()
    det = AttestationDetector()
    rogue = f.event(Kind.CERT_REFUSED, principal=sid("algo-momentum"), reason="attest.digest_not_promoted")
    alerts = det.observe(rogue, clock.now())
    assert alerts and alerts[0].category == Category.ATTESTATION_REFUSED and alerts[0].severity == Severity.CRITICAL
    other = f.event(Kind.CERT_REFUSED, principal=sid("algo-momentum"), reason="cert.csr_invalid")
    assert det.observe(other, clock.now()) == []


def test_pre_trade_risk_rejections_are_business_rules_not_lateral_movement(floor, sid):
    """A credit-limit rejection in normal trading (pre-trade risk's own decision event) once raised a
    high never-granted alert and quarantined an algo; no lateral or insider detector takes it now."""
    from trustfabric.response.detectors import InsiderDetector

    clock, f = _factory()
    algo = sid("algo-momentum")
    rejections = [f.decision(algo, "risk.check", "TSLA", False, reason="risk.credit_agent"),
                  f.decision(algo, "risk.check", "NVDA", False, reason="risk.price_collar"),
                  f.decision("user:alice", "risk.check", "AAPL", False, reason="risk.credit_agent")]
    for det in (CrossSegmentDetector(floor), NeverGrantedDetector(floor), InsiderDetector(floor)):
        assert [det.observe(e, clock.now()) for e in rejections] == [[], [], []], det.name
    # the same principal reaching for settlement is still caught
    assert NeverGrantedDetector(floor).observe(f.decision(algo, "settle", "settlement/ledger", False), clock.now())


def test_order_flood_of_rate_refusals_is_high_and_quarantines_but_a_short_burst_is_not(floor, sid):
    from tests.response.conftest import make_rig
    from trustfabric.response.detectors import FloodDetector

    clock, f = _factory()
    det = FloodDetector()
    algo = sid("algo-meanrev")
    fired = []
    for _ in range(99):  # an honest algo bumping into its rate: below the flood threshold
        fired += det.observe(f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"), 0)
    assert fired == []
    clock.advance(2.0)  # the window moved on: the next 99 do not complete a flood with the old ones
    for _ in range(99):
        fired += det.observe(f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"), 0)
    assert fired == []
    fired += det.observe(f.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"), 0)
    assert len(fired) == 1 and fired[0].category == Category.ORDER_FLOOD and fired[0].severity == Severity.HIGH
    rig = make_rig(floor)
    for _ in range(100):
        rig.engine.observe(rig.factory.decision(algo, "submit_order", "risk/orders", False, reason="enforcement.rate"))
    assert rig.containment.is_quarantined(algo)
