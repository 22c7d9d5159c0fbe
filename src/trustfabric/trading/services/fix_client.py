"""A FIX client over mTLS for the demo and the tests: a real TLS connection carrying raw FIX.

:class:`EdgeFixClient` connects to the fix-gateway's edge port with a client
certificate of the edge trust domain, and uses
:class:`~trustfabric.trading.fix.client.FixInitiator` to build messages (it can be
made to misbehave: wrong CompID, no Logon, another client's certificate).
:func:`place_orders` is the demo's client: Logon, a few limit orders near the
market, wait for their execution reports, Logout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import simplefix

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.trading.fix.client import FixInitiator
from trustfabric.trading.marketdata import DEFAULT_UNIVERSE
from trustfabric.trading.risk import tick_size
from trustfabric.transport.tls import build_context

TIMER_S = 0.25  # how often a waiting client looks at its liveness timers
START_PRICES = {spec.symbol: spec.price for spec in DEFAULT_UNIVERSE}


class EdgeFixClient:
    def __init__(self, port: int, credentials_dir: str | Path, sender: str, target: str = "TRUSTFABRIC", *,
                 clock: Clock = SYSTEM_CLOCK, heartbeat_s: int = 30, keep_alive: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.clock = clock
        self.credentials = WorkloadCredentials.load(Path(credentials_dir))
        self.fix = FixInitiator(sender, target, heartbeat_s=heartbeat_s, clock=clock, keep_alive=keep_alive)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.received: list[simplefix.FixMessage] = []
        self.closed = False

    async def connect(self) -> "EdgeFixClient":
        ctx = build_context(self.credentials, server_side=False)
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=ctx), 5.0)
        return self

    def send(self, raw: bytes) -> None:
        assert self.writer is not None
        self.writer.write(raw)

    async def read_until(self, predicate, timeout_s: float = 5.0) -> list[simplefix.FixMessage]:
        """Read until ``predicate(message)`` holds for one message, the peer closes, or the timeout."""
        assert self.reader is not None
        deadline = time.monotonic() + timeout_s
        matched: list[simplefix.FixMessage] = []
        while not matched and time.monotonic() < deadline and not self.closed:
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              max(0.01, min(TIMER_S, deadline - time.monotonic())))
            except TimeoutError:
                data = None
            except (ConnectionError, OSError):
                break
            if data is not None and not data:
                self.closed = True
                break
            for msg in self.fix.receive(data or b""):
                self.received.append(msg)
                answer = self.fix.on_message(msg, self.clock.now())
                if answer is not None:
                    self.send(answer)
                if predicate(msg):
                    matched.append(msg)
            self.tick()
        return matched

    def tick(self) -> None:
        """Our side's liveness: Heartbeat / TestRequest when due, Logout and close when the gateway is gone."""
        timer = self.fix.on_timer(self.clock.now())
        for raw in timer.outgoing:
            self.send(raw)
        if timer.disconnect and self.writer is not None:
            self.closed = True
            self.writer.close()

    async def logon(self, *, reset: bool = False, timeout_s: float = 5.0) -> simplefix.FixMessage | None:
        self.send(self.fix.logon(self.clock.now(), reset=reset))
        got = await self.read_until(lambda m: m.message_type in (b"A", b"5"), timeout_s)
        return got[0] if got else None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)


def exec_reports(messages: list[simplefix.FixMessage], cl_ord_id: str) -> list[simplefix.FixMessage]:
    return [m for m in messages if m.message_type == b"8" and m.get(11) == cl_ord_id.encode()]


async def place_orders(port: int, credentials_dir: str | Path, sender: str, *, orders: int = 5,
                       symbols: tuple[str, ...] = ("AAPL", "MSFT", "KO", "JPM", "XOM"), account: str = "acct-clients",
                       prefix: str = "demo", timeout_s: float = 10.0, host: str = "127.0.0.1") -> dict:
    """Logon, send ``orders`` marketable limit orders, wait for their reports, Logout."""
    client = await EdgeFixClient(port, credentials_dir, sender, host=host).connect()
    result: dict = {"sender": sender, "logon": False, "orders": [], "reports": 0}
    try:
        logon = await client.logon(reset=True)
        result["logon"] = logon is not None and logon.message_type == b"A"
        if not result["logon"]:
            return result
        now = time.time()
        ids = []
        for n in range(orders):
            symbol = symbols[n % len(symbols)]
            side = "buy" if n % 2 == 0 else "sell"
            price = START_PRICES[symbol]
            price = price * 101 // 100 if side == "buy" else price * 99 // 100  # marketable, inside the collar
            price -= price % tick_size(price)
            cl = f"{prefix}-{n + 1}"
            ids.append(cl)
            client.send(client.fix.new_order_single(now, cl, symbol, side, 100, price, account=account))
        pending = set(ids)
        deadline = time.monotonic() + timeout_s

        def final(m: simplefix.FixMessage) -> bool:
            return m.message_type == b"8" and m.get(39) in (b"1", b"2", b"4", b"8", b"0")

        while pending and time.monotonic() < deadline:
            for m in await client.read_until(final, deadline - time.monotonic()):
                pending.discard((m.get(11) or b"").decode())
        for cl in ids:
            reports = exec_reports(client.received, cl)
            result["orders"].append({"cl_ord_id": cl, "statuses": [(r.get(39) or b"").decode() for r in reports],
                                     "text": [(r.get(58) or b"").decode() for r in reports if r.get(58)]})
        result["reports"] = sum(len(o["statuses"]) for o in result["orders"])
        client.send(client.fix.logout(time.time()))
        await client.read_until(lambda m: m.message_type == b"5", 1.0)
    finally:
        await client.close()
    return result
