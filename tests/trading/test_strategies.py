"""Strategies are pure: quotes in, intents out; positions capped."""

from trustfabric.trading.messages import Quote
from trustfabric.trading.strategies import CancelIntent, MeanReversion, Momentum, OrderIntent


def q(mid, t=0, symbol="AAPL"):
    return Quote(symbol=symbol, bid=mid - 100, bid_size=100, ask=mid + 100, ask_size=100, time_ns=t)


def test_mean_reversion_buys_a_dip_and_sells_a_spike():
    s = MeanReversion(["AAPL"], window=5, threshold_bps=20, qty=10)
    for _ in range(5):
        assert s.on_quote(q(1_000_000)) == []
    intents = s.on_quote(q(990_000))  # -100 bps
    assert intents == [OrderIntent("meanrev-1", "AAPL", "buy", 10, 989_900)]
    assert s.on_quote(q(989_000)) == []  # same signal: no new order
    spike = s.on_quote(q(1_010_000))  # far above the moving average: lean the other way
    assert spike[0] == CancelIntent("meanrev-1", "AAPL") and spike[1].side == "sell"


def test_momentum_follows_a_crossing_with_ioc():
    s = Momentum(["AAPL"], short_window=2, long_window=4, qty=10)
    out = []
    for mid in [1_000_000, 1_000_000, 999_000, 998_000, 997_000, 1_003_000, 1_006_000]:
        out.extend(s.on_quote(q(mid)))
    assert [(i.side, i.tif) for i in out] == [("buy", "ioc")]


def test_position_cap_limits_quantity():
    s = MeanReversion(["AAPL"], window=2, threshold_bps=10, qty=100, max_position=150)
    s.on_fill("AAPL", "buy", 120)
    s.on_quote(q(1_000_000))
    s.on_quote(q(1_000_000))
    intents = s.on_quote(q(990_000))
    assert intents[-1].qty == 30
    s.on_fill("AAPL", "buy", 30)
    assert s.position("AAPL") == 150


def test_unknown_symbols_and_bad_quotes_are_ignored():
    s = Momentum(["AAPL"])
    assert s.on_quote(q(1_000_000, symbol="MSFT")) == []
    assert s.on_quote(Quote(symbol="AAPL", bid=10, bid_size=1, ask=10, ask_size=1, time_ns=0)) == []
