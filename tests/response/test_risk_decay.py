"""Risk from a burst of rejections decays: an honest algo heals without a person; a quarantine does not."""

from __future__ import annotations

import pytest

from trustfabric.clock import FakeClock
from trustfabric.response.adapters import SignalHubRiskSink
from trustfabric.response.errors import ResponseConfigError
from trustfabric.response.policy import TIGHTEN
from trustfabric.response.risk_decay import DecayingRisk, RiskDecayConfig, decayed_level
from trustfabric.signals.hub import SignalHub

from .conftest import make_rig

CONFIG = RiskDecayConfig(hold_s=60.0, half_life_s=60.0, forget_below=1.0, publish_step=5.0, tick_every_s=1.0)


def _risk_burst(rig, principal: str, n: int = 25) -> None:
    """Pre-trade risk rejecting ``n`` orders within a quarter second (credit limit: a business rule)."""
    for i in range(n):
        rig.clock.advance(0.01)
        rig.engine.observe(rig.factory.decision(principal, "risk.check", "risk/orders", False,
                                                reason="risk.credit_agent", trace_id=f"ord-{i}"))


@pytest.fixture()
def hub_rig(floor, topology):
    rig = make_rig(floor, risk_decay=CONFIG)
    hub = SignalHub(topology, clock=rig.clock)
    rig.engine.risk.sink = SignalHubRiskSink(hub)  # the policy context's risk, as on the floor
    return rig, hub


def test_decayed_level_holds_then_halves():
    assert decayed_level(80.0, 100.0, 150.0, CONFIG) == 80.0  # inside the hold
    assert decayed_level(80.0, 100.0, 220.0, CONFIG) == pytest.approx(40.0)  # one half-life past the hold
    assert decayed_level(80.0, 100.0, 280.0, CONFIG) == pytest.approx(20.0)


def test_burst_of_risk_rejections_raises_the_score_which_falls_back_without_a_person(hub_rig, sid):
    rig, hub = hub_rig
    algo = sid("algo-meanrev")
    _risk_burst(rig, algo)
    [(alert, action)] = rig.store.alerts(principal=algo)
    assert action == TIGHTEN and not rig.containment.is_quarantined(algo)
    assert hub.risk.get(algo) == 80  # tightened: above the policies' 70 "elevated" threshold

    rig.clock.advance(59.0)
    rig.engine.decay_risk()
    assert hub.risk.get(algo) == 80  # still held: the burst was just now

    rig.clock.advance(61.0)  # one half-life past the hold
    moved = rig.engine.decay_risk()
    assert [p for p, _ in moved] == [algo] and hub.risk.get(algo) == 40

    rig.clock.advance(600.0)  # ten half-lives: the alert part is gone, the score is back to normal
    rig.engine.decay_risk()
    assert hub.risk.get(algo) == 0
    assert rig.engine.risk.tracked() == {}
    assert rig.policy.calls == []  # no person, no release, no quarantine at any point


def test_decay_is_applied_on_the_engines_own_events(hub_rig, sid):
    rig, hub = hub_rig
    algo, other = sid("algo-meanrev"), sid("algo-momentum")
    _risk_burst(rig, algo)
    rig.clock.advance(60.0 + 600.0)
    rig.engine.observe(rig.factory.decision(other, "submit_order", "risk/orders", True))  # any event ticks
    assert hub.risk.get(algo) == 0


def test_a_new_burst_while_decaying_raises_it_again_and_restarts_the_hold(hub_rig, sid):
    rig, hub = hub_rig
    algo = sid("algo-meanrev")
    _risk_burst(rig, algo)
    rig.clock.advance(120.0)
    rig.engine.decay_risk()
    assert hub.risk.get(algo) == 40
    rig.clock.advance(61.0)  # past the alert folding window: a new burst is a new alert
    _risk_burst(rig, algo)
    assert hub.risk.get(algo) == 80
    rig.clock.advance(59.0)
    rig.engine.decay_risk()
    assert hub.risk.get(algo) == 80


def test_decay_never_undoes_a_quarantine(hub_rig, sid):
    rig, hub = hub_rig
    algo = sid("algo-meanrev")
    _risk_burst(rig, algo)
    # then it reaches for settlement: lateral movement, quarantined at once
    rig.engine.observe(rig.factory.decision(algo, "settle", "settlement/ledger", False))
    assert rig.containment.is_quarantined(algo)
    rig.clock.advance(3600.0)
    rig.engine.decay_risk()
    assert hub.risk.get(algo) == 0  # the score healed...
    assert rig.containment.is_quarantined(algo)  # ...the quarantine did not
    assert rig.policy.calls == [(algo, True)] and algo in rig.policy.quarantined
    assert not rig.policy.decide(algo, "submit_order", "risk/orders")
    assert rig.revoker.revoked and not any(p.open(algo) for p in rig.points)


def test_the_baseline_level_is_kept_under_a_decayed_alert():
    clock = FakeClock()
    seen: dict[str, tuple[float, str]] = {}

    class Sink:
        def set_risk(self, principal, score, source):
            seen[principal] = (score, source)

    risk = DecayingRisk(Sink(), clock, CONFIG)
    risk.set_risk("p", 30.0, "response.baseline")
    risk.set_risk("p", 80.0, "response.alert")
    assert seen["p"][0] == 80.0
    clock.advance(10_000.0)
    risk.tick()
    assert seen["p"][0] == 30.0 and risk.score("p") == 30.0  # back to the baseline's own level, not to 0


@pytest.mark.parametrize("bad", [{"half_life_s": 0.0}, {"hold_s": -1.0}, {"publish_step": 0.0},
                                 {"half_life_s": float("nan")}, {"hold_s": float("inf")}])
def test_bad_decay_config_is_refused(bad):
    with pytest.raises(ResponseConfigError):
        RiskDecayConfig(**bad)


def test_a_raise_the_sink_failed_to_take_is_reported_and_retried_not_taken_as_published():
    clock = FakeClock()
    seen: dict[str, float] = {}
    failing = [True]

    class Sink:
        def set_risk(self, principal, score, source):
            if failing[0]:
                raise OSError("policy engine unreachable")
            seen[principal] = score

    risk = DecayingRisk(Sink(), clock, CONFIG)
    with pytest.raises(OSError):  # the caller (engine, baseline) counts it
        risk.set_risk("p", 80.0, "response.alert")
    assert "p" not in seen
    clock.advance(CONFIG.tick_every_s)
    assert risk.tick() == [] and risk.sink_errors == 1  # still failing: nothing counted as published
    failing[0] = False
    clock.advance(CONFIG.tick_every_s)
    assert risk.tick() == [("p", 80.0)] and seen["p"] == 80.0  # the raise reaches the sink on the next tick
