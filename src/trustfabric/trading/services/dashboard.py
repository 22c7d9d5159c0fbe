"""risk-dashboard: reads the floor's positions from the OMS once a second (read-only)."""

from __future__ import annotations

import asyncio

from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import PositionsQuery, PositionsReply, decoder


class DashboardService(FloorService):
    name = "risk-dashboard"
    peers = ("oms",)

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.positions = 0
        self.gross = 0
        self.reads = 0
        self._reply = decoder(PositionsReply)

    def register(self, svc) -> None:
        pass

    async def run(self) -> None:
        oms = self.rt.link("oms")
        cursor = 0
        while not self.rt.stopped.is_set():
            try:
                reply = await oms.call("read_positions", "oms/positions", encode_body(PositionsQuery(cursor)))
                if reply.ok:
                    view = self._reply.decode(reply.body)
                    cursor = view.cursor
                    self.positions = len(view.positions)
                    self.gross = sum(abs(p.qty) for p in view.positions)
                    self.reads += 1
            except Exception:  # noqa: BLE001 - OMS not up yet or refused: the view just ages
                pass
            await asyncio.sleep(1.0)

    def stats(self) -> dict[str, float]:
        return {"dashboard_positions": self.positions, "dashboard_gross_qty": self.gross,
                "dashboard_reads": self.reads}
