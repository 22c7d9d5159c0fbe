"""Order management: the order state machine, fills, positions and P&L.

The OMS in three layers: this state machine; :class:`~trustfabric.trading.cores.OmsCore`,
the service core over it; and :mod:`trustfabric.trading.services.oms`, the ``oms`` process.

States and the only transitions allowed (anything else raises
:class:`~trustfabric.trading.errors.OrderStateError` ``oms.illegal_transition``)::

    New ──────────────┬─> PartiallyFilled ─┬─> Filled
      │               │        │  ▲        ├─> Canceled
      │               │        └──┘        └─> Replaced
      ├─> Filled      ├─> Canceled
      ├─> Rejected    └─> Replaced
    Filled, Canceled, Rejected, Replaced are terminal.

A replace ends the old ClOrdID in ``Replaced`` and opens the new ClOrdID carrying
the filled quantity over. Fills beyond the order quantity are refused
(``oms.overfill``); a fill's exec id is applied once (duplicates are ignored).

Positions are per (account, symbol): signed quantity and the integer cost basis of
the open position (average-cost method). Reducing a position realizes
``proceeds - cost removed``; cost removed is ``cost * x // qty`` so every unit of
cash is accounted for exactly: realized + unrealized always equals the sum of cash
flows plus the marked value.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustfabric.trading.errors import OrderStateError
from trustfabric.trading.messages import BUY, Fill, NewOrder, PositionSnapshot

NEW = "New"
PARTIALLY_FILLED = "PartiallyFilled"
FILLED = "Filled"
CANCELED = "Canceled"
REJECTED = "Rejected"
REPLACED = "Replaced"
TERMINAL = frozenset({FILLED, CANCELED, REJECTED, REPLACED})

TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, REPLACED}),
    PARTIALLY_FILLED: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, REPLACED}),
    FILLED: frozenset(),
    CANCELED: frozenset(),
    REJECTED: frozenset(),
    REPLACED: frozenset(),
}

ILLEGAL_TRANSITION = "oms.illegal_transition"
OVERFILL = "oms.overfill"
UNKNOWN_ORDER = "oms.unknown_order"
DUPLICATE_ORDER = "oms.duplicate_order"


@dataclass(slots=True)
class OrderRecord:
    order: NewOrder
    state: str = NEW
    cum_qty: int = 0
    cum_notional: int = 0
    replaced_by: str = ""

    @property
    def leaves(self) -> int:
        return 0 if self.state in TERMINAL else self.order.qty - self.cum_qty


@dataclass(slots=True)
class Position:
    qty: int = 0
    cost: int = 0  # cost basis of the open position; negative for shorts
    realized: int = 0

    def apply(self, signed_qty: int, price: int) -> None:
        q = self.qty
        if q == 0 or (q > 0) == (signed_qty > 0):
            self.qty = q + signed_qty
            self.cost += signed_qty * price
            return
        closing = min(abs(signed_qty), abs(q))
        removed = self.cost * closing // abs(q) if q > 0 else -((-self.cost) * closing // abs(q))
        # long closed by a sell: realized = proceeds - cost; short closed by a buy: realized = cost - spend
        self.realized += (closing * price - removed) if q > 0 else (-removed - closing * price)
        self.cost -= removed
        self.qty = q + (closing if q < 0 else -closing)
        rest = abs(signed_qty) - closing
        if rest:
            signed_rest = rest if signed_qty > 0 else -rest
            self.qty += signed_rest
            self.cost += signed_rest * price

    def unrealized(self, mark: int) -> int:
        return self.qty * mark - self.cost


class OrderManager:
    """Orders by ClOrdID, their state machine, and positions fed by fills."""

    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.marks: dict[str, int] = {}
        self._exec_ids: set[str] = set()

    def _get(self, cl_ord_id: str) -> OrderRecord:
        record = self.orders.get(cl_ord_id)
        if record is None:
            raise OrderStateError(f"unknown order {cl_ord_id}", reason=UNKNOWN_ORDER)
        return record

    def _move(self, record: OrderRecord, new_state: str) -> None:
        if new_state not in TRANSITIONS[record.state]:
            raise OrderStateError(
                f"{record.order.cl_ord_id}: {record.state} -> {new_state}", reason=ILLEGAL_TRANSITION
            )
        record.state = new_state

    def new_order(self, order: NewOrder) -> OrderRecord:
        if order.cl_ord_id in self.orders:
            raise OrderStateError(f"duplicate {order.cl_ord_id}", reason=DUPLICATE_ORDER)
        record = self.orders[order.cl_ord_id] = OrderRecord(order)
        return record

    def reject(self, cl_ord_id: str) -> OrderRecord:
        record = self._get(cl_ord_id)
        self._move(record, REJECTED)
        return record

    def cancel(self, cl_ord_id: str) -> OrderRecord:
        record = self._get(cl_ord_id)
        self._move(record, CANCELED)
        return record

    def replace(self, cl_ord_id: str, new_order: NewOrder) -> OrderRecord:
        """End ``cl_ord_id`` as Replaced; the new order carries the filled quantity."""
        record = self._get(cl_ord_id)
        if new_order.cl_ord_id in self.orders:
            raise OrderStateError(f"duplicate {new_order.cl_ord_id}", reason=DUPLICATE_ORDER)
        if new_order.qty <= record.cum_qty or new_order.symbol != record.order.symbol \
                or new_order.side != record.order.side or new_order.account != record.order.account:
            raise OrderStateError(f"bad replace of {cl_ord_id}", reason=ILLEGAL_TRANSITION)
        self._move(record, REPLACED)
        record.replaced_by = new_order.cl_ord_id
        successor = OrderRecord(new_order, cum_qty=record.cum_qty, cum_notional=record.cum_notional)
        if successor.cum_qty:
            successor.state = PARTIALLY_FILLED
        self.orders[new_order.cl_ord_id] = successor
        return successor

    def apply_fill(self, fill: Fill) -> OrderRecord | None:
        """Apply one fill (once per exec id); returns the order record, or ``None`` for a duplicate."""
        if fill.exec_id in self._exec_ids:
            return None
        record = self._get(fill.cl_ord_id)
        if fill.qty <= 0 or fill.price <= 0:
            raise OrderStateError(f"bad fill {fill.exec_id}", reason=OVERFILL)
        if record.cum_qty + fill.qty > record.order.qty:
            raise OrderStateError(f"{fill.cl_ord_id} overfilled by {fill.exec_id}", reason=OVERFILL)
        self._move(record, FILLED if record.cum_qty + fill.qty == record.order.qty else PARTIALLY_FILLED)
        self._exec_ids.add(fill.exec_id)
        record.cum_qty += fill.qty
        record.cum_notional += fill.qty * fill.price
        key = (record.order.account, record.order.symbol)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = Position()
        position.apply(fill.qty if record.order.side == BUY else -fill.qty, fill.price)
        return record

    def set_mark(self, symbol: str, price: int) -> None:
        self.marks[symbol] = price

    def snapshot(self, account: str, symbol: str, now_ns: int) -> PositionSnapshot:
        position = self.positions.get((account, symbol), Position())
        mark = self.marks.get(symbol, 0)
        unrealized = position.unrealized(mark) if mark else 0
        return PositionSnapshot(
            account=account, symbol=symbol, qty=position.qty, cost=position.cost,
            realized_pnl=position.realized, unrealized_pnl=unrealized, mark=mark, time_ns=now_ns,
        )

    def snapshots(self, now_ns: int) -> list[PositionSnapshot]:
        return [self.snapshot(a, s, now_ns) for (a, s) in sorted(self.positions)]

    def working(self) -> list[OrderRecord]:
        return [r for r in self.orders.values() if r.state not in TERMINAL]
