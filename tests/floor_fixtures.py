"""Shared fixtures: the reference floor's topology, a live signal hub with healthy hosts, and an engine over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.signals.host_agent import attest_hosts
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture
def topology() -> Topology:
    return Topology.load(POLICY_DIR / "floor.toml")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def hub(topology, clock, sink) -> SignalHub:
    hub = SignalHub(topology, clock=clock, emitter=Emitter("signal-hub", sink, clock),
                    calendar=MarketCalendar.around_the_clock())
    hosts = {s.host for s in topology.services.values()} | {"desk-1"}
    hub.agents = attest_hosts(hub, sorted(hosts), clock.now())
    for name in topology.people:
        hub.record_authentication(name, mfa=True, step_up_at=None, device_host="desk-1")
    return hub


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def engine(topology, hub, bus, clock, sink) -> PolicyEngine:
    engine = PolicyEngine(topology, hub, bus=bus, emitter=Emitter("policy-engine", sink, clock), clock=clock)
    engine.load_dir(POLICY_DIR)
    return engine


def spiffe(topology: Topology, service: str) -> str:
    return topology.spiffe_id(service)
