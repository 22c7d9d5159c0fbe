"""algo-meanrev / algo-momentum: a strategy fed by its own market-data streams, orders to risk only.

The agent's one outlet is ``submit_order`` / ``cancel_order`` on ``risk/orders``
(pipelined: it never waits for one order before sending the next). Risk's acks
carry the agent's fills and finished orders, which keep the strategy's position
view current. On a ``bench`` command the agent sends a burst of marketable
orders as fast as its link window allows (the floor benchmark).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from trustfabric.audit.events import Kind
from trustfabric.trading.messages import PRICE_SCALE, CancelOrder, NewOrder, Quote
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.market_data import follow_stream
from trustfabric.trading.services.wire import BENCH_PREFIX, OrderAck, decoder
from trustfabric.trading.strategies import CancelIntent, MeanReversion, Momentum, OrderIntent

BENCH_WINDOW = 512


class AlgoService(FloorService):
    peers = ("market-data", "pre-trade-risk")

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.name = runtime.name
        spec = runtime.topology.services[runtime.name]
        self.symbols = sorted(spec.symbols)
        self.account = spec.account
        cls = MeanReversion if "meanrev" in runtime.name else Momentum
        self.strategy = cls(self.symbols, qty=int(runtime.boot.get("algo_qty", 100)))
        self.ids = itertools.count(1)
        self.refs: dict[str, tuple[str, str, str]] = {}  # strategy ref -> (cl_ord_id, symbol, side)
        self.by_cl: dict[str, str] = {}  # cl_ord_id -> ref
        self.quotes: dict[str, Quote] = {}
        self.submitted = self.acked = self.risk_rejects = self.denied = self.fills = self.filled_qty = 0
        self.cancels = 0
        self.bench_sent = 0
        self._ack = decoder(OrderAck)
        self._bench: asyncio.Task | None = None
        self.link = runtime.link("pre-trade-risk")

    def register(self, svc) -> None:
        pass  # an agent serves nobody

    async def run(self) -> None:
        tasks = [asyncio.get_running_loop().create_task(follow_stream(self.rt, s, self.on_event)) for s in self.symbols]
        try:
            while not self.rt.stopped.is_set():
                if not self.link.up:
                    try:
                        await self.link.ensure(timeout_s=2.0)
                    except Exception:  # noqa: BLE001 - refused or down: keep trying (quarantine ends it)
                        await asyncio.sleep(0.5)
                        continue
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()

    def on_event(self, event) -> None:
        if not isinstance(event, Quote):
            return
        self.quotes[event.symbol] = event
        if self._bench is not None and not self._bench.done():
            return
        for intent in self.strategy.on_quote(event):
            if isinstance(intent, OrderIntent):
                self.submit(intent)
            elif isinstance(intent, CancelIntent):
                self.cancel(intent)

    def new_order(self, symbol: str, side: str, qty: int, price: int, tif: str, prefix: str = "") -> NewOrder:
        return NewOrder(cl_ord_id=f"{prefix}{self.name}-{next(self.ids)}", account=self.account, agent=self.rt.spiffe_id,
                        symbol=symbol, side=side, qty=qty, price=price, tif=tif, time_ns=time.time_ns())

    def send(self, order: NewOrder, ref: str = "") -> bool:
        def on_reply(resp) -> None:
            self.on_ack(resp, order, ref)

        ok = self.link.request("submit_order", "risk/orders", encode_body(order), symbol=order.symbol,
                               notional=order.qty * order.price / PRICE_SCALE, callback=on_reply,
                               trace_id=order.cl_ord_id)
        if ok:
            self.submitted += 1
            self.rt.events.emit(Kind.DECISION, trace_id=order.cl_ord_id, principal=order.agent,
                                action="order.intent", resource=order.symbol, decision="allow",
                                detail={"side": order.side, "qty": order.qty, "price": order.price})
            if ref:
                self.refs[ref] = (order.cl_ord_id, order.symbol, order.side)
                self.by_cl[order.cl_ord_id] = ref
        return ok

    def submit(self, intent: OrderIntent) -> None:
        order = self.new_order(intent.symbol, intent.side, intent.qty, intent.price, intent.tif)
        if not self.send(order, intent.ref):
            self.strategy.on_order_done(intent.symbol, intent.ref)

    def cancel(self, intent: CancelIntent) -> None:
        known = self.refs.get(intent.ref)
        if known is None:
            return
        cl_ord_id, symbol, side = known
        cancel = CancelOrder(cl_ord_id=f"{cl_ord_id}-x", orig_cl_ord_id=cl_ord_id, account=self.account,
                             agent=self.rt.spiffe_id, symbol=symbol, side=side, time_ns=time.time_ns())
        if self.link.request("cancel_order", "risk/orders", encode_body(cancel), symbol=symbol,
                             callback=lambda resp: self.on_ack(resp, None, "")):
            self.cancels += 1

    def on_ack(self, resp, order: NewOrder | None, ref: str) -> None:
        if not resp.ok:
            self.denied += 1  # refused at the hop (enforcement point) or the link went down
            if order is not None and ref:
                self.strategy.on_order_done(order.symbol, ref)
            return
        ack = self._ack.decode(resp.body)
        if order is not None:
            if ack.ok:
                self.acked += 1
            else:
                self.risk_rejects += 1
                if ref:
                    self.strategy.on_order_done(order.symbol, ref)
        for update in ack.updates:
            if update.kind == "fill":
                self.fills += 1
                self.filled_qty += update.qty
                self.strategy.on_fill(update.symbol, update.side, update.qty)
            elif update.kind == "done":
                r = self.by_cl.pop(update.cl_ord_id, None)
                if r is not None:
                    self.refs.pop(r, None)
                    self.strategy.on_order_done(update.symbol, r)

    def on_command(self, command) -> None:
        if command.name == "bench":
            n = int(command.args.get("orders", "1000"))
            tag = int(command.args.get("tag", "0"))
            self._bench = asyncio.get_running_loop().create_task(self.bench(n, tag))

    async def bench(self, n: int, tag: int = 0) -> None:
        """Send ``n`` marketable IOC orders, keeping at most BENCH_WINDOW unanswered.

        Their ClOrdIDs are ``BENCH.<tag>.<agent>-<n>``, so the OMS counts and times each burst
        apart from any order the strategy placed and from earlier bursts. An order the link could not
        take is sent again: all ``n`` go out.
        """
        await self.link.ensure()
        while not self.quotes:
            await asyncio.sleep(0.05)
        symbols = sorted(self.quotes)
        sides = ("buy", "sell")
        for i in range(n):
            if self.link.outstanding >= BENCH_WINDOW:
                await self.link.wait_window(BENCH_WINDOW)
            q = self.quotes[symbols[i % len(symbols)]]
            side = sides[(i // len(symbols)) % 2]
            qty = 1 + (i // (2 * len(symbols))) % 50
            order = self.new_order(q.symbol, side, qty, q.ask if side == "buy" else q.bid, "ioc",
                                   prefix=f"{BENCH_PREFIX}{tag}.")
            while not self.send(order):
                await asyncio.sleep(0.01)
                await self.link.ensure()
            self.bench_sent += 1
            if i % 64 == 0:
                await asyncio.sleep(0)

    def stats(self) -> dict[str, float]:
        return {"orders_submitted": self.submitted, "orders_acked": self.acked, "risk_rejects": self.risk_rejects,
                "hops_denied": self.denied, "fills": self.fills, "filled_qty": self.filled_qty,
                "cancels": self.cancels, "bench_sent": self.bench_sent, "link_up": float(self.link.up)}
