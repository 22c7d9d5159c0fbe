"""Algorithmic strategies as pure objects: quotes in, order intents out.

A strategy never talks to anyone: ``on_quote(quote)`` returns a list of
:class:`OrderIntent` / :class:`CancelIntent`, and ``on_fill(symbol, side, qty)``
keeps its own view of the position. The agent process around it assigns
ClOrdIDs and sends intents to pre-trade risk (the only place it can send them).

* :class:`MeanReversion`: when the mid strays more than ``threshold_bps`` from its
  moving average, lean against the move with a passive limit at the touch.
* :class:`Momentum`: when the short moving average crosses the long one, follow
  the trend with a marketable limit (crossing the spread).

Both cap their position at ``max_position`` shares and keep at most one working
order per symbol: a new signal first cancels the previous intent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import msgspec

from trustfabric.trading.messages import BUY, SELL, Quote


class OrderIntent(msgspec.Struct, frozen=True):
    ref: str  # strategy-local reference; the agent maps it to a ClOrdID
    symbol: str
    side: str
    qty: int
    price: int
    tif: str = "day"


class CancelIntent(msgspec.Struct, frozen=True):
    ref: str
    symbol: str


Intent = OrderIntent | CancelIntent


@dataclass
class _SymbolState:
    mids: deque = field(default_factory=deque)
    total: int = 0
    position: int = 0
    working_ref: str = ""
    last_signal: int = 0


class _Strategy:
    name = "strategy"

    def __init__(self, symbols: list[str] | tuple[str, ...], *, qty: int = 100, max_position: int = 1_000) -> None:
        self.symbols = frozenset(symbols)
        self.qty = qty
        self.max_position = max_position
        self._state: dict[str, _SymbolState] = {s: _SymbolState() for s in symbols}
        self._refs = 0

    def position(self, symbol: str) -> int:
        return self._state[symbol].position

    def on_fill(self, symbol: str, side: str, qty: int) -> None:
        st = self._state.get(symbol)
        if st is not None:
            st.position += qty if side == BUY else -qty

    def on_order_done(self, symbol: str, ref: str) -> None:
        st = self._state.get(symbol)
        if st is not None and st.working_ref == ref:
            st.working_ref = ""

    def _order(self, st: _SymbolState, symbol: str, side: str, price: int, tif: str = "day") -> list[Intent]:
        room = self.max_position - st.position if side == BUY else self.max_position + st.position
        qty = min(self.qty, room)
        out: list[Intent] = []
        if st.working_ref:
            out.append(CancelIntent(st.working_ref, symbol))
            st.working_ref = ""
        if qty <= 0:
            return out
        self._refs += 1
        ref = f"{self.name}-{self._refs}"
        st.working_ref = ref if tif != "ioc" else ""
        out.append(OrderIntent(ref, symbol, side, qty, price, tif))
        return out

    def _window(self, quote: Quote, window: int) -> _SymbolState | None:
        """The symbol's state with this quote's mid pushed into its last ``window`` mids (twice the mid: stays
        an integer); None for a symbol not traded here, an empty or crossed quote, or a window not full yet."""
        st = self._state.get(quote.symbol)
        if st is None or quote.bid <= 0 or quote.ask <= quote.bid:
            return None
        mid2 = quote.bid + quote.ask
        st.mids.append(mid2)
        st.total += mid2
        if len(st.mids) > window:
            st.total -= st.mids.popleft()
        return st if len(st.mids) >= window else None


class MeanReversion(_Strategy):
    name = "meanrev"

    def __init__(self, symbols, *, window: int = 20, threshold_bps: int = 15, **kw) -> None:
        super().__init__(symbols, **kw)
        self.window = window
        self.threshold_bps = threshold_bps

    def on_quote(self, quote: Quote) -> list[Intent]:
        st = self._window(quote, self.window)
        if st is None:
            return []
        mid2 = st.mids[-1]
        mean2 = st.total / len(st.mids)
        deviation_bps = (mid2 - mean2) * 10_000 / mean2
        signal = -1 if deviation_bps > self.threshold_bps else 1 if deviation_bps < -self.threshold_bps else 0
        if signal == 0 or signal == st.last_signal:
            if signal == 0:
                st.last_signal = 0
            return []
        st.last_signal = signal
        if signal > 0:
            return self._order(st, quote.symbol, BUY, quote.bid)
        return self._order(st, quote.symbol, SELL, quote.ask)


class Momentum(_Strategy):
    name = "momentum"

    def __init__(self, symbols, *, short_window: int = 5, long_window: int = 20, **kw) -> None:
        super().__init__(symbols, **kw)
        if short_window >= long_window:
            raise ValueError("short window must be shorter than the long one")
        self.short_window = short_window
        self.long_window = long_window

    def on_quote(self, quote: Quote) -> list[Intent]:
        st = self._window(quote, self.long_window)
        if st is None:
            return []
        short = sum(list(st.mids)[-self.short_window:]) / self.short_window
        long = st.total / len(st.mids)
        signal = 1 if short > long else -1 if short < long else 0
        if signal == 0 or signal == st.last_signal:
            return []
        first = st.last_signal == 0
        st.last_signal = signal
        if first:
            return []  # wait for a crossing, not the first reading
        if signal > 0:
            return self._order(st, quote.symbol, BUY, quote.ask, "ioc")
        return self._order(st, quote.symbol, SELL, quote.bid, "ioc")
