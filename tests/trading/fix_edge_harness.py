"""The fix-gateway service in this process, on a real mTLS edge port, with fakes for risk and the OMS.

:class:`GatewayHarness` runs the real :class:`FixGatewayService` (its sessions, timers and
core) behind its real TLS listener, with the edge PKI the launcher makes; pre-trade risk and
the OMS are in-memory fakes (:class:`FakeRisk` acknowledges or refuses each request and
records it, :class:`FakeOms` serves the parent-level reports a test pushes). The clock is a
:class:`FakeClock`, so session timers move only when the test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgspec
import simplefix

from trustfabric.clock import FakeClock
from trustfabric.trading.messages import ExecutionReport
from trustfabric.trading.launcher import fix_edge_pki
from trustfabric.trading.services.base import ServiceRuntime, encode_body
from trustfabric.trading.services.fix_client import EdgeFixClient
from trustfabric.trading.services.fix_gateway import FixGatewayService
from trustfabric.trading.services.wire import ClientReportsReply, OrderAck
from trustfabric.transport.frames import Response

from tests.floor_fixtures import POLICY_DIR


class FakeRisk:
    """Pre-trade risk as the gateway's link sees it: every request answered on the next loop turn."""

    up = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.refuse: set[str] = set()  # trace ids (ClOrdIDs) to refuse

    async def ensure(self, timeout_s: float = 5.0) -> None:
        return None

    def request(self, action, resource, body, *, symbol="", notional=0.0, callback=None, trace_id="") -> bool:
        self.requests.append((action, bytes(body)))
        if callback is not None:
            ok = not any(trace_id.endswith(r) for r in self.refuse)
            ack = OrderAck(ok, "risk.ok" if ok else "risk.limit", trace_id)
            resp = Response(rid=len(self.requests), ok=True, body=msgspec.Raw(encode_body(ack)))
            asyncio.get_running_loop().call_soon(callback, resp)
        return True

    def actions(self) -> list[str]:
        return [a for a, _ in self.requests]


class FakeOms:
    """The OMS's ``read_client_orders``: the reports a test pushes, after a cursor."""

    up = True

    def __init__(self) -> None:
        self.reports: list[ExecutionReport] = []

    async def ensure(self, timeout_s: float = 5.0) -> None:
        return None

    async def call(self, action, resource, body, **kw) -> Response:
        after = msgspec.msgpack.decode(body, type=dict).get("after", 0) if body else 0
        page = self.reports[after:after + 100]
        reply = ClientReportsReply(cursor=after + len(page), reports=page)
        return Response(rid=1, ok=True, body=msgspec.Raw(encode_body(reply)))


class GatewayHarness:
    def __init__(self, home: Path, *, clock: FakeClock | None = None) -> None:
        self.home = Path(home)
        self.clock = clock or FakeClock(time.time())
        self.edge = fix_edge_pki(self.home, "test.acme", now=self.clock.now())
        boot = {"home": str(self.home), "topology": str(POLICY_DIR / "floor.toml"), "ports": {}, "fix_port": 0,
                "fix_edge_dir": self.edge["fix_edge_dir"], "fix_clients": self.edge["fix_clients"],
                "fix_comp_id": self.edge["fix_comp_id"]}
        (self.home / "floor").mkdir(parents=True, exist_ok=True)
        self.rt = ServiceRuntime("fix-gateway", "perimeter", boot, clock=self.clock)
        self.risk, self.oms = FakeRisk(), FakeOms()
        self.rt.links["pre-trade-risk"] = self.risk  # type: ignore[assignment]
        self.rt.links["oms"] = self.oms  # type: ignore[assignment]
        self.service: FixGatewayService | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "GatewayHarness":
        self.service = FixGatewayService(self.rt)
        await self.service.prepare()
        self._task = asyncio.get_running_loop().create_task(self.service.run())
        return self

    async def __aexit__(self, *exc) -> None:
        self.rt.stopped.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
        self.rt.spool.close()

    @property
    def port(self) -> int:
        assert self.service is not None and self.service._server is not None
        return self.service._server.port

    async def client(self, sender: str = "CLIENT-A", client: str = "client-a", *, heartbeat_s: int = 30,
                     credentials_dir: str | Path | None = None, keep_alive: bool = True,
                     clock: FakeClock | None = None) -> EdgeFixClient:
        return await EdgeFixClient(self.port, credentials_dir or self.edge["client_dirs"][client], sender,
                                   clock=clock or self.clock, heartbeat_s=heartbeat_s,
                                   keep_alive=keep_alive).connect()

    async def logged_on(self, sender: str = "CLIENT-A", client: str = "client-a", **kw) -> EdgeFixClient:
        c = await self.client(sender, client, **kw)
        c.send(c.fix.logon(self.clock.now(), reset=True))
        got = await c.read_until(lambda m: m.message_type in (b"A", b"5"), 5.0)
        assert got and got[0].message_type == b"A", got
        return c

    def push(self, report: ExecutionReport) -> None:
        self.oms.reports.append(report)


def report(cl_ord_id: str, exec_type: str, status: str, *, qty: int = 300, price: int = 1_000_000,
           last_qty: int = 0, last_px: int = 0, cum_qty: int = 0, sender: str = "CLIENT-A") -> ExecutionReport:
    """A parent-level OMS report of a FIX client's order (floor ClOrdID ``FIX.<sender>.<cl>``)."""
    return ExecutionReport(cl_ord_id=f"FIX.{sender}.{cl_ord_id}", order_id=f"OMS:FIX.{sender}.{cl_ord_id}",
                           exec_id=f"{cl_ord_id}-{exec_type}-{cum_qty}", venue="venue-a", account="acct-clients",
                           agent="", symbol="AAPL", side="buy", exec_type=exec_type, ord_status=status,
                           order_qty=qty, price=price, last_qty=last_qty, last_px=last_px,
                           leaves_qty=qty - cum_qty, cum_qty=cum_qty, time_ns=time.time_ns())


def of_type(messages: list[simplefix.FixMessage], msg_type: bytes) -> list[simplefix.FixMessage]:
    return [m for m in messages if m.message_type == msg_type]
