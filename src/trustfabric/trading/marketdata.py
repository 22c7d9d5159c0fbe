"""Synthetic market data: geometric Brownian motion quotes and trades, and CSV replay.

:class:`MarketDataGenerator` moves each symbol's fair value by GBM,
``S <- S * exp((mu - sigma^2 / 2) dt + sigma sqrt(dt) Z)``, with the random
source passed in (``random.Random(seed)``), so a seed reproduces a session
exactly. Quotes straddle the fair value with a spread of a few basis points, at
least one tick, and are rounded to the tick grid (0.01 USD at or above $1,
0.0001 below; prices are integer units of 1/10,000 USD). Now and then a trade
prints at the bid or ask.

:func:`write_csv` / :func:`read_csv` store and replay a stream of quotes and trades
(one row per event, exact integer prices); the reader refuses malformed rows with
``marketdata.bad_row``. :func:`record_session` runs a generator for a number of
ticks (what ``trustfabric floor record-md`` writes).

:class:`CsvReplay` is a recorded session with the generator's interface (``step``,
``symbols``): a floor started with ``md_csv`` publishes the file's quotes and trades
instead of GBM, one recorded tick per step. The whole file is read and checked when
the replay is built, so a bad file is refused at start, never half-way through a
session. Refusals (``TradingError``, each with its reason)::

    marketdata.unreadable      the file cannot be opened or is not UTF-8 text
    marketdata.bad_header      the first row is not CSV_FIELDS
    marketdata.bad_row         a row with a bad kind, number, symbol or price
    marketdata.empty           no event at all
    marketdata.not_monotonic   time_ns goes backwards or seq does not increase
    marketdata.unknown_symbol  a symbol the floor's topology does not know

At the end of the file the replay *stops*: ``step`` returns no event, ``done`` is
true, and the services say so in their stats (``md_replay_done``); it never loops
(a looped session would jump prices back to the first tick).
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from trustfabric.errors import TradingError
from trustfabric.trading.messages import PRICE_SCALE, Quote, Trade
from trustfabric.trading.risk import tick_size

BAD_ROW = "marketdata.bad_row"
BAD_HEADER = "marketdata.bad_header"
UNREADABLE = "marketdata.unreadable"
EMPTY = "marketdata.empty"
NOT_MONOTONIC = "marketdata.not_monotonic"
UNKNOWN_SYMBOL = "marketdata.unknown_symbol"

SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds


class SymbolSpec(msgspec.Struct, frozen=True):
    symbol: str
    price: int  # starting price, units of 1/10,000 USD
    sigma: float = 0.30  # annualised volatility
    mu: float = 0.0
    spread_bps: float = 2.0
    size: int = 500  # typical top-of-book size


def _usd(dollars: float) -> int:
    return int(round(dollars * PRICE_SCALE))


DEFAULT_UNIVERSE: tuple[SymbolSpec, ...] = (
    SymbolSpec("AAPL", _usd(189.50), 0.25), SymbolSpec("MSFT", _usd(415.20), 0.22),
    SymbolSpec("NVDA", _usd(122.40), 0.50, spread_bps=3), SymbolSpec("AMZN", _usd(181.30), 0.30),
    SymbolSpec("GOOGL", _usd(172.60), 0.28), SymbolSpec("META", _usd(505.10), 0.35),
    SymbolSpec("TSLA", _usd(248.90), 0.55, spread_bps=3), SymbolSpec("JPM", _usd(201.70), 0.20),
    SymbolSpec("V", _usd(276.40), 0.18), SymbolSpec("XOM", _usd(112.30), 0.24),
    SymbolSpec("JNJ", _usd(151.80), 0.15), SymbolSpec("PG", _usd(166.20), 0.14),
    SymbolSpec("KO", _usd(62.45), 0.14), SymbolSpec("PFE", _usd(28.70), 0.25, spread_bps=4),
    SymbolSpec("INTC", _usd(21.35), 0.40, spread_bps=5), SymbolSpec("F", _usd(11.42), 0.35, spread_bps=9),
    SymbolSpec("SNAP", _usd(9.87), 0.60, spread_bps=10), SymbolSpec("NIO", _usd(4.61), 0.70, spread_bps=22),
    SymbolSpec("SIRI", _usd(3.12), 0.45, spread_bps=32), SymbolSpec("PLUG", _usd(2.48), 0.80, spread_bps=40),
    SymbolSpec("CIDM", _usd(0.8125), 0.90, spread_bps=12, size=5_000),
    SymbolSpec("MULN", _usd(0.2154), 1.20, spread_bps=20, size=20_000),
)
"""22 symbols from $0.21 to $505, with tick sizes of both grids."""


def round_to_tick(price: float, down: bool) -> int:
    tick = tick_size(int(price))
    steps = math.floor(price / tick) if down else math.ceil(price / tick)
    return max(tick, steps * tick)


class MarketDataGenerator:
    """GBM fair values per symbol -> tick-aligned quotes (and occasional trades)."""

    def __init__(self, rng: random.Random, universe: Iterable[SymbolSpec] = DEFAULT_UNIVERSE, *,
                 trade_probability: float = 0.2) -> None:
        self.rng = rng
        self.specs = {s.symbol: s for s in universe}
        self.fair: dict[str, float] = {s.symbol: float(s.price) for s in self.specs.values()}
        self.trade_probability = trade_probability
        self.seq = 0

    @property
    def symbols(self) -> list[str]:
        return list(self.specs)

    def quote(self, symbol: str, time_ns: int) -> Quote:
        spec = self.specs[symbol]
        fair = self.fair[symbol]
        half = max(fair * spec.spread_bps / 20_000.0, tick_size(int(fair)) / 2)
        bid = round_to_tick(fair - half, down=True)
        ask = round_to_tick(fair + half, down=False)
        if ask <= bid:
            ask = bid + tick_size(bid)
        rng = self.rng
        self.seq += 1
        return Quote(symbol=symbol, bid=bid, bid_size=max(1, int(spec.size * rng.uniform(0.2, 2.0))),
                     ask=ask, ask_size=max(1, int(spec.size * rng.uniform(0.2, 2.0))), time_ns=time_ns,
                     seq=self.seq)

    def step(self, dt_s: float, time_ns: int) -> list[Quote | Trade]:
        """Advance every symbol by ``dt_s`` seconds; one quote each, and maybe a trade."""
        out: list[Quote | Trade] = []
        dt = dt_s / SECONDS_PER_YEAR
        rng = self.rng
        for symbol, spec in self.specs.items():
            z = rng.gauss(0.0, 1.0)
            self.fair[symbol] *= math.exp((spec.mu - spec.sigma ** 2 / 2) * dt + spec.sigma * math.sqrt(dt) * z)
            q = self.quote(symbol, time_ns)
            out.append(q)
            if rng.random() < self.trade_probability:
                self.seq += 1
                out.append(Trade(symbol=symbol, price=q.bid if rng.random() < 0.5 else q.ask,
                                 qty=max(1, int(spec.size * rng.uniform(0.05, 1.0))), time_ns=time_ns,
                                 seq=self.seq))
        return out


CSV_FIELDS = ("kind", "time_ns", "seq", "symbol", "bid", "bid_size", "ask", "ask_size", "price", "qty")


def write_csv(events: Iterable[Quote | Trade], out: io.TextIOBase) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    n = 0
    for e in events:
        if isinstance(e, Quote):
            writer.writerow(("Q", e.time_ns, e.seq, e.symbol, e.bid, e.bid_size, e.ask, e.ask_size, "", ""))
        else:
            writer.writerow(("T", e.time_ns, e.seq, e.symbol, "", "", "", "", e.price, e.qty))
        n += 1
    return n


def read_csv(source: io.TextIOBase) -> Iterator[Quote | Trade]:
    """Replay a CSV written by :func:`write_csv`; a malformed row raises ``marketdata.bad_row``."""
    reader = csv.reader(source)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise TradingError(f"line 1: {exc}", reason=BAD_HEADER) from None
    if header is None or tuple(header) != CSV_FIELDS:
        raise TradingError(f"header must be {','.join(CSV_FIELDS)}", reason=BAD_HEADER)
    line = 1
    while True:
        line += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TradingError(f"line {line}: {exc}", reason=BAD_ROW) from None
        try:
            if len(row) != len(CSV_FIELDS):
                raise ValueError(f"{len(row)} fields, expected {len(CSV_FIELDS)}")
            kind, time_ns, seq, symbol = row[0], int(row[1]), int(row[2]), row[3]
            if not symbol:
                raise ValueError("empty symbol")
            if kind == "Q":
                bid, bid_size, ask, ask_size = int(row[4]), int(row[5]), int(row[6]), int(row[7])
                if bid <= 0 or ask < bid or bid_size < 0 or ask_size < 0:
                    raise ValueError("bad quote values")
                yield Quote(symbol=symbol, bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size,
                            time_ns=time_ns, seq=seq)
            elif kind == "T":
                price, qty = int(row[8]), int(row[9])
                if price <= 0 or qty <= 0:
                    raise ValueError("bad trade values")
                yield Trade(symbol=symbol, price=price, qty=qty, time_ns=time_ns, seq=seq)
            else:
                raise ValueError(f"kind {kind!r}")
        except (ValueError, IndexError) as exc:
            raise TradingError(f"line {line}: {exc}", reason=BAD_ROW) from None


def record_session(generator: MarketDataGenerator, ticks: int, *, step_s: float = 30.0,
                   start_ns: int = 0, interval_ns: int = 1_000_000_000) -> list[Quote | Trade]:
    """``ticks`` steps of ``generator`` (``step_s`` market seconds each), stamped ``start_ns + i * interval_ns``."""
    if ticks < 1:
        raise TradingError("a session needs at least one tick", reason=EMPTY)
    events: list[Quote | Trade] = []
    for i in range(ticks):
        events.extend(generator.step(step_s, start_ns + i * interval_ns))
    return events


class CsvReplay:
    """A recorded session, tick by tick, behind the generator's ``step(dt_s, time_ns)``.

    A tick is a run of consecutive events with the same recorded ``time_ns`` (one
    generator step when :func:`record_session` wrote the file). Each ``step`` returns
    the next tick's events with prices, sizes and ``seq`` as recorded and ``time_ns``
    set to the floor's clock (the session is replayed now, at the floor's pace, so a
    reference price is as fresh as the tick that set it); ``dt_s`` is ignored, the
    file fixes the path. After the last tick ``step`` returns ``[]`` and ``done`` is
    true: the replay stops, it does not loop.
    """

    def __init__(self, events: Sequence[Quote | Trade], *, known_symbols: Iterable[str] | None = None,
                 source: str = "") -> None:
        self.source = source
        if not events:
            raise TradingError(f"{source or 'session'}: no quote or trade", reason=EMPTY)
        known = None if known_symbols is None else frozenset(known_symbols)
        seen: dict[str, None] = {}
        ticks: list[tuple[Quote | Trade, ...]] = []
        current: list[Quote | Trade] = []
        previous: Quote | Trade | None = None
        for n, event in enumerate(events, start=1):
            if previous is not None:
                if event.time_ns < previous.time_ns:
                    raise TradingError(f"event {n}: time_ns {event.time_ns} before {previous.time_ns}",
                                       reason=NOT_MONOTONIC)
                if event.seq <= previous.seq:
                    raise TradingError(f"event {n}: seq {event.seq} after {previous.seq}", reason=NOT_MONOTONIC)
                if event.time_ns != previous.time_ns:
                    ticks.append(tuple(current))
                    current = []
            seen.setdefault(event.symbol, None)
            current.append(event)
            previous = event
        ticks.append(tuple(current))
        if known is not None:
            unknown = sorted(set(seen) - known)
            if unknown:
                shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise TradingError(f"{source or 'session'}: symbols not in the topology: {shown}",
                                   reason=UNKNOWN_SYMBOL)
        self._symbols = list(seen)
        self.ticks: tuple[tuple[Quote | Trade, ...], ...] = tuple(ticks)
        self.events = sum(len(t) for t in ticks)
        self.position = 0

    @classmethod
    def from_csv(cls, source: io.TextIOBase, *, known_symbols: Iterable[str] | None = None,
                 name: str = "") -> "CsvReplay":
        return cls(list(read_csv(source)), known_symbols=known_symbols, source=name)

    @classmethod
    def open(cls, path: str | Path, *, known_symbols: Iterable[str] | None = None) -> "CsvReplay":
        """Read and check the whole file at ``path``; every failure is a ``marketdata.*`` refusal."""
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                return cls.from_csv(fh, known_symbols=known_symbols, name=str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise TradingError(f"{path}: {type(exc).__name__}: {exc}", reason=UNREADABLE) from None

    @property
    def symbols(self) -> list[str]:
        """The symbols of the file, in order of first appearance."""
        return list(self._symbols)

    @property
    def done(self) -> bool:
        return self.position >= len(self.ticks)

    def step(self, dt_s: float, time_ns: int) -> list[Quote | Trade]:
        """The next recorded tick, stamped ``time_ns``; ``[]`` once the file is exhausted."""
        if self.done:
            return []
        tick = self.ticks[self.position]
        self.position += 1
        return [msgspec.structs.replace(e, time_ns=time_ns) for e in tick]

    def stats(self, prefix: str = "md_replay") -> dict[str, float]:
        return {f"{prefix}_ticks": float(self.position), f"{prefix}_ticks_total": float(len(self.ticks)),
                f"{prefix}_done": float(self.done)}
