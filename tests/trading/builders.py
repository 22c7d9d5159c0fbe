"""Shared builders for the trading tests."""

from __future__ import annotations

import itertools

from trustfabric.trading.messages import NewOrder, to_price

AGENT = "spiffe://test.acme/algos/meanrev"
AGENT2 = "spiffe://test.acme/algos/momentum"
ACCOUNT = "ACC-1"
T0 = 1_790_000_000_000_000_000  # ns

_ids = itertools.count(1)


def order(**kw) -> NewOrder:
    fields = dict(cl_ord_id=f"o{next(_ids)}", account=ACCOUNT, agent=AGENT, symbol="AAPL", side="buy",
                  qty=100, price=to_price("100.00"), tif="day", time_ns=T0)
    fields.update(kw)
    return NewOrder(**fields)
