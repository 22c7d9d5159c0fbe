"""A floor started on a recorded session (``md_csv``): the algo, risk and the venues see the file's prices.

The session is recorded with the library's recorder on a universe of its own (prices
$12-$19, far from the floor's GBM defaults), so an order priced, approved and filled
at those levels can only come from the file: the algo prices its orders from the
quotes it received, risk's price collar checks them against its reference, the
venues' market maker quotes around the same file.
"""

import asyncio
import os
import random
import subprocess
import sys

import msgspec
import pytest

from trustfabric.audit.log import Query, audit_dir, open_log
from trustfabric.errors import TradingError
from trustfabric.policy.topology import Topology
from trustfabric.trading.marketdata import CsvReplay, MarketDataGenerator, SymbolSpec, record_session, write_csv
from trustfabric.trading.messages import PRICE_SCALE, Quote
from trustfabric.trading.launcher import Floor
from trustfabric.trading.services.market_data import generator_for

from tests.trading.processes import alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MOMENTUM = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "AMD")  # algo-momentum's streams
SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
            "algo-momentum")
TICKS = 30
BENCH_ORDERS = 16


def record(path, symbols=MOMENTUM, ticks=TICKS, seed=11):
    universe = [SymbolSpec(s, (12 + i) * PRICE_SCALE, sigma=0.3, spread_bps=5) for i, s in enumerate(symbols)]
    events = record_session(MarketDataGenerator(random.Random(seed), universe, trade_probability=0.1), ticks,
                            start_ns=1_700_000_000 * 10**9)
    with open(path, "w", newline="") as fh:
        write_csv(events, fh)
    return events


def central_log(home, action):
    log = open_log(audit_dir(home))
    try:
        return [r.event() for r in log.query(Query(action=action))]
    finally:
        log.close()


async def test_a_floor_on_a_recorded_session_quotes_approves_and_fills_at_the_files_prices(tmp_path):
    events = record(tmp_path / "session.csv")
    quotes = [e for e in events if isinstance(e, Quote)]
    last = {q.symbol: q for q in quotes}
    quoted = {s: {p for q in quotes if q.symbol == s for p in (q.bid, q.ask)} for s in MOMENTUM}
    # what the venues' market maker can rest: the recorded bid/ask, venue-b one spread wider
    liquidity = {s: quoted[s] | {p for q in quotes if q.symbol == s for p in (2 * q.bid - q.ask, 2 * q.ask - q.bid)}
                 for s in MOMENTUM}
    home = tmp_path / "home"
    floor = Floor(home, "zero-trust", services=SERVICES, md_interval_s=0.1, md_csv=tmp_path / "session.csv")
    await floor.start()
    try:
        stats = floor.stats
        assert await floor.wait_for(lambda: all(stats().get(n, {}).get(k) == 1.0 for n, k in (
            ("market-data", "md_replay_done"), ("venue-a", "venue_replay_done"), ("venue-b", "venue_replay_done"),
            ("algo-momentum", "link_up"))), 30.0, 0.1), stats()
        md = stats()["market-data"]
        assert md["md_replay_ticks"] == md["md_replay_ticks_total"] == TICKS
        assert md["md_published"] == len(events)  # every recorded event, once; then publishing stopped
        await asyncio.sleep(0.5)  # the last long-poll deliveries reach the algo (bounded, not a logic wait)
        floor.command("algo-momentum", "bench", orders=BENCH_ORDERS, tag=1)
        oms = lambda: stats().get("oms", {})  # noqa: E731
        assert await floor.wait_for(lambda: oms().get("bench_tag") == 1.0 and oms().get("bench_orders", 0)
                                    >= BENCH_ORDERS and oms().get("oms_fills", 0) > 0, 20.0, 0.1), stats()
        assert stats()["market-data"]["md_published"] == len(events)  # still stopped at the end of the file
    finally:
        await floor.stop()
    assert not [p for p in floor.pids() if alive(p)]

    intents = central_log(home, "order.intent")
    bench = [e for e in intents if e.trace_id.startswith("BENCH.1.")]
    assert len(bench) == BENCH_ORDERS
    for e in bench:  # priced from the last quote the algo received: the file's last quote for the symbol
        q = last[e.resource]
        assert e.detail["price"] == (q.ask if e.detail["side"] == "buy" else q.bid), (e.resource, e.detail)
    for e in intents:  # every quote that reached the algo was a recorded one
        assert e.detail["price"] in quoted[e.resource], (e.resource, e.detail)
    approved = {e.trace_id for e in central_log(home, "risk.check") if e.decision == "allow"}
    assert {e.trace_id for e in bench} <= approved  # risk's reference (collar) is the recorded mid
    fills = central_log(home, "oms.fill")
    assert any(f.trace_id.startswith("BENCH.1.") for f in fills)
    for f in fills:  # the venues' liquidity follows the same file
        assert f.detail["price"] in liquidity[f.resource], (f.resource, f.detail)


