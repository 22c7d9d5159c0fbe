"""venue-a / venue-b: price-time limit order books, execution reports, cancel-on-disconnect.

``execute`` from the router adds a child order to the book; its execution
reports go back in the reply (with the book's depth, for the router's SOR) and to
the OMS (``report_fill`` on ``oms/fills``, batched per loop turn, with the parent
order on first sight). The rest of the market is simulated: a market maker quotes
around the same seeded price path market-data publishes, so resting orders fill
when the market moves through them. When a session (or, in perimeter mode, a
connection) ends, its resting orders are cancelled.

With ``md_csv`` in the boot line the market maker quotes around the recorded
session instead (the same file market-data replays, checked before READY); at the
end of the file its last quotes stay in the book (``venue_replay_done`` = 1).
"""

from __future__ import annotations

import asyncio
import time

from trustfabric.trading.cores import VenueCore
from trustfabric.trading.messages import CancelOrder, NewOrder
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.marketdata import CsvReplay, MarketDataGenerator
from trustfabric.trading.services.market_data import market_source
from trustfabric.trading.services.wire import OmsBatch, ParentInfo, VenueOrder, VenueReply, decoder

MARKET_MAKER = "mm"
SWEEP_S = 0.2
CHUNK = 60  # reports (or parents) per OMS request: a frame stays far below 64 KiB


class VenueService(FloorService):
    peers = ("oms",)

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.name = runtime.name
        self.core = VenueCore(runtime.name)
        self.interval = float(runtime.boot.get("md_interval_s", 0.2))
        self.market_step_s = float(runtime.boot.get("md_step_s", 30.0))  # market seconds per tick
        self.gen: MarketDataGenerator | CsvReplay | None = None  # set in prepare(): a bad file is REFUSED
        self.extra_ticks = 0 if runtime.name.endswith("a") else 1  # venue-b quotes one tick wider
        self.mm_size = int(runtime.boot.get("mm_size", 2000))
        self.pending_parents: list[ParentInfo] = []
        self.pending_reports: list = []
        self.known_parents: set[str] = set()
        self.owners: set[str] = set()
        self._scheduled = False
        self.orders = self.reports_out = self.fills = self.disconnect_cancels = 0
        self._order = decoder(VenueOrder)
        self._cancel = decoder(CancelOrder)
        self.oms = runtime.link("oms")

    def forward(self, reports, parent: ParentInfo | None = None) -> None:
        floor = [r for r in reports if r.agent != MARKET_MAKER]
        if parent is not None and parent.parent.cl_ord_id not in self.known_parents:
            self.known_parents.add(parent.parent.cl_ord_id)
            self.pending_parents.append(parent)
        if not floor and not self.pending_parents:
            return
        self.pending_reports.extend(floor)
        self.fills += sum(1 for r in floor if r.exec_type in ("fill", "partial_fill"))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ship)

    def _ship(self) -> None:
        self._scheduled = False
        if not (self.pending_reports or self.pending_parents):
            return
        if not self.oms.up:
            self.rt.loop_task(self.oms.ensure())
            asyncio.get_running_loop().call_later(0.05, self._reschedule)
            return
        while self.pending_parents or self.pending_reports:  # chunks well below the frame limit
            parents, reports = self.pending_parents[:CHUNK], self.pending_reports[:CHUNK]
            if not self.oms.request("report_fill", "oms/fills", encode_body(OmsBatch(parents, reports))):
                asyncio.get_running_loop().call_later(0.05, self._reschedule)
                return
            self.reports_out += len(reports)
            del self.pending_parents[:CHUNK]
            del self.pending_reports[:CHUNK]

    def _reschedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ship)

    def register(self, svc) -> None:
        @svc.handler(action="execute", resource=f"{self.name}/orders")
        def execute(req, ctx):
            vo = self._order.decode(req.body)
            owner = self.rt.owner(ctx)
            self.owners.add(owner)
            self.orders += 1
            reports = self.core.handle_order(vo.child, owner, time.time_ns())
            self.forward(reports, ParentInfo(vo.parent, vo.siblings))
            return encode_body(VenueReply(reports=reports, book=self.core.snapshot(vo.child.symbol)))

        @svc.handler(action="cancel_order", resource=f"{self.name}/orders")
        def cancel_order(req, ctx):
            cancel = self._cancel.decode(req.body)
            out = self.core.handle_cancel(cancel, self.rt.owner(ctx), time.time_ns())
            if isinstance(out, list):
                self.forward(out)
                return encode_body(VenueReply(reports=out, book=self.core.snapshot(cancel.symbol)))
            return encode_body(VenueReply(reports=[], book=self.core.snapshot(cancel.symbol)))

    async def prepare(self) -> None:
        self.gen = market_source(self.rt.boot, self.rt.topology.symbols)

    def quote_market(self, now_ns: int) -> None:
        assert self.gen is not None
        for event in self.gen.step(self.market_step_s, now_ns):
            if not hasattr(event, "bid"):
                continue
            book = self.core.book(event.symbol)
            book.cancel_session(MARKET_MAKER, now_ns)
            tick = max(1, (event.ask - event.bid))
            for side, price in (("buy", event.bid - self.extra_ticks * tick), ("sell", event.ask + self.extra_ticks * tick)):
                if price <= 0:
                    continue
                mm = NewOrder(cl_ord_id=f"mm-{event.seq}-{side}", account="MM", agent=MARKET_MAKER,
                              symbol=event.symbol, side=side, qty=self.mm_size, price=price, tif="day",
                              time_ns=now_ns)
                self.forward(self.core.handle_order(mm, MARKET_MAKER, now_ns))

    async def run(self) -> None:
        next_sweep = 0.0
        while not self.rt.stopped.is_set():
            now_ns = time.time_ns()
            self.quote_market(now_ns)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_S
                live = self.rt.live_owners() | {MARKET_MAKER}
                for owner in list(self.owners - live):
                    self.owners.discard(owner)
                    cancelled = self.core.disconnect(owner, now_ns)
                    self.disconnect_cancels += len(cancelled)
                    self.forward(cancelled)
            await asyncio.sleep(self.interval)

    def resting(self) -> int:
        """Floor orders (not the simulated market maker's) resting in this venue's books."""
        return sum(1 for book in self.core.books.values() for o in book.orders() if o.owner != MARKET_MAKER)

    def stats(self) -> dict[str, float]:
        out = {"venue_orders": self.orders, "venue_fills": self.fills, "reports_to_oms": self.reports_out,
               "disconnect_cancels": self.disconnect_cancels, "venue_resting": self.resting()}
        if isinstance(self.gen, CsvReplay):
            out.update(self.gen.stats("venue_replay"))
        return out
