from __future__ import annotations

from dataclasses import dataclass

import pytest

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.topology import Topology
from trustfabric.response.containment import Containment
from trustfabric.response.engine import ResponseEngine
from trustfabric.response.floor_map import FloorMap
from trustfabric.response.incidents import MemoryIncidentStore

from .fakes import FakeCloser, FakeEnforcementPoint, FakePolicyControl, FakeRevoker, StreamFactory


@pytest.fixture(scope="session")
def topology() -> Topology:
    return Topology.load(Topology.default_path())


@pytest.fixture(scope="session")
def floor(topology) -> FloorMap:
    return FloorMap.from_topology(topology)


@pytest.fixture()
def sid(topology):
    return topology.spiffe_id


@dataclass
class Rig:
    clock: FakeClock
    bus: InProcessBus
    sink: MemorySink
    revoker: FakeRevoker
    policy: FakePolicyControl
    closer: FakeCloser
    containment: Containment
    points: list[FakeEnforcementPoint]
    engine: ResponseEngine
    factory: StreamFactory
    store: MemoryIncidentStore


def make_rig(floor: FloorMap, *, points: int = 3, revoker: FakeRevoker | None = None, **engine_kw) -> Rig:
    clock = FakeClock()
    bus = InProcessBus()
    sink = MemorySink()
    emitter = Emitter("response", sink, clock)
    revoker = revoker or FakeRevoker()
    policy = FakePolicyControl(floor, bus)
    closer = FakeCloser()
    store = MemoryIncidentStore()
    containment = Containment(revoker, policy, closer=closer, risk=policy, emitter=emitter, clock=clock,
                              store=store)
    eps = [FakeEnforcementPoint(f"pep-{i}", bus, containment, clock) for i in range(points)]
    engine = ResponseEngine(floor, containment, risk=policy, tightener=policy, emitter=emitter, clock=clock,
                            **engine_kw)
    return Rig(clock, bus, sink, revoker, policy, closer, containment, eps, engine, StreamFactory(clock), store)


@pytest.fixture()
def rig(floor) -> Rig:
    return make_rig(floor)
