"""settlement: the day's fills from the OMS, end-of-day netting and the cash ledger.

The most sensitive segment: only the OMS may ``settle`` on ``settlement/ledger``.
An ``eod`` command nets the day's fills into settlement instructions and posts
them to the cash ledger (all or nothing).

At end of day it also reads the OMS's trade history from the data vault (``data_read`` on
``data/oms/trade-history``, a Cedar decision of its key service; the perimeter floor reads
the plain records) and counts the records it could open beside its own fills.
"""

from __future__ import annotations

import datetime as dt

from trustfabric.audit.events import Kind
from trustfabric.control.client import ControlTableSource
from trustfabric.data.floor import ServiceVault, attach_service_vault, read_plain_records
from trustfabric.errors import TradingError
from trustfabric.trading.cores import SettlementCore
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
        self.history_records = 0  # trade-history records read back from the vault at end of day
        self.vault: ServiceVault | None = None
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

    async def run(self) -> None:
        if self.rt.pep is not None and self.rt.control is not None:
            try:
                self.vault = await attach_service_vault(self.rt, ControlTableSource(self.rt.control), self.name)
            except Exception as exc:  # noqa: BLE001 - no vault session: no history is read, and it shows
                self.rt.events.emit(Kind.DECISION, principal=self.rt.spiffe_id, action="data_read",
                                    resource="data/oms/trade-history", decision="deny",
                                    reason=getattr(exc, "reason", "data.refused"))
        await self.rt.stopped.wait()

    def _read_history(self) -> None:
        if self.vault is not None:
            self.history_records = len(self.vault.read_records(self.vault.labels("trade-history", "oms")))
            self.vault.flush()
        else:
            self.history_records = len(read_plain_records(self.rt.home, "oms", "trade-history"))

    def on_command(self, command) -> None:
        if command.name == "eod":
            self._read_history()
            try:
                self.instructions += len(self.core.end_of_day(dt.date.today().isoformat()))
            except TradingError:
                self.eod_errors += 1

    def stats(self) -> dict[str, float]:
        return {"settlement_fills": len(self.core.fills), "settlement_instructions": self.instructions,
                "eod_errors": self.eod_errors, "history_records": self.history_records,
                **(self.vault.stats() if self.vault else {})}
