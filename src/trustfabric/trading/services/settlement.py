"""settlement: the day's fills from the OMS, end-of-day netting and the cash ledger.

The most sensitive segment: only the OMS may ``settle`` on ``settlement/ledger``.
An ``eod`` command nets the day's fills into settlement instructions and posts
them to the cash ledger (all or nothing).
"""

from __future__ import annotations

import datetime as dt

from trustfabric.audit.events import Kind
from trustfabric.errors import TradingError
from trustfabric.trading.floor_logic import SettlementCore
from trustfabric.trading.services.base import FloorService
from trustfabric.trading.services.wire import SettleBatch, decoder

FUNDING_PER_ACCOUNT = 10**16


class SettlementService(FloorService):
    name = "settlement"

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.core = SettlementCore()
        for account in sorted({s.account for s in runtime.topology.services.values()}):
            self.core.fund(account, FUNDING_PER_ACCOUNT, f"deposit-{account}")
        self.instructions = self.eod_errors = 0
        self._batch = decoder(SettleBatch)

    def register(self, svc) -> None:
        @svc.handler(action="settle", resource="settlement/ledger")
        def settle(req, ctx):
            for fill in self._batch.decode(req.body).fills:
                if fill.account not in self.core.ledger.balances:
                    self.core.fund(fill.account, FUNDING_PER_ACCOUNT, f"deposit-{fill.account}")
                self.core.on_fill(fill)
                self.rt.events.emit(Kind.DECISION, trace_id=fill.cl_ord_id, principal=fill.account,
                                    action="settlement.settle", resource=fill.symbol, decision="allow",
                                    detail={"qty": fill.qty, "price": fill.price, "exec_id": fill.exec_id})
            return None

    def on_command(self, command) -> None:
        if command.name == "eod":
            try:
                self.instructions += len(self.core.end_of_day(dt.date.today().isoformat()))
            except TradingError:
                self.eod_errors += 1

    def stats(self) -> dict[str, float]:
        return {"settlement_fills": len(self.core.fills), "settlement_instructions": self.instructions,
                "eod_errors": self.eod_errors}
