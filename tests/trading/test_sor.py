"""Smart order routing: price first, then size, splitting across venues."""

import pytest

from trustfabric.trading.errors import RoutingError
from trustfabric.trading.sor import VenueBook, route
from tests.trading.builders import order


def books():
    return [
        VenueBook("V1", "AAPL", bids=((999, 100),), asks=((1001, 100), (1002, 300))),
        VenueBook("V2", "AAPL", bids=((1000, 50),), asks=((1001, 200), (1003, 500))),
    ]


def test_larger_size_first_at_equal_price_and_no_split_when_one_venue_suffices():
    children = route(order(side="buy", qty=150, price=1001, cl_ord_id="P"), books())
    assert [(c.venue, c.order.qty, c.order.price) for c in children] == [("V2", 150, 1001)]
    assert children[0].order.cl_ord_id == "P.1" and children[0].parent_cl_ord_id == "P"


def test_splits_across_venues_by_price_then_size():
    children = route(order(side="buy", qty=450, price=1002), books())
    assert [(c.venue, c.order.qty, c.order.price) for c in children] == [("V2", 200, 1002), ("V1", 250, 1002)]  # every child at the limit
    assert sum(c.order.qty for c in children) == 450


def test_sell_side_takes_highest_bid_first():
    children = route(order(side="sell", qty=120, price=999), books())
    assert [(c.venue, c.order.qty) for c in children] == [("V2", 50), ("V1", 70)]


def test_unfilled_remainder_rests_at_the_limit_on_the_best_same_side_venue():
    children = route(order(side="buy", qty=1000, price=1001), books())
    by_venue = {c.venue: (c.order.qty, c.order.price) for c in children}
    assert by_venue == {"V2": (200 + 700, 1001), "V1": (100, 1001)}
    assert sum(q for q, _ in by_venue.values()) == 1000


def test_no_crossing_liquidity_posts_everything():
    children = route(order(side="buy", qty=10, price=990), books())
    assert [(c.venue, c.order.qty, c.order.price) for c in children] == [("V2", 10, 990)]


def test_no_venue_for_the_symbol_is_refused():
    with pytest.raises(RoutingError) as exc:
        route(order(symbol="ZZZ"), books())
    assert exc.value.reason == "route.no_venue"
