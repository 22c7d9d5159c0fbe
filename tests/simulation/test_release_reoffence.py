"""A released principal works again, and a re-offence after its release is detected and contained afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustfabric.policy.topology import Topology
from trustfabric.response.containment import OfficerFacts
from trustfabric.response.errors import ReleaseRefused
from trustfabric.response.floor_map import FloorMap
from tests.response.conftest import make_rig

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return Topology.load(POLICIES / "floor.toml")


def test_reoffence_after_release_is_not_folded(topology):
    rig = make_rig(FloorMap.from_topology(topology))
    algo = topology.spiffe_id("algo-meanrev")
    probe = lambda: rig.factory.decision(algo, "execute", "venue-a/orders", False)  # noqa: E731
    assert rig.engine.observe(probe())
    assert rig.containment.is_quarantined(algo)
    for ep in rig.points:
        ep.flush_acks()
    officer = OfficerFacts(name="dave", roles=("security_officer",), step_up_at=rig.clock.now())
    rig.engine.release(algo, officer)
    assert not rig.containment.is_quarantined(algo)
    assert rig.policy.decide(algo, "submit_order", "risk/orders")  # works again
    rig.clock.advance(1.0)  # well inside the folding window
    again = rig.engine.observe(probe())
    assert again, "a re-offence after a release must raise a fresh alert"
    assert rig.containment.is_quarantined(algo)


def test_release_without_fresh_step_up_is_refused_and_keeps_the_quarantine(topology):
    rig = make_rig(FloorMap.from_topology(topology))
    algo = topology.spiffe_id("algo-meanrev")
    rig.engine.observe(rig.factory.decision(algo, "execute", "venue-a/orders", False))
    stale = OfficerFacts(name="dave", roles=("security_officer",), step_up_at=rig.clock.now() - 3600)
    with pytest.raises(ReleaseRefused):
        rig.engine.release(algo, stale)
    not_officer = OfficerFacts(name="alice", roles=("trader",), step_up_at=rig.clock.now())
    with pytest.raises(ReleaseRefused):
        rig.engine.release(algo, not_officer)
    assert rig.containment.is_quarantined(algo)
