"""order-router: routes only orders carrying pre-trade risk's approval bound to them.

``route_order``: :class:`~trustfabric.trading.cores.RouterCore` verifies the
approval (forged, altered, replayed or missing: refused with its reason, whoever
the caller is), splits the order across the venues by their last known books,
and sends each child to its venue (``execute``). Venue replies refresh the books.

The split is planned on the books the router last saw, which may be stale; each
child carries the parent's limit (:mod:`trustfabric.trading.sor` says why).
"""

from __future__ import annotations


from trustfabric.audit.events import Kind
from trustfabric.trading.approval import ApprovalKeyring, ApprovalVerifier
from trustfabric.trading.cores import RouterCore
from trustfabric.trading.messages import PRICE_SCALE, CancelOrder, RoutedOrder
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import RouteReply, VenueOrder, VenueReply, decoder

VENUES = ("venue-a", "venue-b")


class RouterService(FloorService):
    name = "order-router"
    peers = VENUES

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        keyring = ApprovalKeyring("k1", bytes.fromhex(runtime.boot["approval_key"]))
        self.core = RouterCore(ApprovalVerifier(keyring), VENUES, runtime.events)
        self.received = self.refused = self.children = self.venue_failures = 0
        self.refusals: dict[str, int] = {}
        self._routed = decoder(RoutedOrder)
        self._cancel = decoder(CancelOrder)
        self._venue = decoder(VenueReply)

    def on_venue_reply(self, resp) -> None:
        if not resp.ok:
            self.venue_failures += 1
            return
        self.core.update_book(self._venue.decode(resp.body).book)

    def register(self, svc) -> None:
        @svc.handler(action="route_order", resource="router/orders")
        def route_order(req, ctx):
            routed = self._routed.decode(req.body)
            self.received += 1
            outcome = self.core.handle(routed, self.rt.clock.monotonic_ns())  # the approval's TTL: monotonic
            if outcome.reject is not None:
                self.refused += 1
                self.refusals[outcome.reject.reason] = self.refusals.get(outcome.reject.reason, 0) + 1
                return encode_body(RouteReply(False, outcome.reject.reason))
            parent = routed.order
            siblings = [c.order.cl_ord_id for c in outcome.children]
            self.rt.events.emit(Kind.DECISION, trace_id=parent.cl_ord_id, principal=parent.agent, action="route",
                                resource=parent.symbol, decision="allow", reason="route.ok",
                                detail={"children": [[c.venue, c.order.qty] for c in outcome.children]})
            for child in outcome.children:
                link = self.rt.link(child.venue)
                if not link.up:
                    self.rt.loop_task(link.ensure())
                order = child.order
                ok = link.request("execute", f"{child.venue}/orders",
                                  encode_body(VenueOrder(child=order, parent=parent, siblings=siblings)),
                                  symbol=order.symbol, notional=order.qty * order.price / PRICE_SCALE,
                                  callback=self.on_venue_reply, trace_id=parent.cl_ord_id)
                if ok:
                    self.children += 1
                else:
                    self.venue_failures += 1
            return encode_body(RouteReply(True, "route.ok", len(outcome.children)))

        @svc.handler(action="cancel_order", resource="router/orders")
        def cancel_order(req, ctx):
            cancel = self._cancel.decode(req.body)
            for venue, child_cancel in self.core.cancels_for(cancel):
                self.rt.link(venue).request("cancel_order", f"{venue}/orders", encode_body(child_cancel),
                                            symbol=cancel.symbol)
            return encode_body(RouteReply(True, "route.ok"))

    async def run(self) -> None:
        for venue in VENUES:
            self.rt.loop_task(self.rt.link(venue).ensure(timeout_s=10.0))
        await self.rt.stopped.wait()

    def stats(self) -> dict[str, float]:
        out = {"router_received": self.received, "router_refused": self.refused, "children": self.children,
               "venue_failures": self.venue_failures}
        for reason, n in self.refusals.items():
            out[f"refused:{reason}"] = n
        return out
