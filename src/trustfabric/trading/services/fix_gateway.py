"""fix-gateway: FIX 4.4 order entry for outside clients, the floor's edge.

Clients connect over mTLS to the gateway's edge port (``boot["fix_port"]``, fixed with
``trustfabric up --fix-port``) with a certificate of the *edge* trust domain
(``fix-edge.<floor trust domain>``, its own CA kept under the home: see
:mod:`trustfabric.trading.fix.edge`). Onboarded clients (``trustfabric fix client add``)
are read from the edge registry at each Logon, with the account their orders are booked
to; a revoked certificate (pushed revocations, or ``trustfabric ca revoke SERIAL`` in the
identity store) is refused at the handshake.
The TLS connection carries a raw FIX byte stream (no frames). Each connection runs
one :class:`~trustfabric.trading.fix.session.FixSession` whose peer identity is the
certificate's SPIFFE ID; ``bindings`` (SenderCompID -> SPIFFE ID) refuse a Logon
whose SenderCompID is not bound to that certificate. Sequence numbers live in a
:class:`~trustfabric.trading.fix.store.SqliteSeqStore` under
``$TRUSTFABRIC_HOME/floor/fix-gateway-seq.sqlite`` and survive reconnects.

Application messages go through :class:`~trustfabric.trading.gateway.FixGatewayCore`;
orders and cancels are forwarded to pre-trade-risk over a zero-trust hop (the
gateway's own mTLS session and token, checked by risk's enforcement point like any
other caller). Refusals come back as ExecutionReport (rejected) or OrderCancelReject;
a message the floor cannot take at all gets a BusinessMessageReject; session
problems get the session layer's Reject/Logout. Parent-level reports (new, fills,
cancels) are read from the OMS (``read_client_orders``) and sent to the client's
session. A replace is forwarded as a cancel of the original plus a new order under
the new ClOrdID (not atomic; a refused replacement gets OrderCancelReject).

Both modes: in perimeter mode the gateway is the only place that authenticates
(the edge), the hops behind it are plain TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from trustfabric.audit.events import Kind
from trustfabric.errors import TrustFabricError
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.trading.fix import codec
from trustfabric.trading.fix.edge import ClientRegistry, EdgeRevocations
from trustfabric.trading.fix.session import (
    FixCancelRequest,
    FixMassCancelRequest,
    FixNewOrderSingle,
    FixReplaceRequest,
    FixSession,
    FixStatusRequest,
    LoggedOn,
    LoggedOut,
    SessionProblem,
)
from trustfabric.trading.fix.store import SqliteSeqStore
from trustfabric.trading.gateway import FixGatewayCore
from trustfabric.trading.messages import PRICE_SCALE, CancelOrder, ExecutionReport, NewOrder, Reject, ReplaceOrder
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import ClientReportsReply, OrderAck, PositionsQuery, decoder
from trustfabric.transport.listener import SocketStream, StreamListener
from trustfabric.transport.tls import TLSConfig

DEFAULT_COMP_ID = "TRUSTFABRIC"
OMS_POLL_S = 0.05
TIMER_S = 0.5
RISK_UNAVAILABLE = "gateway.risk_unavailable"
_MSG_TYPE_OF = {FixNewOrderSingle: codec.NEW_ORDER_SINGLE, FixCancelRequest: codec.ORDER_CANCEL_REQUEST,
                FixReplaceRequest: codec.ORDER_CANCEL_REPLACE, FixStatusRequest: codec.ORDER_STATUS_REQUEST,
                FixMassCancelRequest: codec.ORDER_MASS_CANCEL}


@dataclass
class ClientConnection:
    identity: str
    session: FixSession
    writer: asyncio.StreamWriter
    sender: str = ""
    sent: int = field(default=0)


class FixGatewayService(FloorService):
    name = "fix-gateway"
    peers = ("pre-trade-risk", "oms")

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        boot = runtime.boot
        self.comp_id = boot.get("fix_comp_id", DEFAULT_COMP_ID)
        # SenderCompID -> SPIFFE ID: the floor's demo clients, and the registry of onboarded clients
        # (``trustfabric fix client add``), re-read when it changes so a new client logs on at once.
        self.bindings = ClientRegistry(runtime.home, boot.get("fix_clients", {}))
        edge = WorkloadCredentials.load(Path(boot["fix_edge_dir"]))
        self.revocations = EdgeRevocations(runtime.revocations, runtime.home / "identity.db")
        self.edge_tls = TLSConfig(edge, clock=runtime.clock, revocation=self.revocations)
        self.store = SqliteSeqStore(str(runtime.home / "floor" / "fix-gateway-seq.sqlite"))
        self.core = FixGatewayCore()
        self.sessions: dict[str, ClientConnection] = {}  # SenderCompID -> logged-on connection
        self.risk = runtime.link("pre-trade-risk")
        self.oms = runtime.link("oms")
        self.cursor = 0
        self._ack = decoder(OrderAck)
        self._reports = decoder(ClientReportsReply)
        self._server: StreamListener | None = None
        self.counters = {"fix_logons": 0, "fix_logon_refusals": 0, "fix_orders": 0, "fix_reports": 0,
                         "fix_rejects": 0, "fix_session_problems": 0, "fix_tls_refusals": 0}

    def register(self, svc) -> None:
        """The gateway serves nothing on the floor: its only listener is the FIX edge port."""

    async def prepare(self) -> None:
        # admission, then the handshake on the socket: a refused client gets OpenSSL's alert
        # (certificate_required, unknown_ca, certificate_expired...), not a dropped connection
        self._server = await StreamListener(lambda stream: self._serve(stream, stream),
                                            context=lambda: self.edge_tls.context(server_side=True)[0],
                                            on_refuse=self._tls_refused, handshake_timeout_s=5.0,
                                            name="fix-edge").start(self.rt.address_of(self.rt.name), int(self.rt.boot["fix_port"]))

    def _tls_refused(self, reason: str, detail: str, address: str, presented: str) -> None:
        self.counters["fix_tls_refusals"] += 1
        self.rt.events.emit(Kind.HANDSHAKE_REFUSED, principal=presented, action="fix.connect",
                            resource=self.comp_id, decision="deny", reason=reason,
                            detail={"detail": detail, "peer_address": address})

    # ------------------------------------------------------------------ client connections
    async def _serve(self, reader: SocketStream, writer: SocketStream) -> None:
        try:
            # the identity store's revocations (``ca revoke``), read off the event loop, then the check
            await asyncio.get_running_loop().run_in_executor(None, self.revocations.refresh)
            peer = self.edge_tls.verify_peer(writer.get_extra_info("ssl_object"))
        except TrustFabricError as exc:
            self.counters["fix_tls_refusals"] += 1
            self.rt.events.emit(Kind.HANDSHAKE_REFUSED, action="fix.connect", resource=self.comp_id,
                                decision="deny", reason=exc.reason)
            writer.close()
            return
        identity = str(peer.spiffe_id)
        clock = self.rt.clock  # wall time stamps and checks SendingTime; the monotonic clock runs the timers
        conn = ClientConnection(identity, FixSession(self.comp_id, identity, self.bindings, self.store,
                                                     now=clock.now(), mono=clock.monotonic()), writer)
        try:
            while not self.rt.stopped.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(65536), TIMER_S)
                except TimeoutError:
                    data = None
                if data is not None:
                    if not data:
                        break
                    if self._apply(conn, conn.session.on_bytes(data, clock.now(), clock.monotonic())):
                        break
                # The timers run whatever arrives: a client that keeps talking must still get our own
                # Heartbeat when we have sent nothing for HeartBtInt.
                if self._apply(conn, conn.session.on_timer(clock.now(), clock.monotonic())):
                    break
        except (OSError, ConnectionError):
            pass
        finally:
            conn.session.on_disconnect()
            if conn.sender and self.sessions.get(conn.sender) is conn:
                del self.sessions[conn.sender]
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    def _apply(self, conn: ClientConnection, out) -> bool:
        """Write a session output and act on its events; True when the connection must close."""
        for raw in out.outgoing:
            conn.writer.write(raw)
        now_ns = time.time_ns()
        for event in out.events:
            if isinstance(event, LoggedOn):
                conn.sender = event.sender
                old = self.sessions.get(event.sender)
                if old is not None and old is not conn:
                    old.writer.close()
                self.sessions[event.sender] = conn
                self.counters["fix_logons"] += 1
                self.rt.events.emit(Kind.SESSION_OPEN, principal=conn.identity, action="fix.logon",
                                    resource=event.sender, decision="allow")
            elif isinstance(event, SessionProblem):
                self.counters["fix_session_problems"] += 1
                refused_logon = conn.session.state != "active" and not conn.sender
                if refused_logon:
                    self.counters["fix_logon_refusals"] += 1
                self.rt.events.emit(Kind.SESSION_REFUSED if refused_logon else Kind.DECISION,
                                    principal=conn.identity, action="fix.session", resource=event.sender,
                                    decision="deny", reason=event.reason, detail={"detail": event.detail[:200]})
            elif isinstance(event, LoggedOut):
                self.rt.events.emit(Kind.SESSION_CLOSE, principal=conn.identity, action="fix.logout",
                                    resource=event.sender, reason=event.reason)
            else:
                self._on_app(conn, event, now_ns)
        return out.disconnect

    def _send(self, sender: str, message) -> None:
        conn = self.sessions.get(sender)
        if conn is None or conn.session.state != "active":
            return  # the client is away: it asks for the order's status when it is back
        try:
            conn.writer.write(conn.session.send_app(message, self.rt.clock.now(), self.rt.clock.monotonic()))
            conn.sent += 1
        except TrustFabricError:
            pass

    def _on_app(self, conn: ClientConnection, event, now_ns: int) -> None:
        try:
            output = self.core.on_session_event(event, conn.identity, now_ns, self.bindings.account(conn.sender))
        except Exception as exc:  # noqa: BLE001 - a bad message is refused, never a crash or an allow
            self._send(conn.sender, codec.business_message_reject(event.seq, _MSG_TYPE_OF.get(type(event), b"D"), 0,
                                                                  f"refused: {type(exc).__name__}"))
            return
        for reply in output.replies:
            self._send(conn.sender, reply)
        for msg in output.to_risk:
            self._forward(conn.sender, msg, now_ns)

    # ------------------------------------------------------------------ the hop to pre-trade-risk
    def _refused(self, ref_id: str, reason: str) -> None:
        self.counters["fix_rejects"] += 1
        out = self.core.on_reject(Reject(ref_id=ref_id, reason=reason, time_ns=time.time_ns()), time.time_ns())
        if out is not None:
            self._send(*out)

    def _acknowledged(self, order: NewOrder) -> None:
        """Risk approved and forwarded the order: ExecutionReport New (the OMS's own 'new' is not repeated)."""
        report = ExecutionReport(cl_ord_id=order.cl_ord_id, order_id=f"OMS:{order.cl_ord_id}",
                                 exec_id=f"ack-{order.cl_ord_id}", venue="", account=order.account, agent=order.agent,
                                 symbol=order.symbol, side=order.side, exec_type="new", ord_status="new",
                                 order_qty=order.qty, price=order.price, leaves_qty=order.qty, time_ns=time.time_ns())
        out = self.core.on_report(report)
        if out is not None:
            self.counters["fix_reports"] += 1
            self._send(*out)

    def _forward(self, sender: str, msg, now_ns: int) -> None:
        if isinstance(msg, ReplaceOrder):
            cancel = CancelOrder(cl_ord_id=f"{msg.cl_ord_id}.c", orig_cl_ord_id=msg.orig_cl_ord_id,
                                 account=msg.account, agent=msg.agent, symbol=msg.symbol, side=msg.side,
                                 time_ns=now_ns)
            self.risk.request("cancel_order", "risk/orders", encode_body(cancel), symbol=msg.symbol,
                              trace_id=msg.orig_cl_ord_id)
            msg = NewOrder(cl_ord_id=msg.cl_ord_id, account=msg.account, agent=msg.agent, symbol=msg.symbol,
                           side=msg.side, qty=msg.qty, price=msg.price, time_ns=now_ns)
        ref = msg.cl_ord_id

        def on_reply(resp) -> None:
            if not resp.ok:
                self._refused(ref, resp.reason or "refused")
                return
            try:
                ack = self._ack.decode(resp.body)
            except Exception:  # noqa: BLE001 - an unreadable answer is a refusal
                self._refused(ref, "gateway.bad_reply")
                return
            if not ack.ok:
                self._refused(ref, ack.reason)
            elif isinstance(msg, NewOrder):
                self._acknowledged(msg)

        if isinstance(msg, NewOrder):
            self.counters["fix_orders"] += 1
            self.rt.events.emit(Kind.DECISION, trace_id=ref, principal=msg.agent, action="order.intent",
                                resource=msg.symbol, decision="allow",
                                detail={"side": msg.side, "qty": msg.qty, "price": msg.price, "via": "fix"})
            sent = self.risk.request("submit_order", "risk/orders", encode_body(msg), symbol=msg.symbol,
                                     notional=msg.qty * msg.price / PRICE_SCALE, callback=on_reply, trace_id=ref)
        else:
            sent = self.risk.request("cancel_order", "risk/orders", encode_body(msg), symbol=msg.symbol,
                                     callback=on_reply, trace_id=msg.orig_cl_ord_id)
        if not sent:
            self._refused(ref, RISK_UNAVAILABLE)

    # ------------------------------------------------------------------ reports from the OMS
    async def run(self) -> None:
        try:
            await self._poll_reports()
        finally:
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await self._server.close()
            self.shutdown()

    async def _poll_reports(self) -> None:
        while not self.rt.stopped.is_set():
            for link in (self.risk, self.oms):
                if not link.up:
                    with contextlib.suppress(Exception):
                        await link.ensure(timeout_s=1.0)
            more = False
            if self.oms.up:
                try:
                    reply = await self.oms.call("read_client_orders", "oms/client-orders",
                                                encode_body(PositionsQuery(self.cursor)))
                    if reply.ok:
                        view = self._reports.decode(reply.body)
                        more = view.cursor - self.cursor >= 100
                        self.cursor = view.cursor
                        for report in view.reports:
                            if report.exec_type == "new":
                                continue  # acknowledged when risk approved it
                            out = self.core.on_report(report)
                            if out is not None:
                                self.counters["fix_reports"] += 1
                                self._send(*out)
                except Exception:  # noqa: BLE001 - the OMS is away or refused: read again later
                    pass
            if not more:
                await asyncio.sleep(OMS_POLL_S)

    def shutdown(self) -> None:
        for conn in list(self.sessions.values()):
            conn.writer.close()
        with contextlib.suppress(Exception):
            self.store.close()
        with contextlib.suppress(Exception):
            self.revocations.close()

    def stats(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.counters.items()}, "fix_sessions": float(len(self.sessions)),
                "link_up": float(self.risk.up and self.oms.up)}
