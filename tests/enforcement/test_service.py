"""GuardedService: handlers reached only through the enforcement point."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trustfabric.audit.events import Kind
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.service import BAD_MESSAGE, Context, GuardedService, Refusal
from trustfabric.policy.decision import REASON_FORBID

from .conftest import ALGO


@dataclass(frozen=True)
class NewOrder:
    cl_ord_id: str
    symbol: str
    qty: float
    price: float


@pytest.fixture
def service(world):
    svc = GuardedService("risk", world.pep)
    seen = []

    @svc.handler(action="submit_order", resource="risk/orders",
                 notional=lambda m: m.qty * m.price, symbol=lambda m: m.symbol)
    async def on_order(msg, ctx):
        seen.append((ctx.principal, msg.cl_ord_id))
        return ("ack", msg.cl_ord_id)

    @svc.handler(action="cancel_all", resource="risk/orders")
    def on_cancel_all(msg, ctx):
        seen.append(("cancel_all",))
        return "cancelled"

    return svc, seen


async def test_allowed_message_reaches_handler(world, service):
    svc, seen = service
    _, s = world.open()
    reply = await svc.dispatch(Context(s), "submit_order", NewOrder("o1", "AAPL", 100, 150.0))
    assert reply == ("ack", "o1") and seen == [(ALGO, "o1")]


async def test_denied_messages_get_reason_and_never_reach_handler(world, service):
    svc, seen = service
    _, s = world.open()
    ctx = Context(s)
    assert await svc.dispatch(ctx, "submit_order", NewOrder("o2", "TSLA", 1, 1.0)) == Refusal(E.SYMBOL, "submit_order")
    assert (await svc.dispatch(ctx, "submit_order", NewOrder("o3", "AAPL", 1e6, 2.0))).reason == E.NOTIONAL
    assert (await svc.dispatch(ctx, "cancel_all", None)).reason == REASON_FORBID
    assert (await svc.dispatch(ctx, "format_disk", None)).reason == E.NOT_IN_TABLE
    assert (await svc.dispatch(ctx, "submit_order", {"not": "an order"})).reason == BAD_MESSAGE
    assert (await svc.dispatch(Context(None), "submit_order", NewOrder("o4", "AAPL", 1, 1.0))).reason == E.NO_SESSION
    assert seen == []
    world.pep.flush_decisions()
    decisions = world.sink.of_kind(Kind.DECISION)
    assert len(decisions) == 6 and all(d.decision == "deny" for d in decisions)


async def test_invalidation_arriving_while_handler_runs_redecides_next_message(world, service):
    svc, seen = service
    _, s = world.open()

    @svc.handler(action="read", resource="risk/limits")
    async def on_read(msg, ctx):
        # a policy change lands while this message is in the handler
        world.tables.rules[ALGO][("read", "risk/limits")] = None
        world.tables.bump(ALGO)
        return "limits"

    assert await svc.dispatch(Context(s), "read", None) == "limits"
    assert (await svc.dispatch(Context(s), "read", None)).reason == REASON_FORBID


async def test_handler_failure_is_an_error_reply(world):
    svc = GuardedService("risk", world.pep)

    @svc.handler(action="read", resource="risk/limits")
    async def broken(msg, ctx):
        raise RuntimeError("bug")

    _, s = world.open()
    assert (await svc.dispatch(Context(s), "read", None)).reason == "service.handler_failed"
    with pytest.raises(ValueError):
        svc.handler(action="read", resource="risk/limits")(broken)
