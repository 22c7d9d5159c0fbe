"""The compromised-algo attacker of the demo: an outside process holding an agent's key and certificate.

It reads the agent's credential files (what an intruder on the agent's host would
steal), opens the control channel as that agent (so it can ask for tokens like the
agent can), and tries, in order: the venues directly, settlement, another agent's
market-data streams, the router around pre-trade risk (a forged and a replayed
approval), and an order flood. Each try is one attempt with its outcome and the
reason it was refused; the result is one JSON line on stdout. Nothing here
is trusted by the floor: it is measured against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import msgspec

from trustfabric.control.client import ControlClient
from trustfabric.errors import TrustFabricError
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.policy.topology import Topology
from trustfabric.trading.messages import NewOrder, RiskApproval, RoutedOrder
from trustfabric.transport.connection import connect
from trustfabric.transport.frames import ErrorFrame, OpenSession, Request, Response, SessionReady
from trustfabric.transport.tls import TLSConfig

_enc = msgspec.msgpack.Encoder()


class Attempts:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, scenario: str, target: str, ok: bool, reason: str) -> None:
        self.items.append({"scenario": scenario, "target": target, "succeeded": bool(ok), "reason": reason,
                           "at": time.time()})


async def _session(where: tuple[str, int], tls: TLSConfig, expected: str, token: str) -> tuple[Any, str]:
    """Connect (address, port) and open a session; (connection, "") or (None, refusal reason)."""
    try:
        conn = await connect(where[0], where[1], tls=tls, expected_peer=expected)
    except TrustFabricError as exc:
        return None, exc.reason
    except OSError as exc:
        return None, f"transport.{type(exc).__name__}"
    conn.send(OpenSession(token=token))
    try:
        frame = await asyncio.wait_for(conn.recv(), 3.0)
    except Exception as exc:  # noqa: BLE001
        conn.close()
        return None, getattr(exc, "reason", "session.closed")
    if isinstance(frame, SessionReady):
        return conn, ""
    conn.close()
    return None, frame.reason if isinstance(frame, ErrorFrame) else "session.refused"


async def _ask(conn, rid: int, action: str, resource: str, body: bytes, symbol: str = "",
               notional: float = 0.0) -> tuple[bool, str]:
    try:
        conn.send(Request(rid=rid, action=action, resource=resource, body=msgspec.Raw(body), symbol=symbol,
                          notional=notional))
        frame = await asyncio.wait_for(conn.recv(), 3.0)
    except Exception as exc:  # noqa: BLE001
        return False, getattr(exc, "reason", "connection.closed")
    if isinstance(frame, Response):
        if frame.ok and action == "route_order":  # reached the router: its approval check decides
            reply = msgspec.msgpack.decode(frame.body)
            ok = bool(reply.get("ok")) if isinstance(reply, dict) else bool(reply and reply[0])
            return ok, (reply.get("reason") if isinstance(reply, dict) else str(reply)) or "ok"
        return frame.ok, frame.reason or "ok"
    return False, getattr(frame, "reason", "refused")


async def run_attacker(boot: dict[str, Any]) -> int:
    topo = Topology.load(boot["topology"])
    victim = boot.get("victim", "algo-momentum")
    stolen = WorkloadCredentials.load(os.path.join(boot["home"], "floor", "creds", victim))
    tls = TLSConfig(stolen)
    ports = {k: int(v) for k, v in boot["ports"].items()}
    addresses = {k: str(v) for k, v in boot.get("addresses", {}).items()}

    def at(service: str) -> tuple[str, int]:  # where a service listens (its host's address in a deployment)
        return addresses.get(service, "127.0.0.1"), ports[service]
    attempts = Attempts()
    control = ControlClient(str(boot.get("control_host", "127.0.0.1")), int(boot["control_port"]), tls,
                            boot["control_id"], victim)
    try:
        await control.start()
    except Exception as exc:  # noqa: BLE001 - already contained: every try below is refused too
        attempts.add("control", "control-plane", False, getattr(exc, "reason", type(exc).__name__))

    async def token(audience: str, scenario: str) -> str:
        try:
            tok, _ = await control.token(audience)
            return tok
        except TrustFabricError as exc:
            attempts.add(scenario, f"token:{audience}", False, exc.reason)
            return ""

    risk_token = await token("pre-trade-risk", "flood")
    # 1. the venues directly
    for venue in ("venue-a", "venue-b"):
        tok = await token(venue, "venue_direct") or risk_token
        conn, why = await _session(at(venue), tls, topo.spiffe_id(venue), tok or "none")
        if conn is None:
            attempts.add("venue_direct", venue, False, why)
            continue
        order = NewOrder(cl_ord_id="x-1", account="acct-momentum", agent=str(stolen.spiffe_id), symbol="AAPL",
                         side="buy", qty=100, price=1_900_000)
        ok, why = await _ask(conn, 1, "execute", f"{venue}/orders", _enc.encode(order), "AAPL", 19000.0)
        attempts.add("venue_direct", venue, ok, why)
        conn.close()
    # 2. settlement
    tok = await token("settlement", "settlement_read") or risk_token
    conn, why = await _session(at("settlement"), tls, topo.spiffe_id("settlement"), tok or "none")
    if conn is None:
        attempts.add("settlement_read", "settlement", False, why)
    else:
        ok, why = await _ask(conn, 1, "settle", "settlement/ledger", _enc.encode({"fills": []}))
        attempts.add("settlement_read", "settlement", ok, why)
        conn.close()
    # 3. another agent's streams
    md_token = await token("market-data", "other_streams")
    conn, why = await _session(at("market-data"), tls, topo.spiffe_id("market-data"), md_token or "none")
    others = sorted(topo.services["algo-meanrev"].symbols - topo.services[victim].symbols)[:3]
    for i, sym in enumerate(others):
        if conn is None:
            attempts.add("other_streams", f"md/{sym}", False, why)
            continue
        ok, reason = await _ask(conn, i + 1, "subscribe", f"md/{sym}", _enc.encode({"after": 0}), sym)
        attempts.add("other_streams", f"md/{sym}", ok, reason)
    if conn is not None:
        conn.close()
    # 4. around risk at the router: forged, then replayed approval
    tok = await token("order-router", "risk_bypass") or risk_token
    order = NewOrder(cl_ord_id="bypass-1", account="acct-momentum", agent=str(stolen.spiffe_id), symbol="AAPL",
                     side="buy", qty=5_000, price=1_900_000)
    forged = RiskApproval(principal=order.agent, cl_ord_id=order.cl_ord_id, symbol="AAPL", side="buy", qty=5_000,
                          price=1_900_000, limits_version=1, issued_ns=time.time_ns(), nonce=os.urandom(16),
                          key_id="k1", mac=os.urandom(32))
    for label, body in (("forged", RoutedOrder(order=order, approval=forged)),
                        ("replayed", RoutedOrder(order=order, approval=forged)), ("none", RoutedOrder(order=order))):
        conn, why = await _session(at("order-router"), tls, topo.spiffe_id("order-router"), tok or "none")
        if conn is None:
            attempts.add("risk_bypass", f"order-router:{label}", False, why)
            continue
        ok, reason = await _ask(conn, 1, "route_order", "router/orders", _enc.encode(body), "AAPL", 950000.0)
        attempts.add("risk_bypass", f"order-router:{label}", ok, reason)
        conn.close()
    # 5. an order flood at risk (the one service the agent may reach)
    conn, why = await _session(at("pre-trade-risk"), tls, topo.spiffe_id("pre-trade-risk"), risk_token or "none")
    flood = int(boot.get("flood", 300))
    if conn is None:
        attempts.add("flood", "pre-trade-risk", False, why)
    else:
        allowed = 0
        reason = ""
        for i in range(flood):
            o = NewOrder(cl_ord_id=f"flood-{i}", account="acct-momentum", agent=str(stolen.spiffe_id), symbol="AAPL",
                         side="buy", qty=1, price=1_900_000)
            ok, reason = await _ask(conn, i + 1, "submit_order", "risk/orders", _enc.encode(o), "AAPL", 190.0)
            allowed += int(ok)
            if conn.closed:
                break
        # the agent's own grant is 100/s with a burst of 100: more than that got through = the flood succeeded
        attempts.add("flood", "pre-trade-risk", allowed > 110, f"{allowed} of {flood} allowed; last {reason}")
        conn.close()
    control.close()
    print(json.dumps({"victim": victim, "attempts": attempts.items}), flush=True)
    return 0
