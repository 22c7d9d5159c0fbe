"""The hot path: each deny reason, obligations, epochs and TTLs, decision records."""

from __future__ import annotations

import math

from trustfabric.audit.events import Kind
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.pep import DecisionRecord
from trustfabric.policy.decision import REASON_FORBID

from .conftest import ALGO

ORDER = ("submit_order", "risk/orders")


def test_allowed_order_passes_and_is_logged(world):
    _, s = world.open()
    assert world.pep.check(s, *ORDER, notional=50_000, symbol="AAPL") == (True, E.ALLOW)
    assert world.pep.flush_decisions() == 1
    [ev] = world.sink.of_kind(Kind.DECISION)
    assert (ev.principal, ev.action, ev.resource, ev.decision) == (ALGO, *ORDER, "allow")
    assert ev.detail["symbol"] == "AAPL" and ev.detail["notional"] == 50_000


def test_message_before_session_open_denied(world):
    assert world.pep.check(None, *ORDER, notional=1, symbol="AAPL") == (False, E.NO_SESSION)
    world.pep.flush_decisions()
    assert world.sink.of_kind(Kind.DECISION)[0].decision == "deny"


def test_unknown_action_denied(world):
    _, s = world.open()
    assert world.pep.check(s, "drop_tables", "risk/orders") == (False, E.NOT_IN_TABLE)


def test_resource_outside_table_denied(world):
    _, s = world.open()
    assert world.pep.check(s, "submit_order", "settlement/ledger", 1, "AAPL") == (False, E.NOT_IN_TABLE)


def test_forbid_in_table_denied_with_policy_reason(world):
    _, s = world.open()
    assert world.pep.check(s, "cancel_all", "risk/orders") == (False, REASON_FORBID)


def test_notional_cap(world):
    _, s = world.open()
    assert world.pep.check(s, *ORDER, notional=1_000_001, symbol="AAPL") == (False, E.NOTIONAL)
    assert world.pep.check(s, *ORDER, notional=-5, symbol="AAPL") == (False, E.NOTIONAL)
    assert world.pep.check(s, *ORDER, notional=math.nan, symbol="AAPL") == (False, E.NOTIONAL)
    assert world.pep.check(s, *ORDER, notional=1_000_000, symbol="AAPL") == (True, E.ALLOW)


def test_symbol_set(world):
    _, s = world.open()
    assert world.pep.check(s, *ORDER, notional=10, symbol="TSLA") == (False, E.SYMBOL)
    assert world.pep.check(s, *ORDER, notional=10, symbol=None) == (False, E.SYMBOL)


def test_rate_over_the_bucket_denied_then_refills(world):
    _, s = world.open()
    results = [world.pep.check(s, *ORDER, notional=10, symbol="MSFT")[1] for _ in range(7)]
    assert results == [E.ALLOW] * 5 + [E.RATE] * 2  # burst 5
    world.clock.advance(0.1)  # 10/s -> one token
    assert world.pep.check(s, *ORDER, notional=10, symbol="MSFT") == (True, E.ALLOW)
    assert world.pep.check(s, *ORDER, notional=10, symbol="MSFT") == (False, E.RATE)


def test_rate_bucket_refills_no_higher_than_its_burst(world):
    _, s = world.open()
    assert [world.pep.check(s, *ORDER, notional=10, symbol="MSFT")[1] for _ in range(6)] == [E.ALLOW] * 5 + [E.RATE]
    world.clock.advance(100)  # a long idle refills to the burst (5), not to 1,000
    assert [world.pep.check(s, *ORDER, notional=10, symbol="MSFT")[1] for _ in range(6)] == [E.ALLOW] * 5 + [E.RATE]


def test_expired_token_mid_session_refused_until_renewal(world):
    peer, s = world.open(ttl=10)
    assert world.pep.check(s, "read", "risk/limits")[0]
    world.clock.advance(10)
    assert world.pep.check(s, "read", "risk/limits") == (False, E.TOKEN_EXPIRED)
    assert world.pep.check(s, "read", "risk/limits") == (False, E.TOKEN_EXPIRED)
    world.pep.renew(s, world.token(peer, ttl=10))
    assert world.pep.check(s, "read", "risk/limits") == (True, E.ALLOW)


