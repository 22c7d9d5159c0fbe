"""The PEP on a durable spool: compact decision records on the hop, the same AuditEventV1 in the central log."""

from __future__ import annotations

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind, MemorySink
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import DURABILITY_WRITE, Spool
from trustfabric.enforcement.pep import EnforcementPoint

from .conftest import ALGO, RISK
from .fakes import make_peer

SAME = ("kind", "principal", "action", "resource", "decision", "reason", "policy_ids", "epoch", "trace_id",
        "peer_fingerprint", "detail")


def _traffic(world, pep: EnforcementPoint) -> None:
    peer = make_peer(ALGO)
    session = pep.open_session(peer, world.token(peer))
    pep.check(session, "submit_order", "risk/orders", 500.0, "AAPL")
    pep.check(session, "submit_order", "risk/orders", 5e9, "AAPL")  # over the notional cap
    pep.check(session, "submit_order", "risk/orders", 10.0, "TSLA")  # outside the symbol set
    pep.check(session, "cancel_all", "risk/orders")  # forbidden
    pep.check(None, "read", "risk/limits")  # no session
    pep.flush_decisions()
    pep.check(session, "read", "risk/limits")
    pep.flush_decisions()


def test_spooled_compact_decisions_reach_the_log_as_the_same_events(world, tmp_path) -> None:
    spool = Spool(tmp_path / "spool" / "pep-risk", "pep-risk", clock=world.clock, durability=DURABILITY_WRITE)
    spooled = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=spool)
    memory = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=MemorySink())
    _traffic(world, spooled)
    _traffic(world, memory)
    assert spool.records_flushed == spool.records_in  # everything handed to the kernel, none held
    spool.close()
    log = open_log(tmp_path / "audit")
    Collector(log, tmp_path / "spool").collect_once()
    central = [r.event() for r in log.store.records()]
    assert [e.seq for e in central] == list(range(1, len(central) + 1))  # one sequence for both kinds
    assert all(e.source == "pep-risk" for e in central)
    expected = [e for e in memory.sink.events if e.kind in (Kind.DECISION, Kind.SESSION_OPEN)]
    got = [e for e in central if e.kind in (Kind.DECISION, Kind.SESSION_OPEN)]
    def strip(e):  # session ids differ between the two PEPs; the rest must be identical
        detail = {k: v for k, v in e.detail.items() if k != "session"} if e.kind == Kind.DECISION else None
        return tuple(getattr(e, f) for f in SAME if f != "detail") + (detail,)

    assert [strip(e) for e in got] == [strip(e) for e in expected]
    assert all("session" in e.detail for e in got if e.kind == Kind.DECISION and e.principal)
    decisions = [e.decision for e in got if e.kind == Kind.DECISION]
    assert decisions == ["allow", "deny", "deny", "deny", "deny", "allow"]
    assert spooled.fail_open == memory.fail_open == 0
    log.close()


def test_spool_refusing_denies_and_keeps_the_records(world, tmp_path) -> None:
    import errno

    broken = [False]

    def write(fd, data):
        if broken[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        import os
        return os.write(fd, data)

    spool = Spool(tmp_path / "pep", "pep-risk", clock=world.clock, durability=DURABILITY_WRITE, write=write,
                  sync_interval_s=3600)
    pep = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=spool)
    peer = make_peer(ALGO)
    session = pep.open_session(peer, world.token(peer))
    broken[0] = True
    assert pep.check(session, "read", "risk/limits")[0] is True
    try:
        pep.flush_decisions()
        raise AssertionError("a failed audit write must not pass")
    except Exception as exc:  # noqa: BLE001
        assert "refusing" in str(exc) or getattr(exc, "reason", "").startswith("audit")
    assert pep.audit_down
    assert pep.check(session, "read", "risk/limits") == (False, "enforcement.audit_unavailable")
    assert spool.counters().buffered >= 1  # the allow's record is held, not dropped
    assert pep.fail_open == 0
