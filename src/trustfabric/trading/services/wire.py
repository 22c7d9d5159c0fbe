"""Bodies of the floor's requests and replies (MessagePack), beside the floor messages of
:mod:`trustfabric.trading.messages`. The envelope (action, resource, symbol, notional) is
what the enforcement point checks; these bodies are what the handlers read."""

from __future__ import annotations

import msgspec

from trustfabric.trading.messages import ExecutionReport, Fill, NewOrder, PositionSnapshot, Quote, Trade
from trustfabric.trading.sor import VenueBook

# ClOrdIDs BENCH.<tag>.<agent>-<n>: the floor benchmark's orders (AlgoService.bench), counted apart at the OMS
BENCH_PREFIX = "BENCH."


class AgentUpdate(msgspec.Struct, frozen=True):
    kind: str  # "fill" | "done"
    cl_ord_id: str
    symbol: str = ""
    side: str = ""
    qty: int = 0


class OrderAck(msgspec.Struct, frozen=True):
    ok: bool
    reason: str = ""
    cl_ord_id: str = ""
    updates: list[AgentUpdate] = []


class MdPoll(msgspec.Struct, frozen=True):
    after: int = 0


class MdBatch(msgspec.Struct, frozen=True):
    seq: int
    events: list[Quote | Trade] = []


class VenueOrder(msgspec.Struct, frozen=True):
    child: NewOrder
    parent: NewOrder
    siblings: list[str]


class VenueReply(msgspec.Struct, frozen=True):
    reports: list[ExecutionReport]
    book: VenueBook


class RouteReply(msgspec.Struct, frozen=True):
    ok: bool
    reason: str = ""
    children: int = 0


class ParentInfo(msgspec.Struct, frozen=True):
    parent: NewOrder
    siblings: list[str]


class OmsBatch(msgspec.Struct, frozen=True):
    parents: list[ParentInfo] = []
    reports: list[ExecutionReport] = []


class PositionsQuery(msgspec.Struct, frozen=True):
    after: int = 0


class PositionsReply(msgspec.Struct, frozen=True):
    cursor: int
    fills: list[Fill] = []
    done: list[tuple[str, str]] = []
    positions: list[PositionSnapshot] = []


class ClientReportsReply(msgspec.Struct, frozen=True):
    """Parent-level execution reports of FIX client orders (``FIX.`` ClOrdIDs), after a cursor."""

    cursor: int
    reports: list[ExecutionReport] = []


class SettleBatch(msgspec.Struct, frozen=True):
    fills: list[Fill]


def decoder(kind):
    return msgspec.msgpack.Decoder(kind)