async def test_a_floor_refuses_a_file_with_a_symbol_its_topology_does_not_know_before_starting(tmp_path):
    record(tmp_path / "session.csv", symbols=("AAPL", "ZZZZ"), ticks=2)
    floor = Floor(tmp_path / "home", "zero-trust", services=SERVICES, md_csv=tmp_path / "session.csv")
    with pytest.raises(TradingError) as exc:
        await floor.start()
    assert exc.value.reason == "marketdata.unknown_symbol" and "ZZZZ" in exc.value.detail
    assert floor.processes == {} and floor.server is None  # nothing was started


async def test_a_market_data_process_given_a_malformed_file_is_refused_at_start(tmp_path):
    bad = tmp_path / "bad.csv"
    record(bad, ticks=3)
    lines = bad.read_text().splitlines()
    lines[5] = lines[5].replace(",", ",x", 1)  # a bad number in the time column
    bad.write_text("\n".join(lines) + "\n")
    floor = Floor(tmp_path / "home", "perimeter", services=())
    await floor.start()
    try:
        for name in ("market-data", "venue-a"):
            floor.promote(name)
            proc = await floor.launch(name, dict(floor.boot_line(name), md_csv=str(bad)), timeout_s=20.0)
            assert proc.status == "refused" and "marketdata.bad_row" in proc.detail, (name, proc.detail)
            await asyncio.wait_for(proc.proc.wait(), 10.0)
    finally:
        await floor.stop()


def _cli(home, *args):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home), COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "trustfabric.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_record_md_writes_a_session_the_floor_replays_and_up_refuses_a_bad_one(tmp_path):
    out = tmp_path / "s.csv"
    done = _cli(tmp_path, "floor", "record-md", "--symbols", "AAPL,JPM", "--ticks", "4", "--seed", "5",
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    replay = CsvReplay.open(out, known_symbols=Topology.load(Topology.default_path()).symbols)
    assert replay.symbols == ["AAPL", "JPM"] and len(replay.ticks) == 4
    # the same generator and seed as a GBM floor: the floor's own first tick
    first = generator_for(["AAPL", "JPM"], 5).step(30.0, 0)
    assert [msgspec.structs.replace(e, time_ns=0) for e in replay.step(30.0, 0)] == first
    refused = _cli(tmp_path, "floor", "record-md", "--symbols", "AAPL,ZZZZ", "--out", str(tmp_path / "z.csv"))
    assert refused.returncode == 1 and "marketdata.unknown_symbol" in refused.stderr
    assert not (tmp_path / "z.csv").exists()
    out.write_text(out.read_text() + "Q,1\n")
    up = _cli(tmp_path, "up", "--md-csv", str(out), "--duration", "1")
    assert up.returncode == 1 and "marketdata.bad_row" in up.stderr, up.stderr[-2000:]
    assert not (tmp_path / "floor" / "runtime.json").exists()  # refused before anything started
