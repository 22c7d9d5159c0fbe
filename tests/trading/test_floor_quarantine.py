"""A floor whose one identity is quarantined starts without that service, not at all refused."""

import json
import time

import pytest

from trustfabric.audit.spool import segment_paths
from trustfabric.identity.plane import IdentityPlane
from trustfabric.trading.launcher import SERVICE_QUARANTINED, Floor

from tests.trading.processes import alive

pytestmark = pytest.mark.timeout(90)


@pytest.mark.slow
async def test_a_quarantined_identity_is_left_out_and_the_rest_of_the_floor_starts(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=("settlement", "oms"), collect_audit=False)
    oms = floor.topology.spiffe_id("oms")
    with IdentityPlane(tmp_path) as identity:  # quarantined before the floor starts (no control plane runs)
        identity.revocations.revoke_spiffe_id(oms, time.time(), "quarantine.operator")
    await floor.start()  # today: config.floor.start_failed
    try:
        assert floor.left_out == {"oms": SERVICE_QUARANTINED}
        assert set(floor.processes) == {"settlement"} and floor.processes["settlement"].status == "ready"
        manifest = json.loads(floor.manifest_path.read_text())
        assert manifest["left_out"] == {"oms": SERVICE_QUARANTINED} and "oms" not in manifest["services"]
    finally:
        await floor.stop()
    assert not [p for p in floor.pids() if alive(p)]
    spooled = b"".join(p.read_bytes() for p in segment_paths(tmp_path / "spool" / "control-plane"))
    assert SERVICE_QUARANTINED.encode() in spooled and oms.encode() in spooled  # the audit event
