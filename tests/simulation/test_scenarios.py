"""Scenarios as data: the reference set loads against the floor's topology; bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustfabric.policy.topology import Topology
from trustfabric.simulation.errors import ScenarioError
from trustfabric.simulation.scenarios import CATEGORIES, load_scenarios, parse_scenarios, select

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return Topology.load(POLICIES / "floor.toml")


def test_reference_scenarios_cover_every_category(topology):
    scenarios = load_scenarios(topology)
    assert {s.category for s in scenarios} == set(CATEGORIES)
    names = {s.name for s in scenarios}
    for required in ("algo-direct-venue", "algo-settlement-read", "algo-foreign-streams", "algo-router-bypass",
                     "algo-order-flood", "analytics-lateral", "insider-client-orders", "insider-settlement-booking",
                     "supply-chain-strategy", "stolen-token-replay", "stolen-cert-other-host", "rogue-deployment"):
        assert required in names


def test_select_by_name_and_unknown_name_refused(topology):
    scenarios = load_scenarios(topology)
    assert [s.name for s in select(scenarios, "rogue-deployment")] == ["rogue-deployment"]
    assert select(scenarios, "all") == scenarios
    with pytest.raises(ScenarioError) as err:
        select(scenarios, "no-such-thing")
    assert err.value.reason == "scenario.unknown"


def _one(**overrides):
    scenario = {"name": "x", "category": "insider", "foothold": {"kind": "workload", "identity": "analytics"},
                "attempts": [{"target": "oms", "action": "read_positions", "resource": "oms/positions"}]}
    scenario.update(overrides)
    return {"scenario": [scenario]}


@pytest.mark.parametrize("overrides", [
    {"category": "weather"},
    {"foothold": {"kind": "workload", "identity": "no-such-service"}},
    {"foothold": {"kind": "person", "identity": "mallory", "device": "desk-1"}},
    {"foothold": {"kind": "person", "identity": "alice"}},
    {"foothold": {"kind": "build", "identity": "oms", "digest": "whatever"}},
    {"foothold": {"kind": "stolen_token", "identity": "oms", "as": "nobody"}},
    {"attempts": []},
    {"attempts": [{"target": "oms", "action": "teleport", "resource": "oms/positions"}]},
    {"attempts": [{"target": "oms", "action": "read_positions", "resource": "oms/nothing"}]},
    {"attempts": [{"target": "oms", "action": "read_positions", "resource": "oms/positions", "count": 0}]},
    {"attempts": [{"target": "oms", "action": "read_positions", "resource": "oms/positions", "method": "magic"}]},
    {"attempts": [{"target": "oms", "action": "read_positions", "resource": "oms/positions",
                   "method": "forged_approval"}]},
    {"attempts": [{"target": "oms", "action": "join", "resource": "bootstrap", "method": "join"}]},
])
def test_bad_scenarios_are_refused(topology, overrides):
    with pytest.raises(ScenarioError):
        parse_scenarios(_one(**overrides), topology)


def test_duplicate_names_and_unreadable_file_refused(topology, tmp_path):
    doubled = _one()
    doubled["scenario"].append(dict(doubled["scenario"][0]))
    with pytest.raises(ScenarioError):
        parse_scenarios(doubled, topology)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[scenario]\n")
    with pytest.raises(ScenarioError):
        load_scenarios(topology, bad)
