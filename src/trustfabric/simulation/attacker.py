"""The attacker: plays one scenario's attempts against the running floor over real sockets.

It holds only what its foothold gives it (:class:`Footing`): in zero-trust mode a
certificate and key (a compromised workload's, a stolen one, or none for a build
that was refused an identity), the control channel that certificate opens
(tokens), or a person's login token; in perimeter mode only the network (plain
TCP to any service port, claiming whatever identity it likes). For each attempt
it does what a real attacker would: ask for a token for the target (and, when
refused, try with any token it has), open a session, send the request, and
records what it saw (:class:`~trustfabric.simulation.measure.AttemptRecord`).
What it saw is never scored: the services count what they performed.

Every request carries the trace id ``sim:<scenario>:<n>`` and its orders use it
as client order id (see :mod:`trustfabric.trading.effects`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import msgspec

from trustfabric.control.protocol import CONTROL_CODEC, TokenReply, TokenRequest
from trustfabric.errors import TrustFabricError
from trustfabric.trading.effects import trace_tag
from trustfabric.simulation.measure import AttemptRecord
from trustfabric.simulation.scenarios import Attempt, Scenario
from trustfabric.trading.messages import PRICE_SCALE, Fill, NewOrder, RiskApproval, RoutedOrder
from trustfabric.trading.services.wire import MdBatch, MdPoll, PositionsQuery, SettleBatch, VenueOrder
from trustfabric.transport.connection import FrameConnection, Limits, connect
from trustfabric.transport.frames import ErrorFrame, OpenSession, Request, Response, SessionReady
from trustfabric.transport.tls import TLSConfig
from trustfabric.control import client as control_client
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test

REPLY_TIMEOUT_S = 3.0
ATTACK_LIMITS = Limits(idle_timeout_s=60.0)
_enc = msgspec.msgpack.Encoder()

TokenSource = Callable[[str], Awaitable[str | None]]  # audience service -> token (None: refused)


@dataclass
class Footing:
    """What the attacker holds for one scenario."""

    principal: str  # who its messages claim to be (SPIFFE ID or user:<name>)
    tls: TLSConfig | None = None  # zero-trust: its certificate and key (None: none at all)
    tokens: TokenSource | None = None  # zero-trust: how it gets tokens
    fixed_token: str = ""  # a stolen token, presented whatever the audience
    join: Callable[[], Awaitable[tuple[bool, str]]] | None = None  # build: ask for an identity
    symbol: str = "JPM"
    account: str = "acct-meanrev"
    notes: dict[str, Any] = field(default_factory=dict)


class ControlTokens:
    """Tokens over the control channel the attacker's certificate opens (no push subscription)."""

    def __init__(self, port: int, tls: TLSConfig, control_id: str) -> None:
        self.port, self.tls, self.control_id = port, tls, control_id
        self.conn: FrameConnection | None = None
        self.rid = 0
        self.refusals: list[str] = []

    async def __call__(self, audience: str) -> str | None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = await connect("127.0.0.1", self.port, tls=self.tls, codec=CONTROL_CODEC,
                                          limits=ATTACK_LIMITS, expected_peer=self.control_id)
            self.rid += 1
            self.conn.send(TokenRequest(rid=self.rid, audience=audience))
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    frame = await self.conn.recv()
                    if isinstance(frame, TokenReply) and frame.rid == self.rid:
                        break
        except (TrustFabricError, OSError, TimeoutError) as exc:
            self.refusals.append(getattr(exc, "reason", type(exc).__name__))
            self.close()
            return None
        if not frame.ok:
            self.refusals.append(frame.reason)
            return None
        return frame.token

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


async def join_bootstrap(port: int, *, bundle_pem: bytes, control_id: str, join_token: str, spiffe_id: str,
                         code_digest: str, posture: bytes) -> tuple[bool, str]:
    """A build asks the bootstrap endpoint for an identity: (issued?, reason)."""

    try:
        await control_client.join("127.0.0.1", port, bundle_pem=bundle_pem, control_id=control_id,
                                  join_token=join_token, spiffe_id=spiffe_id, code_digest=code_digest, posture=posture)
    except TrustFabricError as exc:
        return False, exc.reason
    return True, ""


