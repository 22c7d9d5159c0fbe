"""Synthetic GBM market data: universe, tick grid, spreads, determinism, CSV replay."""

import io
import random

import pytest

from trustfabric.errors import TradingError
from trustfabric.trading.marketdata import DEFAULT_UNIVERSE, MarketDataGenerator, read_csv, write_csv
from trustfabric.trading.messages import Quote, Trade
from trustfabric.trading.risk import tick_size


def run(seed, steps=200):
    gen = MarketDataGenerator(random.Random(seed))
    events = []
    for i in range(steps):
        events.extend(gen.step(1.0, 1_000_000_000 * i))
    return gen, events


def test_universe_has_at_least_20_symbols_on_both_tick_grids():
    assert len(DEFAULT_UNIVERSE) >= 20
    prices = [s.price for s in DEFAULT_UNIVERSE]
    assert min(prices) < 10_000 < max(prices)


def test_quotes_are_on_tick_with_positive_spread():
    _, events = run(7)
    quotes = [e for e in events if isinstance(e, Quote)]
    assert len({q.symbol for q in quotes}) >= 20
    for q in quotes:
        assert q.bid % tick_size(q.bid) == 0 and q.ask % tick_size(q.ask) == 0
        assert q.ask > q.bid > 0 and q.bid_size > 0 and q.ask_size > 0
        assert (q.ask - q.bid) * 10_000 < q.bid * 100  # spreads well under 1% here
    assert any(isinstance(e, Trade) for e in events)


def test_same_seed_same_stream_different_seed_different_stream():
    assert run(3)[1] == run(3)[1]
    assert run(3)[1] != run(4)[1]


def test_prices_move():
    gen, _ = run(11, steps=500)
    moved = [s.symbol for s in DEFAULT_UNIVERSE if abs(gen.fair[s.symbol] - s.price) > 0]
    assert len(moved) == len(DEFAULT_UNIVERSE)


def test_csv_round_trip_is_exact():
    _, events = run(5, steps=20)
    buf = io.StringIO()
    assert write_csv(events, buf) == len(events)
    buf.seek(0)
    assert list(read_csv(buf)) == events


@pytest.mark.parametrize("row", [
    "Q,1,1,AAPL,100,1,99,1,,",  # ask below bid
    "Q,1,1,,100,1,101,1,,",  # no symbol
    "T,1,1,AAPL,,,,,0,5",  # zero price
    "X,1,1,AAPL,,,,,1,1",  # unknown kind
    "Q,abc,1,AAPL,100,1,101,1,,",  # not a number
    "Q,1",  # short row
])
def test_csv_bad_rows_are_refused(row):
    text = "kind,time_ns,seq,symbol,bid,bid_size,ask,ask_size,price,qty\n" + row + "\n"
    with pytest.raises(TradingError) as exc:
        list(read_csv(io.StringIO(text)))
    assert exc.value.reason == "marketdata.bad_row"


def test_csv_bad_header_is_refused():
    with pytest.raises(TradingError):
        list(read_csv(io.StringIO("a,b\n")))
