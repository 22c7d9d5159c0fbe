"""A venue's price-time priority limit order book for one symbol.

Orders rest at their limit price; at each price level they queue in arrival
order. An incoming order matches against the best opposite levels while prices
cross, always at the resting order's price, producing partial or full fills;
what is left rests (``day``/``gtc``) or is canceled (``ioc``). Every change is
reported as :class:`~trustfabric.trading.messages.ExecutionReport` messages for
both sides of a match.

Replace keeps time priority only when the price is unchanged and the quantity
goes down; otherwise the order goes to the back of its new level. Each order
belongs to an owner session; :meth:`OrderBook.cancel_session` cancels all of a
session's orders (cancel-on-disconnect). Only the owner may cancel or replace.

Invariants (checked by property tests): the book is never crossed after a call;
every level holds only orders with leaves > 0; the sum of fills equals the sum
of quantity removed from both sides.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from dataclasses import dataclass

from trustfabric.trading.errors import BookError
from trustfabric.trading.messages import BUY, SELL, ExecutionReport, NewOrder

UNKNOWN_ORDER = "book.unknown_order"
NOT_OWNER = "book.not_owner"
BAD_REPLACE = "book.bad_replace"
BAD_ORDER = "book.bad_order"
DUPLICATE = "book.duplicate"


@dataclass(slots=True)
class RestingOrder:
    order_id: str
    cl_ord_id: str
    owner: str  # session id of the submitter (for cancel-on-disconnect)
    account: str
    agent: str
    side: str
    price: int
    qty: int  # original quantity
    leaves: int
    cum: int = 0


class OrderBook:
    """Price-time priority book for one symbol at one venue."""

    def __init__(self, symbol: str, venue: str = "venue") -> None:
        self.symbol = symbol
        self.venue = venue
        self._bids: dict[int, deque[RestingOrder]] = {}
        self._asks: dict[int, deque[RestingOrder]] = {}
        self._bid_prices: list[int] = []  # ascending; best bid is last
        self._ask_prices: list[int] = []  # ascending; best ask is first
        self._orders: dict[str, RestingOrder] = {}  # order_id -> order
        self._by_cl: dict[tuple[str, str], str] = {}  # (owner, cl_ord_id) -> order_id
        self._order_ids = itertools.count(1)
        self._exec_ids = itertools.count(1)

    # --- reading ------------------------------------------------------------------------------
    def best_bid(self) -> tuple[int, int] | None:
        if not self._bid_prices:
            return None
        price = self._bid_prices[-1]
        return price, sum(o.leaves for o in self._bids[price])

    def best_ask(self) -> tuple[int, int] | None:
        if not self._ask_prices:
            return None
        price = self._ask_prices[0]
        return price, sum(o.leaves for o in self._asks[price])

    def depth(self, side: str, levels: int = 5) -> list[tuple[int, int]]:
        """(price, total leaves) per level, best first."""
        if side == BUY:
            prices = reversed(self._bid_prices[-levels:]) if levels else reversed(self._bid_prices)
            book = self._bids
        else:
            prices = iter(self._ask_prices[:levels] if levels else self._ask_prices)
            book = self._asks
        return [(p, sum(o.leaves for o in book[p])) for p in prices]

    def order(self, order_id: str) -> RestingOrder | None:
        return self._orders.get(order_id)

    def order_id_for(self, owner: str, cl_ord_id: str) -> str | None:
        return self._by_cl.get((owner, cl_ord_id))

    def orders(self) -> list[RestingOrder]:
        return list(self._orders.values())

    # --- reports ------------------------------------------------------------------------------
    def _report(self, o: RestingOrder, exec_type: str, now_ns: int, last_qty: int = 0, last_px: int = 0,
                reason: str = "", status: str | None = None) -> ExecutionReport:
        if status is None:
            if exec_type == "canceled":
                status = "canceled"
            elif o.leaves == 0 and o.cum > 0:
                status = "filled"
            elif o.cum > 0:
                status = "partially_filled"
            else:
                status = "new"
        return ExecutionReport(
            cl_ord_id=o.cl_ord_id, order_id=o.order_id, exec_id=f"{self.venue}-{next(self._exec_ids)}",
            venue=self.venue, account=o.account, agent=o.agent, symbol=self.symbol, side=o.side,
            exec_type=exec_type, ord_status=status, order_qty=o.qty, price=o.price, last_qty=last_qty,
            last_px=last_px, leaves_qty=o.leaves, cum_qty=o.cum, time_ns=now_ns, reason=reason,
        )

    # --- commands -----------------------------------------------------------------------------
    def add(self, order: NewOrder, owner: str, now_ns: int) -> list[ExecutionReport]:
        """Accept, match and rest (or cancel the IOC remainder) one limit order."""
        if order.symbol != self.symbol or order.qty <= 0 or order.price <= 0 or order.side not in (BUY, SELL):
            raise BookError(f"bad order {order.cl_ord_id}", reason=BAD_ORDER)
        if (owner, order.cl_ord_id) in self._by_cl:
            raise BookError(f"ClOrdID {order.cl_ord_id} already live", reason=DUPLICATE)
        o = RestingOrder(
            order_id=f"{self.venue}:{self.symbol}:{next(self._order_ids)}", cl_ord_id=order.cl_ord_id,
            owner=owner, account=order.account, agent=order.agent, side=order.side, price=order.price,
            qty=order.qty, leaves=order.qty,
        )
        reports = [self._report(o, "new", now_ns)]
        self._match(o, now_ns, reports)
        if o.leaves > 0:
            if order.tif == "ioc":
                o.leaves = 0
                reports.append(self._report(o, "canceled", now_ns, reason="ioc"))
            else:
                self._rest(o)
        return reports

    def _match(self, o: RestingOrder, now_ns: int, reports: list[ExecutionReport]) -> None:
        if o.side == BUY:
            prices, book = self._ask_prices, self._asks
            while o.leaves and prices and prices[0] <= o.price:
                self._fill_level(o, prices[0], book, prices, 0, now_ns, reports)
        else:
            prices, book = self._bid_prices, self._bids
            while o.leaves and prices and prices[-1] >= o.price:
                self._fill_level(o, prices[-1], book, prices, -1, now_ns, reports)

    def _fill_level(self, o, price, book, prices, index, now_ns, reports) -> None:
        queue = book[price]
        while o.leaves and queue:
            resting = queue[0]
            qty = min(o.leaves, resting.leaves)
            resting.leaves -= qty
            resting.cum += qty
            o.leaves -= qty
            o.cum += qty
            reports.append(self._report(resting, "fill" if resting.leaves == 0 else "partial_fill", now_ns, qty, price))
            reports.append(self._report(o, "fill" if o.leaves == 0 else "partial_fill", now_ns, qty, price))
            if resting.leaves == 0:
                queue.popleft()
                self._forget(resting)
        if not queue:
            del book[price]
            prices.pop(index)

    def _rest(self, o: RestingOrder) -> None:
        book, prices = (self._bids, self._bid_prices) if o.side == BUY else (self._asks, self._ask_prices)
        queue = book.get(o.price)
        if queue is None:
            queue = book[o.price] = deque()
            bisect.insort(prices, o.price)
        queue.append(o)
        self._orders[o.order_id] = o
        self._by_cl[(o.owner, o.cl_ord_id)] = o.order_id

    def _forget(self, o: RestingOrder) -> None:
        self._orders.pop(o.order_id, None)
        self._by_cl.pop((o.owner, o.cl_ord_id), None)

    def _unlink(self, o: RestingOrder) -> None:
        book, prices = (self._bids, self._bid_prices) if o.side == BUY else (self._asks, self._ask_prices)
        queue = book[o.price]
        queue.remove(o)
        if not queue:
            del book[o.price]
            prices.remove(o.price)
        self._forget(o)

    def _owned(self, order_id: str, owner: str) -> RestingOrder:
        o = self._orders.get(order_id)
        if o is None:
            raise BookError(f"no live order {order_id}", reason=UNKNOWN_ORDER)
        if o.owner != owner:
            raise BookError(f"{owner} does not own {order_id}", reason=NOT_OWNER)
        return o

    def cancel(self, order_id: str, owner: str, now_ns: int, reason: str = "") -> ExecutionReport:
        o = self._owned(order_id, owner)
        self._unlink(o)
        o.leaves = 0
        return self._report(o, "canceled", now_ns, reason=reason)

    def replace(self, order_id: str, owner: str, new_cl_ord_id: str, qty: int, price: int,
                now_ns: int) -> list[ExecutionReport]:
        """Change quantity and/or price. ``qty`` is the new total order quantity (FIX semantics)."""
        o = self._owned(order_id, owner)
        if qty <= o.cum or price <= 0:
            raise BookError(f"replace qty {qty} not above cum {o.cum}", reason=BAD_REPLACE)
        if (owner, new_cl_ord_id) in self._by_cl:
            raise BookError(f"ClOrdID {new_cl_ord_id} already live", reason=DUPLICATE)
        keeps_priority = price == o.price and qty <= o.qty
        self._by_cl.pop((o.owner, o.cl_ord_id), None)
        if keeps_priority:
            o.cl_ord_id = new_cl_ord_id
            o.qty = qty
            o.leaves = qty - o.cum
            self._by_cl[(o.owner, o.cl_ord_id)] = o.order_id
            return [self._report(o, "replaced", now_ns, status="replaced")]
        self._unlink(o)
        o.cl_ord_id, o.qty, o.price, o.leaves = new_cl_ord_id, qty, price, qty - o.cum
        reports = [self._report(o, "replaced", now_ns, status="replaced")]
        self._match(o, now_ns, reports)
        if o.leaves > 0:
            self._rest(o)
        return reports

    def cancel_session(self, owner: str, now_ns: int) -> list[ExecutionReport]:
        """Cancel-on-disconnect: cancel every live order of ``owner``."""
        return [self.cancel(o.order_id, owner, now_ns, reason="cancel_on_disconnect")
                for o in list(self._orders.values()) if o.owner == owner]

    def check_invariants(self) -> None:
        """Raise AssertionError if the book is crossed or holds dead orders (used by tests)."""
        if self._bid_prices and self._ask_prices:
            assert self._bid_prices[-1] < self._ask_prices[0], "book crossed"
        assert self._bid_prices == sorted(self._bids) and self._ask_prices == sorted(self._asks)
        for book in (self._bids, self._asks):
            for price, queue in book.items():
                assert queue, "empty level kept"
                for o in queue:
                    assert o.leaves > 0 and o.price == price and self._orders[o.order_id] is o
