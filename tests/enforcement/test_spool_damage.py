"""An enforcement point whose spool finds its own segment damaged lets nothing more leave (fail closed)."""

from __future__ import annotations

import pytest

from trustfabric.audit.errors import AuditUnavailable
from trustfabric.audit.spool import DURABILITY_WRITE, FRAME_HEADER, Spool, segment_paths
from trustfabric.enforcement.pep import EnforcementPoint

from .conftest import ALGO, RISK
from .fakes import make_peer


def test_the_enforcement_point_on_a_damaged_spool_refuses_what_it_would_log(world, tmp_path):
    spool = Spool(tmp_path / "pep", "pep-risk", clock=world.clock, durability=DURABILITY_WRITE,
                  sync_interval_s=3600, scrub_interval_s=3600)
    pep = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=spool)
    peer = make_peer(ALGO)
    session = pep.open_session(peer, world.token(peer))
    for _ in range(3):
        pep.check(session, "read", "risk/limits")
        pep.flush_decisions()
    segment = segment_paths(tmp_path / "pep")[0]
    data = bytearray(segment.read_bytes())
    data[FRAME_HEADER.size + 3] ^= 0x01  # inside the first record
    segment.write_bytes(bytes(data))
    assert spool.scrub(whole=True) is not None and spool.refusing
    assert pep.check(session, "read", "risk/limits")[0] is True  # decided; its record is not durable yet
    with pytest.raises(AuditUnavailable):
        pep.flush_decisions()  # so the transport's flush hook fails: the reply never leaves
    assert pep.check(session, "read", "risk/limits") == (False, "enforcement.audit_unavailable")
    assert pep.fail_open == 0
    spool.close()
