"""Every scenario on one real zero-trust floor (processes, mTLS, policies, control plane).

One floor is started for the module (the runner's own reuse: effects per trace tag,
quarantines released between scenarios) and the tests read what it measured:

* each scenario: no effect performed for the attacker (0 successes, 0 blast radius),
  detected, and contained at every enforcement point (workloads and people);
* false positives: minutes-long-equivalent normal trading before the attacks raises
  no alert, and no legitimate service other than the attacked identities is ever quarantined;
* a released principal works again (its granted order is performed after release);
* detection keeps working under load: a lateral probe during an order flood is caught.
"""

from __future__ import annotations

import asyncio

import pytest

from trustfabric.policy.topology import Topology
from trustfabric.simulation.runner import People, RunConfig, SimulationRunner
from trustfabric.simulation.scenarios import Attempt, Foothold, Scenario, load_scenarios
from trustfabric.trading.launcher import Floor

from tests.floor_fixtures import POLICY_DIR
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RELEASED_CHECK = Scenario("released-works-again", "compromised_algo", "", Foothold("workload", "algo-meanrev"),
                          (Attempt("pre-trade-risk", "submit_order", "risk/orders"),))
LOAD_FLOOD = Scenario("load-flood", "compromised_algo", "", Foothold("workload", "algo-momentum"),
                      (Attempt("pre-trade-risk", "submit_order", "risk/orders", "flood", 3000),))
LOAD_PROBE = Scenario("load-probe", "lateral_movement", "", Foothold("workload", "analytics"),
                      (Attempt("settlement", "settle", "settlement/ledger"),))


async def _run(home) -> dict:
    topology = Topology.load(POLICY_DIR / "floor.toml")
    scenarios = load_scenarios(topology)
    runner = SimulationRunner(scenarios, RunConfig(home=home, modes=("zero-trust",)))
    floor = Floor(home=home, mode="zero-trust", md_interval_s=0.05, boot_extra={"sim_effects": True})
    await floor.start()
    out: dict = {}
    try:
        people = People(floor.plane, list(topology.people), topology)
        await eventually(lambda: floor.total("risk_received") > 20, 30.0, what="20 orders of normal trading, no attack",
                         interval_s=0.2)
        out["quiet_orders"] = floor.total("risk_received")
        out["quiet_alerts"] = list(floor.plane.alerts)
        out["results"] = [await runner.run_scenario(floor, s, people) for s in scenarios]
        submitted_before = floor.stats().get("algo-meanrev", {}).get("orders_submitted", 0)
        out["released_check"] = await runner.run_scenario(floor, RELEASED_CHECK, people)
        out["released_effects"] = runner.effects(floor, RELEASED_CHECK, 0).performed
        flood, probe = await asyncio.gather(runner.run_scenario(floor, LOAD_FLOOD, people),
                                            runner.run_scenario(floor, LOAD_PROBE, people))
        out["load"] = (flood, probe)
        out["algo_resumed"] = await floor.wait_for(
            lambda: floor.stats().get("algo-meanrev", {}).get("orders_submitted", 0) > submitted_before, 10.0, 0.1)
        out["incident_principals"] = {i.principal for i in floor.plane.containment.store.incidents(limit=1000)}
        out["fail_open"] = floor.total("fail_open")
        out["topology"] = topology
    finally:
        await floor.stop()
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return asyncio.run(_run(tmp_path_factory.mktemp("sim-zt")))


def test_every_scenario_is_refused_detected_and_contained(measured):
    results = measured["results"]
    assert len(results) >= 12
    for r in results:
        assert r.successes == 0, (r.name, r.details)
        assert r.blast_radius == 0, (r.name, r.details)
        assert r.detected, r.name
        assert r.attempts > 0
        assert r.contained and r.ttc_ms is not None, (r.name, r.details)  # people (insiders) too
    assert measured["fail_open"] == 0


def test_normal_trading_raises_no_alert_and_no_legitimate_service_is_quarantined(measured):
    assert measured["quiet_orders"] > 20  # it traded
    assert measured["quiet_alerts"] == []
    topology = measured["topology"]
    attacked = {topology.spiffe_id(n) for n in ("algo-meanrev", "algo-momentum", "analytics", "order-router")}
    assert measured["incident_principals"] <= attacked | {"user:erin", "user:alice"}


def test_a_released_principal_works_again(measured):
    check = measured["released_check"]
    assert check.details["answered_ok"] == 1
    assert measured["released_effects"] == {("submit_order", "risk/orders"): 1}
    assert measured["algo_resumed"]


def test_detection_keeps_working_under_load(measured):
    flood, probe = measured["load"]
    assert flood.attempts == 3000
    assert probe.detected and probe.contained and probe.successes == 0