class Attacker:
    def __init__(self, scenario: Scenario, mode: str, ports: dict[str, int], spiffe_ids: dict[str, str],
                 footing: Footing) -> None:
        self.scenario = scenario
        self.mode = mode
        self.ports = ports
        self.spiffe_ids = spiffe_ids
        self.footing = footing
        self.records: list[AttemptRecord] = []
        self._conns: dict[str, FrameConnection] = {}
        self._refused: dict[str, str] = {}  # target -> why the connection/session failed
        self._n = 0
        self._rid = 0
        self._price = 0
        self._last_forged: RoutedOrder | None = None

    # ------------------------------------------------------------------ connections
    async def _connection(self, target: str) -> tuple[FrameConnection | None, str]:
        conn = self._conns.get(target)
        if conn is not None and not conn.closed:
            return conn, ""
        port = self.ports.get(target)
        if not port:
            return None, "attack.no_such_port"
        zero_trust = self.mode == "zero-trust"
        tls = self.footing.tls if zero_trust else None
        if zero_trust and tls is None:
            return None, await self._untrusted_connect(port)
        try:
            conn = await connect("127.0.0.1", port, tls=tls, limits=ATTACK_LIMITS)
        except (TrustFabricError, OSError) as exc:
            return None, getattr(exc, "reason", type(exc).__name__)
        if zero_trust:
            token = ""
            if self.footing.fixed_token:
                token = self.footing.fixed_token
            elif self.footing.tokens is not None:
                token = await self.footing.tokens(target) or ""
                if not token:  # refused for this audience: try a token it gets for its own peers
                    for other in self.footing.notes.get("own_audiences", ()):
                        token = await self.footing.tokens(other) or ""
                        if token:
                            break
            conn.send(OpenSession(token=token))
            try:
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    frame = await conn.recv()
            except (TrustFabricError, TimeoutError) as exc:
                conn.close()
                return None, conn.close_reason or getattr(exc, "reason", "session.no_answer")
            if not isinstance(frame, SessionReady):
                conn.close()
                return None, frame.reason if isinstance(frame, ErrorFrame) else (conn.close_reason or "session.refused")
        self._conns[target] = conn
        return conn, ""

    async def _untrusted_connect(self, port: int) -> str:
        """No certificate from the fabric: a self-made one claiming the identity, then the handshake."""

        ca = self.footing.notes.get("rogue_ca")
        if ca is None:
            ca = CertificateAuthority.create(self.footing.principal.split("/")[2], time.time())
            self.footing.notes["rogue_ca"] = ca
        creds = issue_for_test(ca, self.footing.principal, time.time(), 600)
        try:
            conn = await connect("127.0.0.1", port, tls=TLSConfig(creds), limits=ATTACK_LIMITS)
        except (TrustFabricError, OSError) as exc:
            return getattr(exc, "reason", type(exc).__name__)
        conn.close()
        return "attack.connected_without_session"

    async def _request(self, target: str, action: str, resource: str, body: bytes, trace: str, *,
                       symbol: str = "", notional: float = 0.0) -> tuple[bool, str, bytes]:
        conn, why = await self._connection(target)
        if conn is None:
            return False, why, b""
        self._rid += 1
        rid = self._rid
        conn.send(Request(rid=rid, action=action, resource=resource, body=msgspec.Raw(body), symbol=symbol,
                          notional=notional, trace_id=trace))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    frame = await conn.recv()
                    if isinstance(frame, Response) and frame.rid == rid:
                        ok, why = _answer(frame)
                        return ok, why, bytes(frame.body)
        except (TrustFabricError, TimeoutError) as exc:
            return False, conn.close_reason or getattr(exc, "reason", "attack.no_answer"), b""

    # ------------------------------------------------------------------ bodies
    def _order(self, cl_ord_id: str, qty: int = 0) -> NewOrder:
        qty = qty or 1 + self._n % 50  # varied: identical orders would only trip the duplicate check
        price = self._price or 100 * PRICE_SCALE
        return NewOrder(cl_ord_id=cl_ord_id, account=self.footing.account, agent=self.footing.principal,
                        symbol=self.footing.symbol, side="buy", qty=qty, price=price, tif="ioc",
                        time_ns=time.time_ns())

    def _body(self, attempt: Attempt, trace: str) -> tuple[bytes, str, float]:
        action = attempt.action
        order = self._order(trace)
        notional = order.qty * order.price / PRICE_SCALE
        if action == "execute":
            return _enc.encode(VenueOrder(child=order, parent=order, siblings=[trace])), order.symbol, notional
        if action == "submit_order":
            return _enc.encode(order), order.symbol, notional
        if action == "settle":
            fill = Fill(exec_id=trace, cl_ord_id=trace, account=self.footing.account, agent=self.footing.principal,
                        symbol=order.symbol, side="sell", qty=1000, price=order.price, venue="venue-a",
                        time_ns=time.time_ns())
            return _enc.encode(SettleBatch(fills=[fill])), order.symbol, 0.0
        if action in ("read_positions", "read_client_orders"):
            return _enc.encode(PositionsQuery(after=0)), "", 0.0
        if action == "subscribe":
            return _enc.encode(MdPoll(after=0)), attempt.resource[3:], 0.0
        if action == "route_order":
            return _enc.encode(self._routed(attempt.method, order)), order.symbol, notional
        return _enc.encode({"attack": trace}), "", 0.0

    def _routed(self, method: str, order: NewOrder) -> RoutedOrder:
        if method == "replayed_approval" and self._last_forged is not None:
            return msgspec.structs.replace(self._last_forged, order=msgspec.structs.replace(
                self._last_forged.order, cl_ord_id=order.cl_ord_id))
        qty = order.qty * 100 if method == "altered_approval" else order.qty
        approval = RiskApproval(principal=self.footing.principal, cl_ord_id=order.cl_ord_id, symbol=order.symbol,
                                side=order.side, qty=qty, price=order.price, limits_version=1,
                                issued_ns=time.time_ns(), nonce=os.urandom(16), key_id="k1", mac=os.urandom(32))
        routed = RoutedOrder(order=order, approval=approval)
        self._last_forged = routed
        return routed

    async def _learn_price(self) -> None:
        """The algo's own market data (its grant; not an attempt): a price risk's collars accept."""
        ok, _, body = await self._request("market-data", "subscribe", f"md/{self.footing.symbol}",
                                          _enc.encode(MdPoll(after=0)), "", symbol=self.footing.symbol)
        conn = self._conns.pop("market-data", None)
        if conn is not None:
            conn.close()
        self._refused.pop("market-data", None)
        if ok:
            self._price = last_price(body) or self._price

    # ------------------------------------------------------------------ run
    def _next_trace(self) -> str:
        self._n += 1
        return trace_tag(self.scenario.name, self._n)

    def _record(self, attempt: Attempt, sent_at: float, ok: bool, reason: str) -> None:
        self.records.append(AttemptRecord(attempt.target, attempt.action, attempt.resource, attempt.method,
                                          sent_at, ok, reason))

    async def run(self) -> list[AttemptRecord]:
        try:
            if self.footing.notes.get("learn_price") and any(
                    a.action in ("submit_order", "route_order", "execute", "settle") for a in self.scenario.attempts):
                await self._learn_price()
            for attempt in self.scenario.attempts:
                if attempt.method == "join":
                    sent = time.time()
                    if self.footing.join is None:
                        self._record(attempt, sent, True, "")  # nothing checks a deployment
                    else:
                        issued, reason = await self.footing.join()
                        self._record(attempt, sent, issued, reason)
                    continue
                if attempt.method == "flood":
                    await self._flood(attempt)
                    continue
                for _ in range(attempt.count):
                    trace = self._next_trace()
                    body, symbol, notional = self._body(attempt, trace)
                    sent = time.time()
                    ok, reason, _ = await self._request(attempt.target, attempt.action, attempt.resource, body, trace,
                                                     symbol=symbol, notional=notional)
                    self._record(attempt, sent, ok, reason)
        finally:
            self.close()
        return self.records

    async def _flood(self, attempt: Attempt) -> None:
        """``count`` orders pipelined on one session as fast as the socket takes them."""
        conn, why = await self._connection(attempt.target)
        sent_at: dict[int, tuple[float, str]] = {}
        if conn is None:
            now = time.time()
            for _ in range(attempt.count):
                self._record(attempt, now, False, why)
            return
        for _ in range(attempt.count):
            trace = self._next_trace()
            body, symbol, notional = self._body(attempt, trace)
            self._rid += 1
            sent_at[self._rid] = (time.time(), trace)
            conn.queue(Request(rid=self._rid, action=attempt.action, resource=attempt.resource,
                               body=msgspec.Raw(body), symbol=symbol, notional=notional, trace_id=trace))
        conn.flush()
        answers: dict[int, tuple[bool, str]] = {}
        with contextlib.suppress(TrustFabricError, TimeoutError):
            async with asyncio.timeout(REPLY_TIMEOUT_S * 2):
                while len(answers) < len(sent_at):
                    frame = await conn.recv()
                    if isinstance(frame, Response) and frame.rid in sent_at:
                        answers[frame.rid] = _answer(frame)
        for rid, (at, _trace) in sent_at.items():
            ok, reason = answers.get(rid, (False, conn.close_reason or "attack.no_answer"))
            self._record(attempt, at, ok, reason)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _answer(frame: Response) -> tuple[bool, str]:
    """(ok, reason): a refused transport reply, or an ``ok`` one whose body says ``ok: false`` and why."""
    if not frame.ok:
        return False, frame.reason
    try:
        value = msgspec.msgpack.decode(bytes(frame.body)) if frame.body is not None else None
    except (msgspec.DecodeError, TypeError):
        return True, ""
    if isinstance(value, dict) and value.get("ok") is False:
        return False, str(value.get("reason", "refused"))
    return True, ""


def last_price(body: bytes) -> int:
    """The ask of the last quote in a market-data reply (0 if none)."""
    try:
        batch = msgspec.msgpack.decode(body, type=MdBatch)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    for event in reversed(batch.events):
        if hasattr(event, "bid"):
            return event.ask  # on the tick grid, and marketable for a buy
    return 0
