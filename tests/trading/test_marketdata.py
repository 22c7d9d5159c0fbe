"""Synthetic GBM market data: universe, tick grid, spreads, determinism, CSV round trip, CsvReplay."""

import io
import random

import msgspec
import pytest

from trustfabric.errors import TradingError
from trustfabric.trading.marketdata import (
    CSV_FIELDS, DEFAULT_UNIVERSE, CsvReplay, MarketDataGenerator, SymbolSpec, read_csv, record_session, write_csv,
)
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


# ---------------------------------------------------------------- CsvReplay: a recorded session

HEADER = ",".join(CSV_FIELDS) + "\n"


def recorded(tmp_path, ticks=5, seed=3):
    gen = MarketDataGenerator(random.Random(seed), DEFAULT_UNIVERSE[:4], trade_probability=0.5)
    events = record_session(gen, ticks, step_s=30.0, start_ns=1_000)
    path = tmp_path / "session.csv"
    with open(path, "w", newline="") as fh:
        write_csv(events, fh)
    return path, events


def refusal(fn) -> str:
    with pytest.raises(TradingError) as exc:
        fn()
    return exc.value.reason


def test_replay_yields_the_recorded_ticks_in_order_then_stops(tmp_path):
    path, events = recorded(tmp_path, ticks=5)
    replay = CsvReplay.open(path, known_symbols=[s.symbol for s in DEFAULT_UNIVERSE])
    assert replay.symbols == ["AAPL", "MSFT", "NVDA", "AMZN"]
    assert len(replay.ticks) == 5 and replay.events == len(events)
    out = []
    for i in range(5):
        tick = replay.step(30.0, 10**18 + i)
        assert tick and all(e.time_ns == 10**18 + i for e in tick)  # stamped with the floor's clock
        assert len({e.symbol for e in tick if isinstance(e, Quote)}) == 4  # one generator step: a quote each
        out.extend(tick)
    # prices, sizes, seq and order exactly as recorded; only the time is the replay's
    assert [msgspec.structs.replace(e, time_ns=0) for e in out] == [
        msgspec.structs.replace(e, time_ns=0) for e in events]
    assert replay.done and replay.step(30.0, 1) == [] and replay.step(30.0, 2) == []  # stops, no loop
    assert replay.stats() == {"md_replay_ticks": 5.0, "md_replay_ticks_total": 5.0, "md_replay_done": 1.0}


def test_replay_refuses_a_symbol_the_topology_does_not_know(tmp_path):
    path, _ = recorded(tmp_path)
    reason = refusal(lambda: CsvReplay.open(path, known_symbols=["AAPL", "MSFT", "NVDA"]))
    assert reason == "marketdata.unknown_symbol"
    with pytest.raises(TradingError, match="AMZN"):
        CsvReplay.open(path, known_symbols=["AAPL", "MSFT", "NVDA"])


@pytest.mark.parametrize("text, reason", [
    ("symbol,bid,ask\nAAPL,1,2\n", "marketdata.bad_header"),
    ("", "marketdata.bad_header"),
    (HEADER, "marketdata.empty"),
    (HEADER + "Q,1,1,AAPL,1890000,5,1890100,5,,\nQ,1,2,AAPL,1890000,5,18901x0,5,,\n", "marketdata.bad_row"),
    (HEADER + "Q,1,1,AAPL,1890000,5,1890100,5,,\nQ,1,2,AAPL,1890000,5,1.5,5,,\n", "marketdata.bad_row"),
    (HEADER + "Q,2,1,AAPL,1890000,5,1890100,5,,\nQ,1,2,AAPL,1890000,5,1890100,5,,\n", "marketdata.not_monotonic"),
    (HEADER + "Q,1,2,AAPL,1890000,5,1890100,5,,\nQ,1,2,MSFT,4150000,5,4150100,5,,\n", "marketdata.not_monotonic"),
    (HEADER + "Q,1,1,AAPL,1890000,5,1890100,5,,\nQ,1,2,AAPL,1890000,5\x00,1890100,5,,\n", "marketdata.bad_row"),
])
def test_replay_refuses_a_malformed_file_at_start(tmp_path, text, reason):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert refusal(lambda: CsvReplay.open(path, known_symbols=["AAPL", "MSFT"])) == reason


def test_replay_refuses_a_missing_or_binary_file(tmp_path):
    assert refusal(lambda: CsvReplay.open(tmp_path / "nope.csv")) == "marketdata.unreadable"
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert refusal(lambda: CsvReplay.open(tmp_path / "bin.csv")) == "marketdata.unreadable"


def test_replay_groups_events_of_one_time_into_one_tick():
    spec = SymbolSpec("AAPL", 1_890_000)
    q = lambda t, s: Quote(symbol=spec.symbol, bid=1_890_000, bid_size=1, ask=1_890_100, ask_size=1,  # noqa: E731
                           time_ns=t, seq=s)
    replay = CsvReplay([q(5, 1), Trade(symbol="AAPL", price=1_890_000, qty=3, time_ns=5, seq=2), q(9, 3)])
    assert [len(t) for t in replay.ticks] == [2, 1]
    assert [type(e).__name__ for e in replay.step(1.0, 100)] == ["Quote", "Trade"]
    assert not replay.done and replay.step(1.0, 101)[0].seq == 3 and replay.done


def test_record_session_needs_a_tick():
    gen = MarketDataGenerator(random.Random(1), DEFAULT_UNIVERSE[:1])
    assert refusal(lambda: record_session(gen, 0)) == "marketdata.empty"
