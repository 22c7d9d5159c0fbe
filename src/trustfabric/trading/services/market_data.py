"""market-data: GBM quotes and trades for every symbol of the topology, as per-symbol streams.

A subscriber long-polls one stream per request (``subscribe`` on ``md/<SYMBOL>``
with the last sequence it saw); every delivery is therefore a request the
subscriber's enforcement-point session must allow, so a quarantine or a lost
grant stops the data at the next delivery. The generator is seeded: the same
seed replays the same session (the venues run the same path for their liquidity).

With ``md_csv`` in the boot line (a file written by ``trustfabric floor record-md``
or :func:`~trustfabric.trading.marketdata.write_csv`) the source is a
:class:`~trustfabric.trading.marketdata.CsvReplay` instead (:func:`market_source`),
one recorded tick per interval; the venues replay the same file. The file is read
and checked before the service reports READY: a bad file or a symbol the topology
does not know is ``REFUSED marketdata.<reason>``. At the end of the file publishing
stops and the stats say so (``md_replay_done`` = 1).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import deque

from trustfabric.trading.marketdata import DEFAULT_UNIVERSE, CsvReplay, MarketDataGenerator, SymbolSpec
from trustfabric.trading.messages import PRICE_SCALE, Quote
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import MdBatch, MdPoll, decoder

POLL_WAIT_S = 1.0
KEEP = 64


def universe_for(symbols: list[str] | tuple[str, ...], seed: int) -> list[SymbolSpec]:
    """Specs for the topology's symbols: the default universe's where known, seeded ones otherwise."""
    known = {s.symbol: s for s in DEFAULT_UNIVERSE}
    rng = random.Random(seed ^ 0x5EED)
    out = []
    for sym in symbols:
        spec = known.get(sym)
        if spec is None:
            spec = SymbolSpec(sym, int(round(rng.uniform(20.0, 400.0), 2) * PRICE_SCALE), rng.uniform(0.15, 0.45))
        out.append(spec)
    return out


def generator_for(symbols, seed: int) -> MarketDataGenerator:
    return MarketDataGenerator(random.Random(seed), universe_for(symbols, seed), trade_probability=0.1)


def market_source(boot: dict, symbols) -> MarketDataGenerator | CsvReplay:
    """The floor's market: the file in ``boot["md_csv"]`` (checked against ``symbols``), else seeded GBM.

    Raises ``TradingError`` (``marketdata.*``) for a file that cannot be replayed.
    """
    path = boot.get("md_csv")
    if path:
        return CsvReplay.open(path, known_symbols=symbols)
    return generator_for(symbols, int(boot.get("seed", 7)))


class MarketDataService(FloorService):
    name = "market-data"

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.interval = float(runtime.boot.get("md_interval_s", 0.2))
        self.market_step_s = float(runtime.boot.get("md_step_s", 30.0))  # market seconds per tick
        self.gen: MarketDataGenerator | CsvReplay | None = None  # set in prepare(): a bad file is REFUSED
        self.streams: dict[str, deque] = {s: deque(maxlen=KEEP) for s in runtime.topology.symbols}
        self.waiters: dict[str, asyncio.Event] = {s: asyncio.Event() for s in runtime.topology.symbols}
        self.seq = 0
        self.published = 0
        self.deliveries = 0
        self._poll = decoder(MdPoll)

    def register(self, svc) -> None:
        @svc.handler(action="subscribe", resource=lambda req: req.resource)
        async def subscribe(req, ctx):
            symbol = req.resource[3:] if req.resource.startswith("md/") else ""
            stream = self.streams.get(symbol)
            if stream is None:
                return encode_body(MdBatch(seq=self.seq))
            after = self._poll.decode(req.body).after if req.body else 0
            if not stream or stream[-1][0] <= after:
                event = self.waiters[symbol]
                try:
                    await asyncio.wait_for(event.wait(), POLL_WAIT_S)
                except TimeoutError:
                    pass
            events = [e for s, e in stream if s > after]
            self.deliveries += 1
            return encode_body(MdBatch(seq=stream[-1][0] if stream else after, events=events))

    async def prepare(self) -> None:
        self.gen = market_source(self.rt.boot, self.rt.topology.symbols)

    async def run(self) -> None:
        assert self.gen is not None
        step = 0
        replay = self.gen if isinstance(self.gen, CsvReplay) else None
        while not self.rt.stopped.is_set():
            if replay is not None and replay.done:
                print(f"market-data: replay of {replay.source} ended after {len(replay.ticks)} ticks; "
                      "publishing stopped", file=sys.stderr, flush=True)
                self.rt.report_soon()
                await self.rt.stopped.wait()
                return
            step += 1
            now_ns = time.time_ns()
            for event in self.gen.step(self.market_step_s, now_ns):
                self.seq += 1
                self.streams[event.symbol].append((self.seq, event))
                self.published += 1
            for symbol, event in list(self.waiters.items()):
                event.set()
                self.waiters[symbol] = asyncio.Event()
            await asyncio.sleep(self.interval)

    def stats(self) -> dict[str, float]:
        out = {"md_published": self.published, "md_deliveries": self.deliveries}
        if isinstance(self.gen, CsvReplay):
            out.update(self.gen.stats("md_replay"))
        return out


def last_quotes(batch: MdBatch) -> list[Quote]:
    return [e for e in batch.events if isinstance(e, Quote)]


async def follow_stream(runtime, symbol: str, on_event) -> None:
    """Long-poll ``md/<symbol>`` at market-data until the service stops; a refusal backs off."""
    link = runtime.link("market-data")
    dec = decoder(MdBatch)
    after = 0
    while not runtime.stopped.is_set():
        try:
            reply = await link.call("subscribe", f"md/{symbol}", encode_body(MdPoll(after)), symbol=symbol)
        except Exception:  # noqa: BLE001 - link down or refused: retry later
            await asyncio.sleep(0.5)
            continue
        if not reply.ok:
            await asyncio.sleep(0.5)
            continue
        batch = dec.decode(reply.body)
        after = max(after, batch.seq)
        for event in batch.events:
            on_event(event)
