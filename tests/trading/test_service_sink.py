"""A floor service's audit sink: decisions take the spool's compact path; denials reach the response engine."""

from __future__ import annotations

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.trading.services.sink import ServiceSink

from tests.enforcement.conftest import ALGO, RISK, World
from tests.enforcement.fakes import make_peer


def test_decisions_are_compact_and_only_denials_are_forwarded_with_the_central_ids(tmp_path) -> None:
    world = World()
    spool = Spool(tmp_path / "spool" / "pre-trade-risk", "pre-trade-risk", clock=world.clock)
    sink = ServiceSink(spool)
    sink.forward = True
    woken = []
    sink.on_security = lambda: woken.append(1)
    pep = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=sink)
    assert pep.events is sink  # the PEP's own events go through the sink (forwarded too)
    peer = make_peer(ALGO)
    session = pep.open_session(peer, world.token(peer))
    assert pep.check(session, "submit_order", "risk/orders", 500.0, "AAPL")[0] is True
    pep.flush_decisions()  # one decision: the single-write path
    assert pep.check(session, "cancel_all", "risk/orders")[0] is False  # forbidden
    assert pep.check(session, "submit_order", "risk/orders", 10.0, "TSLA")[0] is False  # symbol set
    assert pep.check(session, "read", "risk/limits")[0] is True
    pep.flush_decisions()  # a batch
    spool.close()

    forwarded = [e for e in sink.security if e.kind == Kind.DECISION]
    assert [e.decision for e in forwarded] == ["deny", "deny"]  # the allows are not the response engine's
    assert woken
    log = open_log(tmp_path / "audit")
    Collector(log, tmp_path / "spool").collect_once()
    central = {e.event_id: e for e in (r.event() for r in log.store.records())}
    decisions = [e for e in central.values() if e.kind == Kind.DECISION]
    assert [e.decision for e in sorted(decisions, key=lambda e: e.seq)] == ["allow", "deny", "deny", "allow"]
    for event in forwarded:  # the very event the central log holds: evidence links resolve
        assert central[event.event_id] == event
    assert pep.fail_open == 0
    log.close()


def test_a_refusing_spool_forwards_nothing_and_the_pep_denies(tmp_path) -> None:
    world = World()
    spool = Spool(tmp_path / "spool" / "pre-trade-risk", "pre-trade-risk", clock=world.clock)
    sink = ServiceSink(spool)
    sink.forward = True
    pep = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, sink=sink)
    peer = make_peer(ALGO)
    session = pep.open_session(peer, world.token(peer))
    spool.close()  # the spool can take nothing more
    before = len(sink.security)
    pep.check(session, "cancel_all", "risk/orders")
    try:
        pep.flush_decisions()
        raise AssertionError("a closed spool must refuse the flush")
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "reason", "").startswith("audit")
    assert len(sink.security) == before
    assert pep.check(session, "read", "risk/limits") == (False, "enforcement.audit_unavailable")
