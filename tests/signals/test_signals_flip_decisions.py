"""Signals flip decisions, and each change moves exactly the epochs it affects and reaches subscribers."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import Kind
from trustfabric.errors import SignalError
from trustfabric.policy.decision import Invalidation
from trustfabric.signals.host_agent import HostInspector, HostPostureAgent
from trustfabric.signals.market import MarketCalendar
from trustfabric.signals.posture import SignedPostureReport
from trustfabric.signals.threat_intel import ADDRESS, CODE_DIGEST, FINGERPRINT, SPIFFE_ID, indicator_bundle

from tests.signals.fake_host import fake_host

MEANREV = "algo-meanrev"
MOMENTUM = "algo-momentum"


@pytest.fixture
def received(bus):
    got: list[Invalidation] = []
    bus.subscribe(got.append)
    return got


def _epochs(engine, topology):
    return {k: engine.epoch_of(k) for k in topology.principal_keys()}, engine.global_epoch


def _assert_only(engine, topology, before, keys):
    after = _epochs(engine, topology)
    moved = {k for k in after[0] if after[0][k] != before[0][k]}
    assert moved == {topology.resolve(k).key for k in keys}
    assert after[1] == before[1]


def test_quarantine_flips_and_bumps_only_that_principal(engine, hub, topology, received, sink, clock):
    table = engine.decision_table(MEANREV, clock.now())
    before = _epochs(engine, topology)
    hub.quarantine(MEANREV, reason="lateral movement", origin="response")
    _assert_only(engine, topology, before, [MEANREV])
    assert not engine.is_current(table, clock.now())
    assert [(i.principal, i.reason, i.source) for i in received] == \
        [(topology.spiffe_id(MEANREV), "quarantine.signal", "response")]
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert not d.allowed and d.policy_ids == ("guard.quarantine",) and d.epoch == 1
    assert engine.decide(MOMENTUM, "subscribe", "md/AAPL").allowed
    fresh = engine.decision_table(MEANREV, clock.now())
    assert fresh.epoch == 1 and not any(e.allowed for e in fresh.entries.values())
    changed = sink.of_kind(Kind.SIGNAL_CHANGED)[-1]
    assert changed.detail["signal"] == "quarantine" and changed.detail["source"] == "response"
    hub.release(MEANREV, origin="response")
    assert received[-1].reason == "release.signal"
    assert engine.decide(MEANREV, "subscribe", "md/JPM").allowed


def test_posture_drop_flips_every_principal_on_the_host(engine, hub, topology, received, clock, tmp_path):
    before = _epochs(engine, topology)
    agent: HostPostureAgent = hub.agents["oms"]
    old_kernel = fake_host(tmp_path, kernel="4.19.0-27-amd64")  # an agent of that host sees an old kernel
    degraded = HostPostureAgent("oms", inspector=HostInspector(old_kernel))
    degraded.register(hub.host_keys)
    verdict = hub.report_posture(degraded.report(clock.now()))
    assert not verdict.ok and verdict.reasons == ("posture.kernel",)
    _assert_only(engine, topology, before, ["oms"])
    d = engine.decide("oms", "settle", "settlement/ledger")
    assert not d.allowed and d.policy_ids == ("guard.posture",)
    hub.report_posture(agent.report(clock.now()))
    assert engine.decide("oms", "settle", "settlement/ledger").allowed


def test_posture_with_a_bad_signature_fails_the_host_and_is_refused(engine, hub, clock, sink):
    good = hub.agents["venue-a"].report(clock.now())
    forged = SignedPostureReport(report=good.report.replace(b'"os":"Linux"', b'"os":"LinuX"'),
                                 signature=good.signature, key_id=good.key_id)
    verdict = hub.report_posture(forged)
    assert not verdict.ok and verdict.reasons == ("posture.bad_signature",)
    assert not engine.decide("venue-a", "report_fill", "oms/fills").allowed
    assert sink.of_kind(Kind.SIGNAL_REFUSED)[-1].reason == "posture.bad_signature"
    with pytest.raises(SignalError):
        hub.report_posture(b"{not json")


def test_stale_posture_fails_and_tables_expire_with_it(engine, hub, clock):
    table = engine.decision_table("venue-b", clock.now())
    assert table.expires_at <= clock.now() + hub.posture_minimum.max_age_s
    clock.advance(hub.posture_minimum.max_age_s + 1)
    assert not engine.is_current(table, clock.now())
    d = engine.decide("venue-b", "report_fill", "oms/fills")
    assert not d.allowed and d.policy_ids == ("guard.posture",)
    unknown_host = HostPostureAgent("oms")  # a key nobody registered
    assert not hub.report_posture(unknown_host.report(clock.now())).ok


@pytest.mark.parametrize("kind, value_of", [
    (SPIFFE_ID, lambda topo: topo.spiffe_id(MEANREV)),
    (FINGERPRINT, lambda topo: "ab" * 32),
    (CODE_DIGEST, lambda topo: "cd" * 32),
    (ADDRESS, lambda topo: "10.9.8.7"),
])
def test_indicator_match_forbids(engine, hub, topology, received, kind, value_of):
    hub.observe(MEANREV, fingerprint="AB" * 32, code_digest="cd" * 32, address="10.9.8.7")
    before = _epochs(engine, topology)
    hub.load_threat_intel(indicator_bundle([(kind, value_of(topology))]), origin="isac-feed")
    _assert_only(engine, topology, before, [MEANREV])
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert not d.allowed and d.policy_ids == ("guard.threat-intel",)
    assert engine.decide(MOMENTUM, "subscribe", "md/AAPL").allowed


def test_observation_after_the_bundle_also_matches(engine, hub):
    hub.load_threat_intel(indicator_bundle([(ADDRESS, "192.0.2.66")]))
    assert engine.decide(MOMENTUM, "subscribe", "md/AAPL").allowed
    hub.observe(MOMENTUM, address="192.0.2.66")
    assert not engine.decide(MOMENTUM, "subscribe", "md/AAPL").allowed


@pytest.mark.parametrize("bundle", [
    "not json at all",
    '{"type": "bundle", "id": "bundle--1", "objects": []}',
    '{"type": "bundle", "id": "bundle--6f0b5d6e-4a8f-4c49-9b1b-2f6a3a6c0d11", "objects": ['
    '{"type": "indicator", "spec_version": "2.1", "id": "indicator--0c2e2a54-6a6e-4d5a-9c43-6f3f8e0a1b22",'
    ' "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z", "pattern": "[ipv4-addr:value = ",'
    ' "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z"}]}',
    b"\xff\xfe",
])
def test_bad_bundle_is_refused_and_the_last_good_set_stays(engine, hub, bundle, sink):
    hub.load_threat_intel(indicator_bundle([(SPIFFE_ID, engine.topology.spiffe_id(MEANREV))]))
    with pytest.raises(SignalError) as info:
        hub.load_threat_intel(bundle)
    assert info.value.reason.startswith("signal.intel.")
    assert not engine.decide(MEANREV, "subscribe", "md/JPM").allowed
    assert sink.of_kind(Kind.SIGNAL_REFUSED)[-1].detail["signal"] == "threat_intel"


def test_kill_switch_states(engine, hub, topology, received):
    before = _epochs(engine, topology)
    hub.set_kill_switch("agent", MEANREV, "HALTED", origin="user:bob")
    _assert_only(engine, topology, before, [MEANREV])
    halted = engine.decide(MEANREV, "submit_order", "risk/orders")
    assert not halted.allowed and halted.policy_ids == ("guard.kill-switch-halted",)
    assert engine.decide(MEANREV, "cancel_order", "risk/orders").allowed  # cancels still pass
    assert engine.decide(MOMENTUM, "submit_order", "risk/orders").allowed

    hub.set_kill_switch("agent", MEANREV, "REDUCING")
    assert not engine.decide(MEANREV, "submit_order", "risk/orders").allowed
    assert engine.decide(MEANREV, "submit_order", "risk/orders", {"risk_reducing": True}).allowed
    hub.set_kill_switch("agent", MEANREV, "ACTIVE")

    before = _epochs(engine, topology)
    hub.set_kill_switch("account", "acct-momentum", "HALTED")
    _assert_only(engine, topology, before, [MOMENTUM])
    assert not engine.decide(MOMENTUM, "submit_order", "risk/orders").allowed
    hub.set_kill_switch("account", "acct-momentum", "ACTIVE")

    g = engine.global_epoch
    hub.set_kill_switch("firm", "", "HALTED")
    assert engine.global_epoch == g + 1 and received[-1].principal is None
    for svc, action, res in ((MEANREV, "submit_order", "risk/orders"), ("pre-trade-risk", "route_order", "router/orders"),
                             ("order-router", "execute", "venue-a/orders")):
        assert not engine.decide(svc, action, res).allowed
    assert engine.decide("order-router", "cancel_order", "venue-a/orders").allowed
    with pytest.raises(SignalError):
        hub.set_kill_switch("firm", "", "PAUSED")
    with pytest.raises(SignalError):
        hub.set_kill_switch("desk", "x", "HALTED")


def test_risk_score_thresholds(engine, hub, topology, received):
    before = _epochs(engine, topology)
    hub.set_risk_score(MEANREV, 75, origin="analytics")
    _assert_only(engine, topology, before, [MEANREV])
    assert not engine.decide(MEANREV, "submit_order", "risk/orders").allowed
    assert engine.decide(MEANREV, "subscribe", "md/JPM").allowed
    hub.set_risk_score(MEANREV, 95)
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert not d.allowed and d.policy_ids == ("guard.risk-critical",)
    hub.set_risk_score(MEANREV, 10)
    assert engine.decide(MEANREV, "submit_order", "risk/orders").allowed


@pytest.mark.parametrize("score", [-1, 101, 50.5, "80", None, True, float("nan")])
def test_risk_score_out_of_range_is_refused_and_kept(engine, hub, score, sink):
    hub.set_risk_score(MEANREV, 75)
    with pytest.raises(SignalError) as info:
        hub.set_risk_score(MEANREV, score)
    assert info.value.reason in ("signal.risk.out_of_range", "signal.risk.not_a_number")
    assert hub.risk.get(engine.topology.spiffe_id(MEANREV)) == 75
    assert sink.of_kind(Kind.SIGNAL_REFUSED)[-1].detail["signal"] == "risk"


def test_unknown_principal_signal_is_refused(hub):
    with pytest.raises(SignalError) as info:
        hub.set_risk_score("spiffe://prod.acme.example/algo/rogue", 50)
    assert info.value.reason == "signal.unknown_principal"


def test_market_session_closes_and_moves_the_global_epoch(engine, hub, clock, received):
    assert engine.decide(MEANREV, "submit_order", "risk/orders").allowed
    g = engine.global_epoch
    hub.set_calendar(MarketCalendar(holidays=frozenset(), weekdays=frozenset()))  # never open
    assert engine.global_epoch == g + 1 and received[-1].principal is None
    d = engine.decide(MEANREV, "submit_order", "risk/orders")
    assert not d.allowed and d.policy_ids == ("guard.market-closed",)
    assert engine.decide(MEANREV, "cancel_order", "risk/orders").allowed
    assert not hub.tick()  # no change, no bump
    assert engine.global_epoch == g + 1


def test_policy_reload_moves_only_the_global_epoch(engine, topology, received):
    from .conftest import POLICY_DIR

    before = _epochs(engine, topology)
    engine.load_dir(POLICY_DIR)
    after = _epochs(engine, topology)
    assert after[0] == before[0] and after[1] == before[1] + 1
    assert received[-1].principal is None and received[-1].reason == "policy.loaded"


def test_tables_are_cached_until_an_epoch_moves(engine, hub, clock):
    a = engine.decision_table(MEANREV, clock.now())
    assert engine.decision_table(MEANREV, clock.now()) is a
    hub.set_risk_score(MOMENTUM, 5)
    assert engine.decision_table(MEANREV, clock.now()) is a
    hub.set_risk_score(MEANREV, 5)
    assert engine.decision_table(MEANREV, clock.now()) is not a


def test_renewed_healthy_posture_moves_no_epoch_and_extends_the_table(engine, hub, topology, clock, received):
    clock.advance(100)
    before = _epochs(engine, topology)
    hub.report_posture(hub.agents["oms"].report(clock.now()))
    assert _epochs(engine, topology) == before and received == []
    table = engine.decision_table("oms", clock.now())
    assert table.expires_at > clock.now() + 100
