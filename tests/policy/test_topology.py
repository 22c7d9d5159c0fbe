"""The floor manifest loads into frozen data, and the policies grant exactly its flows."""

from __future__ import annotations

import dataclasses

import pytest

from trustfabric.policy.errors import TopologyError
from trustfabric.policy.topology import Topology

from .conftest import POLICY_DIR


def test_floor_has_the_reference_services_and_symbols(topology):
    assert set(topology.services) >= {
        "market-data", "algo-meanrev", "algo-momentum", "pre-trade-risk", "order-router", "venue-a", "venue-b",
        "oms", "risk-dashboard", "settlement", "fix-gateway", "analytics"}
    assert len(topology.symbols) >= 20
    assert topology.services["algo-meanrev"].symbols.isdisjoint(topology.services["algo-momentum"].symbols)
    assert topology.spiffe_id("algo-meanrev") == "spiffe://prod.acme.example/algo/algo-meanrev"
    assert 80 <= len(topology.candidates()) <= 120


def test_trust_domain_is_a_parameter():
    topo = Topology.load(POLICY_DIR / "floor.toml", firm="other.example")
    assert topo.trust_domain == "prod.other.example"
    assert topo.resolve("spiffe://prod.other.example/oms/oms").name == "oms"
    assert topo.resolve("spiffe://prod.acme.example/oms/oms") is None


def test_topology_is_frozen(topology):
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.services["oms"].segment = "x"  # type: ignore[misc]


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: r["flow"].append({"principal": "nobody", "actions": ["publish"], "resources": ["md/AAPL"]}),
     "policy.topology.unknown"),
    (lambda r: r["flow"].append({"principal": "oms", "actions": ["fly"], "resources": ["md/AAPL"]}),
     "policy.topology.unknown"),
    (lambda r: r["flow"].append({"principal": "oms", "actions": ["settle"], "resources": ["md/AAPL"]}),
     "policy.topology.unknown"),
    (lambda r: r["service"][1].update(symbols=["NOPE"]), "policy.topology.unknown"),
    (lambda r: r.pop("market_data"), "policy.topology.malformed"),
])
def test_bad_manifest_is_refused(mutate, reason):
    import tomllib

    raw = tomllib.loads((POLICY_DIR / "floor.toml").read_text())
    mutate(raw)
    with pytest.raises(TopologyError) as info:
        Topology.from_dict(raw)
    assert info.value.reason == reason


def test_unreadable_manifest(tmp_path):
    bad = tmp_path / "floor.toml"
    bad.write_text("[[service]\nname=")
    with pytest.raises(TopologyError) as info:
        Topology.load(bad)
    assert info.value.reason == "policy.topology.syntax"


def test_policies_grant_exactly_the_manifest_flows(engine, hub, topology, clock):
    """Least privilege: with every signal healthy, allowed pairs == declared flows, for every principal."""
    for name in topology.people:
        hub.record_authentication(name, mfa=True, step_up_at=clock.now(), device_host="desk-1")
    for key in topology.principal_keys():
        ref = topology.resolve(key)
        table = engine.decision_table(key, clock.now())
        allowed = {pair for pair, d in table.entries.items() if d.allowed}
        assert allowed == set(topology.flows_of(ref)), key
        assert set(table.entries) == set(topology.candidates())


def test_analytics_and_developer_have_no_business_on_the_floor(engine, topology, clock):
    """The developer nothing; analytics only the trade history, tokenized (the data vault's analyse)."""
    for key, expected in ((topology.spiffe_id("analytics"), {("data_analyse", "data/oms/trade-history")}),
                          ("user:erin", set())):
        table = engine.decision_table(key, clock.now())
        assert {pair for pair, d in table.entries.items() if d.allowed} == expected
