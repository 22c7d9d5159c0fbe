"""Smart order routing across venues by price, then size, splitting when needed.

Given each venue's depth snapshot (:class:`VenueBook`), :func:`route` walks the
opposite side's levels across all venues best price first; at equal prices the
venue showing the larger size goes first (then the venue name, for determinism).
It takes liquidity up to the order's limit, producing one child order per venue
(quantities merged per venue). Every child carries the parent's limit, the price
the client asked for and risk approved: the books the split is planned on may be
stale by the time a child arrives, and a child priced at the level it saw would
rest when that level has gone; at the limit, the venue's matching fills it at the
prices resting there. Any quantity left unmatched is posted on the venue with the
best same-side price (or the first venue) so it can rest. Children carry ClOrdIDs ``<parent>.<n>`` and the parent's
ClOrdID.
"""

from __future__ import annotations

import msgspec

from trustfabric.trading.errors import RoutingError
from trustfabric.trading.messages import BUY, NewOrder, RoutedOrder

NO_VENUE = "route.no_venue"


class VenueBook(msgspec.Struct, frozen=True):
    """One venue's depth snapshot for one symbol: (price, size) levels, best first."""

    venue: str
    symbol: str
    bids: tuple[tuple[int, int], ...] = ()
    asks: tuple[tuple[int, int], ...] = ()


def route(order: NewOrder, books: list[VenueBook] | tuple[VenueBook, ...]) -> list[RoutedOrder]:
    """Split ``order`` into child orders across venues (see module docstring)."""
    books = [b for b in books if b.symbol == order.symbol]
    if not books:
        raise RoutingError(f"no venue quotes {order.symbol}", reason=NO_VENUE)
    buy = order.side == BUY
    levels: list[tuple[int, int, str]] = []
    for book in books:
        for price, size in (book.asks if buy else book.bids):
            if size > 0 and (price <= order.price if buy else price >= order.price):
                levels.append((price, size, book.venue))
    # best price first (lowest ask / highest bid), then larger size, then venue name
    levels.sort(key=(lambda lv: (lv[0], -lv[1], lv[2])) if buy else (lambda lv: (-lv[0], -lv[1], lv[2])))
    remaining = order.qty
    per_venue: dict[str, int] = {}  # venue -> quantity taken there
    for _price, size, venue in levels:
        if remaining == 0:
            break
        take = min(size, remaining)
        remaining -= take
        per_venue[venue] = per_venue.get(venue, 0) + take
    if remaining:
        post_venue = _best_same_side_venue(order, books)
        per_venue[post_venue] = per_venue.get(post_venue, 0) + remaining
    children = []
    for n, (venue, qty) in enumerate(per_venue.items(), start=1):
        child = msgspec.structs.replace(order, cl_ord_id=f"{order.cl_ord_id}.{n}", qty=qty)
        children.append(RoutedOrder(order=child, venue=venue, parent_cl_ord_id=order.cl_ord_id))
    return children


def _best_same_side_venue(order: NewOrder, books: list[VenueBook]) -> str:
    best_venue = books[0].venue
    best = None
    for book in books:
        levels = book.bids if order.side == BUY else book.asks
        if levels:
            price = levels[0][0]
            if best is None or (price > best if order.side == BUY else price < best):
                best, best_venue = price, book.venue
    return best_venue
