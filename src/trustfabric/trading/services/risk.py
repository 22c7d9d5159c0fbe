"""pre-trade-risk: the 15c3-5 core between the agents and the router.

The process around :class:`~trustfabric.trading.cores.RiskCore` (whose checks are
:mod:`trustfabric.trading.risk`): transport, enforcement, wiring.

``submit_order``: the core checks the order against the caller's authenticated
identity (an agent may submit only for itself; the FIX gateway for its clients),
signs an approval bound to it, and forwards ``route_order`` to the router with the
approval - pipelined, the agent's ack does not wait for the router. Reference
prices come from every market-data stream; fills and finished orders come from
the OMS (``read_positions`` with a cursor) and ride back to each agent on its
next ack.

Kill switch: the control plane sends a ``killswitch`` command (action, scope,
target, the person's principal, whether they are privileged, when they last
passed MFA - moved onto this process's monotonic clock at receipt, as the kill
switch's own durations run on it) after logging the person in; the core applies it (halt cancels the
working orders in scope, which go to the router as cancels; ``resume`` is the
first person's request or, when one is pending, the second person's approval)
and the answer goes back as a ``CommandResult``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import msgspec

from trustfabric.control.protocol import Command, CommandResult
from trustfabric.errors import TrustFabricError
from trustfabric.trading import killswitch as ks
from trustfabric.trading.approval import ApprovalKeyring, ApprovalSigner
from trustfabric.trading.cores import RiskCore
from trustfabric.trading.messages import PRICE_SCALE, CancelOrder, NewOrder, RoutedOrder
from trustfabric.trading.risk import DOLLAR, PreTradeRiskChecker, RiskLimits
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.market_data import follow_stream
from trustfabric.trading.services.wire import AgentUpdate, OrderAck, PositionsQuery, PositionsReply, RouteReply, decoder

OMS_POLL_S = 0.1


def limits_from(boot: dict) -> RiskLimits:
    raw = dict(boot.get("risk_limits", {}))
    if "credit_dollars" in raw:
        credit = int(raw.pop("credit_dollars")) * DOLLAR
        raw.update(default_agent_credit=credit, default_account_credit=credit, firm_credit=credit * 4)
    return msgspec.convert(raw, RiskLimits)


class RiskService(FloorService):
    name = "pre-trade-risk"
    peers = ("market-data", "order-router", "oms")

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        keyring = ApprovalKeyring("k1", bytes.fromhex(runtime.boot["approval_key"]))
        gateways = frozenset({runtime.topology.spiffe_id("fix-gateway")})
        self.core = RiskCore(PreTradeRiskChecker(limits_from(runtime.boot)), ApprovalSigner(keyring),
                                 runtime.events, gateways=gateways)
        self.updates: dict[str, list[AgentUpdate]] = defaultdict(list)
        self.orders: dict[str, NewOrder] = {}  # cl_ord_id -> order (working at risk)
        self.cursor = 0
        self.received = self.approved = self.rejects = self.routed = self.route_rejects = 0
        self.halt_cancels = self.fills_applied = 0
        self._new = decoder(NewOrder)
        self._cancel = decoder(CancelOrder)
        self._route = decoder(RouteReply)
        self._positions = decoder(PositionsReply)
        self.router = runtime.link("order-router")

    def _drain(self, agent: str) -> list[AgentUpdate]:
        pending = self.updates.pop(agent, None)
        return pending or []

    def register(self, svc) -> None:
        @svc.handler(action="submit_order", resource="risk/orders")
        def submit(req, ctx):
            order = self._new.decode(req.body)
            self.received += 1
            principal = self.rt.principal(ctx, order.agent)
            # throttles, duplicate windows and the approval's TTL all run on the monotonic clock
            result, approval = self.core.handle_new_order(order, principal, self.rt.clock.monotonic_ns())
            if not result.approved:
                self.rejects += 1
                return encode_body(OrderAck(False, result.reason, order.cl_ord_id, self._drain(order.agent)))
            self.approved += 1

            def on_routed(resp) -> None:
                if resp.ok and self._route.decode(resp.body).ok:
                    self.routed += 1
                    return
                self.route_rejects += 1
                self.core.on_order_done(order.agent, order.cl_ord_id)
                self.orders.pop(order.cl_ord_id, None)
                self.updates[order.agent].append(AgentUpdate("done", order.cl_ord_id, order.symbol, order.side))

            self.orders[order.cl_ord_id] = order
            sent = self.router.request("route_order", "router/orders",
                                       encode_body(RoutedOrder(order=order, approval=approval)), symbol=order.symbol,
                                       notional=order.qty * order.price / PRICE_SCALE, callback=on_routed,
                                       trace_id=order.cl_ord_id)
            if not sent:
                self.core.on_order_done(order.agent, order.cl_ord_id)
                self.orders.pop(order.cl_ord_id, None)
                self.route_rejects += 1
                return encode_body(OrderAck(False, "risk.router_unavailable", order.cl_ord_id, self._drain(order.agent)))
            return encode_body(OrderAck(True, "risk.ok", order.cl_ord_id, self._drain(order.agent)))

        @svc.handler(action="cancel_order", resource="risk/orders")
        def cancel(req, ctx):
            msg = self._cancel.decode(req.body)
            principal = self.rt.principal(ctx, msg.agent)
            reject = self.core.handle_cancel(msg, principal, time.time_ns())
            if reject is not None:
                return encode_body(OrderAck(False, reject.reason, msg.cl_ord_id, self._drain(msg.agent)))
            self.router.request("cancel_order", "router/orders", encode_body(msg), symbol=msg.symbol)
            return encode_body(OrderAck(True, "risk.ok", msg.cl_ord_id, self._drain(msg.agent)))

    # ------------------------------------------------------------------ kill switch
    def agent_id(self, target: str) -> str:
        """An agent target as orders carry it: a service name or FIX client name -> its SPIFFE ID."""
        if target.startswith("spiffe://"):
            return target
        if target in self.rt.topology.services:
            return self.rt.topology.spiffe_id(target)
        return dict(self.rt.boot.get("agent_aliases", {})).get(target, target)

    def apply_kill_switch(self, action: str, scope: str, target: str, operator: ks.Operator, now: float
                          ) -> ks.KillSwitchChange:
        """Apply one kill-switch action (raises ``KillSwitchRefused``); a halt's cancels go to the router."""
        if scope == ks.AGENT:
            target = self.agent_id(target)
        if action == "resume":
            pending = self.core.checker.killswitch.resume_requested(scope, target)
            action = "approve_resume" if pending else "request_resume"
        change = self.core.kill_switch(action, scope, target, operator, now)
        for ref in change.cancels:
            order = self.orders.get(ref.cl_ord_id)
            cancel = CancelOrder(cl_ord_id=f"{ref.cl_ord_id}-halt", orig_cl_ord_id=ref.cl_ord_id, account=ref.account,
                                 agent=ref.agent, symbol=ref.symbol, side=order.side if order else "buy",
                                 time_ns=time.time_ns(), reason=f"killswitch.{change.state.lower()}")
            self.router.request("cancel_order", "router/orders", encode_body(cancel), symbol=ref.symbol,
                                trace_id=ref.cl_ord_id)
        self.halt_cancels += len(change.cancels)
        return change

    def on_command(self, command: Command) -> None:
        if command.name != "killswitch":
            return
        a = command.args
        try:
            operator = ks.Operator(principal=a.get("operator", ""), privileged=a.get("privileged") == "1",
                                   mfa_at=self.on_monotonic(float(a["mfa_at"])) if a.get("mfa_at") else None)
            change = self.apply_kill_switch(a.get("action", ""), a.get("scope", ""), a.get("target", ""), operator,
                                            self.rt.clock.monotonic())
            result = CommandResult(id=a.get("id", ""), ok=True, result={
                "state": change.state, "pending": "1" if change.pending else "0", "cancels": str(len(change.cancels))})
        except TrustFabricError as exc:
            result = CommandResult(id=a.get("id", ""), ok=False, reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - refused, never applied half-way silently
            result = CommandResult(id=a.get("id", ""), ok=False, reason="killswitch.internal",
                                   result={"error": type(exc).__name__})
        control = self.rt.control
        if a.get("id") and control is not None and control.conn is not None and not control.conn.closed:
            control.conn.send(result)

    def on_monotonic(self, wall: float) -> float:
        """Another host's timestamp (wall seconds) on this process's monotonic clock: its age is measured
        once, now, against our wall clock; every duration that hangs on it then runs on the monotonic clock."""
        clock = self.rt.clock
        return clock.monotonic() - (clock.now() - wall)

    def on_market_data(self, event) -> None:
        # the quote's time (market-data's wall clock) moved onto the monotonic clock the checker runs on,
        # so that its reference-price age is measured against the same clock as every other duration
        offset_ns = self.rt.clock.monotonic_ns() - round(self.rt.clock.now() * 1e9)
        self.core.on_market_data(msgspec.structs.replace(event, time_ns=event.time_ns + offset_ns))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(follow_stream(self.rt, s, self.on_market_data)) for s in self.rt.topology.symbols]
        oms = self.rt.link("oms")
        try:
            while not self.rt.stopped.is_set():
                if not self.router.up:
                    try:
                        await self.router.ensure(timeout_s=1.0)
                    except Exception:  # noqa: BLE001
                        pass
                more = False
                try:
                    reply = await oms.call("read_positions", "oms/positions", encode_body(PositionsQuery(self.cursor)))
                    if reply.ok:
                        view = self._positions.decode(reply.body)
                        more = view.cursor - self.cursor >= 100  # a full page: read on at once
                        self.apply(view)
                except Exception:  # noqa: BLE001 - the OMS is not up yet or refused: try again
                    pass
                if not more:
                    await asyncio.sleep(OMS_POLL_S)
        finally:
            for t in tasks:
                t.cancel()

    def apply(self, reply: PositionsReply) -> None:
        self.cursor = reply.cursor
        for fill in reply.fills:
            self.core.on_fill(fill)
            self.fills_applied += 1
            self.updates[fill.agent].append(AgentUpdate("fill", fill.cl_ord_id, fill.symbol, fill.side, fill.qty))
        for agent, cl_ord_id in reply.done:
            self.core.on_order_done(agent, cl_ord_id)
            order = self.orders.pop(cl_ord_id, None)
            self.updates[agent].append(AgentUpdate("done", cl_ord_id, order.symbol if order else "",
                                                   order.side if order else ""))

    def stats(self) -> dict[str, float]:
        return {"risk_received": self.received, "risk_approved": self.approved, "risk_rejects": self.rejects,
                "routed": self.routed, "route_rejects": self.route_rejects,
                "working": len(self.core.checker.working), "halt_cancels": self.halt_cancels,
                "risk_fills": self.fills_applied,
                "kill_switch_not_active": len(self.core.checker.killswitch.not_active())}
