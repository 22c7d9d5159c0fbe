"""The floor over several hosts: the deployment file's refusals, and a real floor placed over three loopback hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustfabric.errors import ConfigError
from trustfabric.policy.topology import Topology
from trustfabric.trading import deployment as D

EXAMPLE = Path(__file__).parents[2] / "deploy" / "three-hosts.toml"
TOPOLOGY = Topology.load(Topology.default_path())


def test_the_example_places_every_service_of_the_floor_on_three_hosts():
    placed = D.load(EXAMPLE, TOPOLOGY)
    assert [h.address for h in placed.hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert placed.address_of("algo-momentum") == "127.0.0.2" and placed.address_of("venue-a") == "127.0.0.4"
    assert placed.host_of("oms") == "risk-routing-oms" and placed.address_of("no-such") == placed.control


@pytest.mark.parametrize("data, reason", [
    ({"host": [{"name": "a", "address": "127.0.0.2", "services": ["no-such-service"]}]}, "deploy.unknown_service"),
    ({"host": [{"name": "a", "address": "127.0.0.2", "services": ["oms"]},
               {"name": "b", "address": "127.0.0.3", "services": ["oms"]}]}, "deploy.placed_twice"),
    ({"host": [{"name": "a", "address": "127.0.0.2"}, {"name": "a", "address": "127.0.0.3"}]}, "deploy.duplicate_host"),
    ({"host": [{"name": "a", "address": "127.0.0.1"}]}, "deploy.duplicate_host"),  # the control plane's
    ({"host": [{"name": "a", "address": "10.0.0.7"}]}, "deploy.not_loopback"),
    ({"host": [{"name": "a", "address": "venue.example"}]}, "deploy.bad_address"),
    ({"control": "192.168.1.1"}, "deploy.not_loopback"),
    ({"bus": "nats://127.0.0.1:4222"}, "deploy.bus_not_tls"),
    ({"host": "a"}, "deploy.malformed"),
    ({"host": [{"address": "127.0.0.2"}]}, "deploy.malformed"),
])
def test_a_bad_deployment_is_refused_with_its_reason(data, reason):
    with pytest.raises(ConfigError) as refused:
        D.parse(data, TOPOLOGY)
    assert refused.value.reason == reason


MACHINES = Path(__file__).parents[2] / "deploy" / "machines.toml"


def test_the_machine_by_machine_example_fixes_every_port_and_the_replicas():
    placed = D.load(MACHINES, TOPOLOGY)
    placed.require_fixed()
    assert [(r.name, r.bootstrap_port, r.control_port) for r in placed.replicas] == [("cp-1", 7401, 7402),
                                                                                     ("cp-2", 7403, 7404)]
    ports = placed.ports()
    assert ports["market-data"] == 7500 and ports["algo-meanrev"] == 7504 and ports["venue-b"] == 7702
    assert placed.metrics_ports()["venue-b"] == 7703 and len(set(ports.values())) == len(ports)
    assert placed.replica("cp-2").address == "127.0.0.1" and placed.host("venues").services == ("venue-a", "venue-b")


REPLICA = {"name": "cp-1", "address": "127.0.0.1", "bootstrap_port": 7401, "control_port": 7402}
HOST = {"name": "a", "address": "127.0.0.2", "services": ["oms"], "port_base": 7600}


@pytest.mark.parametrize("data, reason", [
    ({"host": [HOST]}, "deploy.ports_required"),  # no replica
    ({"replica": [REPLICA], "host": [dict(HOST, port_base=0)]}, "deploy.ports_required"),
    ({"replica": [REPLICA, dict(REPLICA, name="cp-2", address="127.0.0.9", bootstrap_port=7403, control_port=7404)],
      "host": [HOST]}, "deploy.replicas_one_address"),
])
def test_a_file_that_cannot_run_machine_by_machine_is_refused(data, reason):
    with pytest.raises(ConfigError) as refused:
        D.parse(data, TOPOLOGY).require_fixed()
    assert refused.value.reason == reason


@pytest.mark.parametrize("data, reason", [
    ({"replica": [dict(REPLICA, control_port=80)]}, "deploy.bad_port"),
    ({"replica": [dict(REPLICA, control_port="7402")]}, "deploy.bad_port"),
    ({"replica": [{k: v for k, v in REPLICA.items() if k != "bootstrap_port"}]}, "deploy.bad_port"),
    ({"replica": [REPLICA, REPLICA]}, "deploy.duplicate_replica"),
    ({"replica": [dict(REPLICA, control_port=7401)]}, "deploy.duplicate_replica"),
    ({"replica": [dict(REPLICA, address="10.1.1.1")]}, "deploy.not_loopback"),
    ({"replica": {"name": "x"}}, "deploy.malformed"),
    ({"host": [dict(HOST, port_base=65535)]}, "deploy.bad_port"),
])
def test_bad_replicas_and_ports_are_refused(data, reason):
    with pytest.raises(ConfigError) as refused:
        D.parse(data, TOPOLOGY)
    assert refused.value.reason == reason


def test_a_host_with_the_gateway_or_a_split_posture_host_cannot_be_enrolled_and_unknown_names_are_refused():
    from trustfabric.trading.hosts import topology_hosts

    placed = D.load(MACHINES, TOPOLOGY)
    assert topology_hosts(placed, TOPOLOGY, "venues") == {"venue-a": ["venue-a"], "venue-b": ["venue-b"]}
    edge = D.parse({"replica": [REPLICA], "host": [dict(HOST, services=["fix-gateway"])]}, TOPOLOGY)
    for deployment, host, reason in ((edge, "a", "deploy.runner_edge_service"),
                                     (placed, "nowhere", "deploy.unknown_host")):
        with pytest.raises(ConfigError) as refused:
            topology_hosts(deployment, TOPOLOGY, host)
        assert refused.value.reason == reason
    with pytest.raises(ConfigError) as refused:
        placed.replica("cp-9")
    assert refused.value.reason == "deploy.unknown_replica"


def test_real_hosts_are_allowed_only_when_asked_and_a_broken_file_is_refused(tmp_path):
    assert D.parse({"host": [{"name": "a", "address": "10.0.0.7", "services": ["oms"]}]}, TOPOLOGY,
                   loopback_only=False).address_of("oms") == "10.0.0.7"
    bad = tmp_path / "d.toml"
    bad.write_text("host = [")
    with pytest.raises(ConfigError) as refused:
        D.load(bad, TOPOLOGY)
    assert refused.value.reason == "deploy.malformed"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_floor_over_three_hosts_trades_with_each_service_on_its_hosts_address(tmp_path):
    from trustfabric.trading.demo import run_demo

    result = await run_demo(tmp_path, duration_s=8.0, seed=7, deployment=D.load(EXAMPLE, TOPOLOGY))
    assert result["fills"] > 0 and result["fail_open"] == 0
    # the compromised algo on host 1 reaching venues on host 3, settlement and the router on host 2: refused
    assert result["attack_attempts"] > 0 and result["attack_successes"] == 0, result["attempts"]
    assert any(i["contained"] for i in result["incidents"]), result["incidents"]
    manifest = json.loads((tmp_path / "floor" / "runtime.json").read_text())
    assert manifest["deployment"]["hosts"] == {"md-algos": "127.0.0.2", "risk-routing-oms": "127.0.0.3",
                                               "venues-edge": "127.0.0.4"}
    assert {e["address"] for e in manifest["services"].values()} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