def test_invalidation_during_a_message_redecides_the_next(world):
    _, s = world.open()
    assert world.pep.check(s, *ORDER, notional=10, symbol="AAPL") == (True, E.ALLOW)
    # while that message is being handled, the engine starts forbidding orders and pushes
    world.tables.rules[ALGO][ORDER] = None
    world.tables.bump(ALGO)
    assert world.pep.check(s, *ORDER, notional=10, symbol="AAPL") == (False, REASON_FORBID)
    assert world.tables.pulls == 2


def test_invalidation_with_engine_down_fails_closed(world):
    _, s = world.open()
    world.tables.failure = ConnectionResetError("engine gone")
    world.tables.bump(ALGO)
    assert world.pep.check(s, "read", "risk/limits") == (False, E.ENGINE_UNREACHABLE)
    world.tables.failure = None
    assert world.pep.check(s, "read", "risk/limits") == (True, E.ALLOW)


def test_global_invalidation_redecides_everyone(world):
    from trustfabric.policy.decision import Invalidation

    _, s = world.open()
    world.tables.global_epoch = 2
    world.tables.bus.publish(Invalidation(None, 2, 2, "policy.loaded"))
    assert world.pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    assert world.tables.pulls == 2 and s.table_global_epoch == 2


def test_table_hard_ttl_forces_repull(world):
    _, s = world.open(ttl=10_000)
    world.clock.advance(301)
    assert world.pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    assert world.tables.pulls == 2


def test_decision_buffer_overflow_drains_without_loss(world):
    from trustfabric.enforcement.pep import EnforcementPoint

    pep = EnforcementPoint(world.pep.audience, world.tables, world.tokens, clock=world.clock,
                           sink=world.sink, buffer_size=4)
    peer = world.open()[0]
    s = pep.open_session(peer, world.token(peer))
    for _ in range(10):
        pep.check(s, "read", "risk/limits")
    pep.flush_decisions()
    assert len([e for e in world.sink.of_kind(Kind.DECISION) if e.source == pep.events.source]) == 10
    assert pep.fail_open == 0


def test_fail_open_tripwire_counts_an_uncovered_allow(world):
    # The tripwire itself must work: forge a record of an allow past its deadline.
    _, s = world.open()
    world.pep._buf[0] = DecisionRecord(10.0, s, "read", "risk/limits", True, E.ALLOW, 0.0, None, (), 1, 1, 1, 1, 5.0)
    world.pep._n = 1
    world.pep.flush_decisions()
    assert world.pep.fail_open == 1
    world.pep.fail_open = 0  # reset so the fixture's invariant checks the real path


def test_internal_error_denies(world):
    _, s = world.open()
    s.entries = None  # corrupt state: the check must deny, not raise or allow
    assert world.pep.check(s, "read", "risk/limits") == (False, E.INTERNAL)
    assert world.pep.internal_errors == 1


class RefusingSink:
    """An audit sink that can refuse (disk full): appends raise while ``down``."""

    def __init__(self) -> None:
        self.events = []
        self.down = False

    def append(self, event):
        if self.down:
            raise OSError("ENOSPC")
        self.events.append(event)

    def flush(self):
        if self.down:
            raise OSError("ENOSPC")


def test_audit_sink_refusing_fails_closed_and_loses_nothing(world):
    import pytest

    from trustfabric.enforcement.pep import EnforcementPoint

    sink = RefusingSink()
    pep = EnforcementPoint(world.pep.audience, world.tables, world.tokens, clock=world.clock, sink=sink)
    peer, _ = world.open()
    s = pep.open_session(peer, world.token(peer))
    assert pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    sink.down = True
    with pytest.raises(OSError):
        pep.flush_decisions()  # the transport's pre-flush hook sees this: the reply does not leave
    assert pep.check(s, "read", "risk/limits") == (False, E.AUDIT_UNAVAILABLE)
    sink.down = False
    assert pep.flush_decisions() == 2  # the kept allow and the deny
    assert [e.decision for e in sink.events if e.kind == Kind.DECISION] == ["allow", "deny"]
    assert pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    assert pep.fail_open == 0


def test_a_decision_records_the_policies_that_decided_it_when_the_check_ran(world):
    # A re-decision may replace the session's table before the buffer drains: the record
    # names the policies of the table that decided, not of the one installed later.
    _, s = world.open()
    assert world.pep.check(s, *ORDER, notional=10, symbol="AAPL")[0]
    deciding = s.entries[ORDER].policy_ids
    assert deciding
    s.entries[ORDER].policy_ids = ("policy-installed-later",)
    world.pep.flush_decisions()
    [ev] = world.sink.of_kind(Kind.DECISION)
    assert tuple(ev.policy_ids) == tuple(deciding)
