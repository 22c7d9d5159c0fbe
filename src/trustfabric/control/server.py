"""The control plane's endpoints on loopback: the I/O shell around :class:`~trustfabric.control.plane.ControlPlane`.

* **Bootstrap** (:meth:`ControlServer.start`, ``bootstrap_port``): TLS 1.3 with the
  control plane's certificate, *no* client certificate (the workload has none
  yet). One :class:`~trustfabric.control.protocol.JoinRequest` per connection,
  answered with a ``JoinReply`` or an ``ErrorFrame`` carrying the reason code.
* **Control** (``control_port``): the transport's mTLS :class:`~trustfabric.transport.connection.FrameServer`;
  the caller is its certificate's SPIFFE ID (checked against the live
  revocation set at the handshake). Tokens, tables, renewals, the push stream and
  the service reports (see :mod:`trustfabric.control.protocol`).
* **Operators** (the bootstrap port too): one :class:`~trustfabric.control.protocol.KillSwitchRequest`
  per connection from a person (password + TOTP); :meth:`ControlServer.kill_switch`
  logs them in, sends pre-trade-risk a ``killswitch`` command and relays its
  ``CommandResult`` as a ``KillSwitchReply``; or one :class:`~trustfabric.control.protocol.ReleaseRequest`
  from a security officer, answered by :meth:`ControlServer.release` with a ``ReleaseReply``;
  or one :class:`~trustfabric.control.protocol.OperatorRequest` (any state-changing action),
  answered by :meth:`ControlServer.operate` once the change is applied and confirmed:
  ``ok`` only when every enforcement point answered (a barrier after the pushes, the
  containment's acknowledgements, or the service's command result) within
  :data:`CONFIRM_TIMEOUT_S`; otherwise ``control.unconfirmed`` naming the points missing.
* In ``perimeter`` mode the control port is plain TCP and serves only reports and
  commands (there is no identity to hand out): the same processes, no fabric.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Callable


from trustfabric.audit.events import Kind
from trustfabric.control.errors import NOT_LEADER, BootstrapRefused, ControlRefused
from trustfabric.control.plane import (
    CONFIRM_COMMAND, CONFIRM_CONTAINED, CONFIRM_NONE, Applied, ControlPlane,
)
from trustfabric.control.protocol import (
    CONTROL_CODEC, Command, CommandResult, JoinReply, JoinRequest, KillSwitchReply, KillSwitchRequest,
    OperatorReply, OperatorRequest, PostureReply, PostureSubmit, PushAck, PushBarrier, PushInvalidation, PushJwks,
    ReleaseReply, ReleaseRequest, PushRevocation, RenewReply,
    RenewRequest, Report, RevocationSnapshot, Subscribe, Subscribed, TableReply, TableRequest, TokenReply,
    TokenRequest,
)
from trustfabric.errors import ConfigError, TrustFabricError
from trustfabric.policy.decision import Invalidation
from trustfabric.transport.connection import FrameConnection, FrameServer, Limits
from trustfabric.transport.frames import HEADER, ErrorFrame, FrameDecoder, Ping, Pong
from trustfabric.transport.listener import StreamListener
from trustfabric.transport.tls import TLSConfig, build_context

BOOTSTRAP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 3.0
CONFIRM_TIMEOUT_S = 3.0  # an operator's change: every enforcement point confirms within this, or the reply says who not
UNCONFIRMED = "control.unconfirmed"
KILL_SWITCH_SERVICE = "pre-trade-risk"
KILL_SWITCH_ACTIONS = ("halt", "reduce", "resume")
CONTROL_LIMITS = Limits(idle_timeout_s=3600.0)
ZERO_TRUST = "zero-trust"
PERIMETER = "perimeter"
MODES = (ZERO_TRUST, PERIMETER)


def bootstrap_context(credentials: Any) -> ssl.SSLContext:
    """Server side of the bootstrap: our certificate, TLS 1.3, no client certificate asked."""
    ctx = build_context(credentials, server_side=True)
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _is_service(plane: ControlPlane, caller: str, service: str) -> bool:
    """True when ``caller`` (a peer certificate's SPIFFE ID) is exactly ``service``'s identity."""
    try:
        return caller == plane.spiffe_id(service)
    except KeyError:  # no such service in the topology
        return False


class _Answered(Exception):
    def __init__(self, reply: Any) -> None:
        self.reply = reply


class ControlServer:
    """Zero-trust (a :class:`ControlPlane`, mTLS, identities) or perimeter (no plane, plain reports).

    The pairing is checked here: a zero-trust server without a plane, a perimeter server
    with one, or any other mode is a :class:`~trustfabric.errors.ConfigError`, so the
    perimeter shortcuts (plain TCP, unchecked reports) never run beside a plane.
    """

    def __init__(self, plane: ControlPlane | None, *, mode: str = ZERO_TRUST) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {mode!r}", reason="config.control.mode")
        if (mode == ZERO_TRUST) != (plane is not None):
            raise ConfigError(f"a {mode} control server {'needs' if plane is None else 'takes no'} control plane",
                              reason="config.control.mode")
        self.plane = plane
        self.mode = mode
        self.stats: dict[str, dict[str, float]] = {}
        self.links: dict[str, dict[str, list[float]]] = {}
        self.subscribers: dict[str, set[FrameConnection]] = {}
        self.bootstrap_port = 0
        self.control_port = 0
        self._bootstrap: StreamListener | None = None
        self._control: FrameServer | None = None
        self._unsubscribe = None
        self._results: dict[str, asyncio.Future] = {}
        self._command_ids = 0
        self._bootstrap_ctx: tuple[str, Any] | None = None
        self._barriers: dict[int, tuple[set[str], asyncio.Event, list[float]]] = {}  # id -> (to ack, done, ack times)
        self._barrier_ids = 0
        self.confirm_timeout_s = CONFIRM_TIMEOUT_S
        self._follower_tasks: set[asyncio.Task] = set()  # a follower replica's requests waiting for a catch-up

    async def start(self, host: str = "127.0.0.1", *, bootstrap_port: int = 0,
                    control_port: int = 0) -> "ControlServer":
        """Listen (ports 0: free ones); a standby taking over a floor listens on the ports it was given."""
        if self.plane is not None:  # zero-trust (checked in __init__)
            # every handshake takes the context of the plane's current certificate (it rotates)
            self._bootstrap = await StreamListener(lambda stream: self._serve_join(stream, stream),
                                                   context=self._bootstrap_context,
                                                   on_refuse=self._bootstrap_refused,
                                                   handshake_timeout_s=BOOTSTRAP_TIMEOUT_S,
                                                   name="bootstrap").start(host, bootstrap_port)
            self.bootstrap_port = self._bootstrap.port
            tls = TLSConfig(self.plane.credential_source, revocation=self.plane.identity.revocations,
                            sibling_bundle_pem=self.plane.sibling_bundle_pem(),
                            clock=self.plane.clock)
            self._unsubscribe = self.plane.subscribe(self._push)
        else:
            tls = None
        self._control = await FrameServer(self._serve_control, tls=tls, codec=CONTROL_CODEC,
                                          limits=CONTROL_LIMITS, name="control",
                                          emitter=self.plane.emitter if self.plane else None).start(host, control_port)
        self.control_port = self._control.port
        return self

    def _bootstrap_context(self) -> Any:
        """The bootstrap's TLS context for the plane's current certificate (rebuilt when it rotates)."""
        credentials = self.plane.credentials  # type: ignore[union-attr]
        cached = self._bootstrap_ctx
        if cached is None or cached[0] != credentials.fingerprint_sha256:
            cached = self._bootstrap_ctx = (credentials.fingerprint_sha256, bootstrap_context(credentials))
        return cached[1]

    def _bootstrap_refused(self, reason: str, detail: str, address: str, presented: str) -> None:
        """A connection to the bootstrap port refused before a request (admission, TLS, deadline)."""
        with contextlib.suppress(Exception):
            self.plane.emitter.emit(Kind.HANDSHAKE_REFUSED, principal=presented, decision="deny", reason=reason,
                                    detail={"detail": detail, "peer_address": address, "server": "bootstrap"})

    def refusals(self) -> dict[str, dict[str, int]]:
        """Refused connections by listener (bootstrap, control) and reason (metrics read this)."""
        out: dict[str, dict[str, int]] = {}
        if self._bootstrap is not None:
            out["bootstrap"] = dict(self._bootstrap.refusals)
        if self._control is not None:
            out["control"] = dict(self._control.refusals)
        return out

    @property
    def expired_cert_refusals(self) -> int:
        """Handshakes at the control endpoint refused for an expired certificate."""
        return self._control.refusals.get("cert.expired", 0) if self._control is not None else 0

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._bootstrap is not None:
            await self._bootstrap.close()
        if self._control is not None:
            await self._control.close()

    # ------------------------------------------------------------------ bootstrap
    async def _serve_join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.plane is not None
        try:
            async with asyncio.timeout(BOOTSTRAP_TIMEOUT_S):
                header = await reader.readexactly(4)
                (size,) = HEADER.unpack(header)
                if not 0 < size <= CONTROL_CODEC.max_frame:
                    raise BootstrapRefused("bad frame size", reason="bootstrap.bad_request")
                decoder = FrameDecoder(CONTROL_CODEC)
                frames = decoder.feed(header + await reader.readexactly(size))
                req = frames[0] if frames else None
                if isinstance(req, (KillSwitchRequest, ReleaseRequest, OperatorRequest, PostureSubmit)) \
                        and self.plane.follower is not None:
                    raise ControlRefused("this control plane is a follower replica: operators' changes go to the "
                                         "one that holds the floor's lease", reason=NOT_LEADER, retryable=True)
                if isinstance(req, KillSwitchRequest):
                    reply: Any = await self.kill_switch(req)
                    raise _Answered(reply)
                if isinstance(req, ReleaseRequest):
                    raise _Answered(self.release(req))
                if isinstance(req, OperatorRequest):
                    raise _Answered(await self.operate(req))
                if isinstance(req, PostureSubmit):
                    # signed by an enrolled host key and fresh, or refused (the hub checks both)
                    await asyncio.to_thread(self.plane.hub_posture, bytes(req.report))
                    raise _Answered(PostureReply(ok=True))
                if not isinstance(req, JoinRequest):
                    raise BootstrapRefused("expected a join request", reason="bootstrap.bad_request")
                await self.caught_up()
                cert_pem, bundle_pem = self.plane.join(req.join_token, req.spiffe_id, req.csr_pem,
                                                       req.code_digest, req.posture)
                reply = JoinReply(cert_pem=cert_pem, bundle_pem=bundle_pem, issuer=self.plane.tokens.issuer,
                                  jwks=self.plane.jwks(), control_id=self.plane.control_id,
                                  sibling_bundle_pem=self.plane.sibling_bundle_pem())
        except _Answered as answered:
            reply = answered.reply
        except TrustFabricError as exc:
            reply = ErrorFrame(reason=exc.reason, detail=exc.detail[:200])
        except Exception as exc:  # noqa: BLE001 - timeouts, resets, garbage: refuse, never crash
            reply = ErrorFrame(reason="bootstrap.bad_request", detail=type(exc).__name__)
        with contextlib.suppress(Exception):
            writer.write(CONTROL_CODEC.encode(reply))
            await asyncio.wait_for(writer.drain(), 1.0)
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def caught_up(self) -> None:
        """A follower replica reads the shared state's versions (off the loop) and applies what moved before it
        answers; :class:`ControlRefused` (``control.state_unavailable``) when it cannot. The lease holder: nothing."""
        follower = self.plane.follower if self.plane is not None else None
        if follower is not None:
            await asyncio.to_thread(follower.catch_up)

    async def _answer_as_follower(self, conn: FrameConnection, frame: Any, answer: Callable[[], Any],
                                  refused: Callable[[TrustFabricError], Any]) -> None:
        """A request at a follower: caught up first, then answered like at the lease holder."""
        try:
            await self.caught_up()
            reply = answer()
        except TrustFabricError as exc:
            reply = refused(exc)
        except Exception as exc:  # noqa: BLE001 - a bug is a refusal, never an answer from stale state
            reply = refused(ControlRefused(type(exc).__name__, reason="control.replica_failed", retryable=True))
        if not conn.closed:
            with contextlib.suppress(Exception):
                conn.send(reply)

    # ------------------------------------------------------------------ operators
    async def command_with_result(self, service: str, name: str, timeout_s: float = COMMAND_TIMEOUT_S,
                                  **args: Any) -> CommandResult:
        """Send a command carrying an ``id`` and wait (bounded) for the service's ``CommandResult``."""
        self._command_ids += 1
        cid = f"cmd-{self._command_ids}"
        fut = asyncio.get_running_loop().create_future()
        self._results[cid] = fut
        try:
            if not self.send_command(service, name, id=cid, **args):
                return CommandResult(id=cid, ok=False, reason="control.service_unavailable")
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return CommandResult(id=cid, ok=False, reason="control.service_timeout")
        finally:
            self._results.pop(cid, None)

    async def kill_switch(self, req: KillSwitchRequest) -> KillSwitchReply:
        """A person's kill-switch command: MFA login and step-up here, the switch itself at pre-trade-risk.

        Fails closed: a refused login, a non-privileged person, an unknown action, a risk
        service that does not answer - each is a refusal with its reason, never a change.
        """
        if self.plane is None:
            return KillSwitchReply(ok=False, reason="control.perimeter_mode")
        if req.action not in KILL_SWITCH_ACTIONS:
            return KillSwitchReply(ok=False, reason="killswitch.bad_action")
        try:
            principal, privileged, mfa_at = self.plane.authenticate_operator(req.user, req.password, req.totp,
                                                                             req.action)
        except TrustFabricError as exc:
            return KillSwitchReply(ok=False, reason=exc.reason, operator=f"user:{req.user}")
        result = await self.command_with_result(KILL_SWITCH_SERVICE, "killswitch", action=req.action,
                                                scope=req.scope, target=req.target, operator=principal,
                                                privileged="1" if privileged else "0", mfa_at=repr(mfa_at))
        r = result.result
        return KillSwitchReply(ok=result.ok, reason=result.reason, state=r.get("state", ""),
                               pending=r.get("pending") == "1", cancels=int(r.get("cancels", "0") or 0),
                               operator=principal)

    def release(self, req: ReleaseRequest) -> ReleaseReply:
        """A security officer's release through the live plane (password + TOTP now, then the role check).

        Fails closed: perimeter mode, a refused login, a wrong role, a stale step-up or a
        principal that is not quarantined - each is a refusal with its reason, nothing released.
        """
        if self.plane is None:
            return ReleaseReply(ok=False, reason="control.perimeter_mode")
        try:
            incident = self.plane.release_by_operator(req.principal, req.user, req.password, req.totp)
        except TrustFabricError as exc:
            return ReleaseReply(ok=False, reason=exc.reason, officer=f"user:{req.user}")
        return ReleaseReply(ok=True, incident_id=incident.incident_id, officer=f"user:{req.user}")

    async def operate(self, req: OperatorRequest) -> OperatorReply:
        """A person's state-changing action: applied by the plane, then confirmed by the floor.

        The reply is ``ok`` only when the plane applied the change and every enforcement
        point confirmed it within :data:`CONFIRM_TIMEOUT_S`; a refusal (login, role,
        step-up, the action's own checks) changes nothing; an unconfirmed change is
        ``control.unconfirmed`` with the points that did not answer in ``missing``.
        """
        who = f"user:{req.credential.user.removeprefix('user:')}"
        if self.plane is None:
            return OperatorReply(ok=False, reason="control.perimeter_mode", operator=who)
        try:
            # the password hash check is slow on purpose: off the loop that serves the floor
            operator = await asyncio.to_thread(self.plane.authorize_operator, req.credential, req.action,
                                               req.target)
            applied = self.plane.apply_operator(operator, req.action, req.target, dict(req.args))
        except TrustFabricError as exc:
            return OperatorReply(ok=False, reason=exc.reason, operator=who)
        except Exception as exc:  # noqa: BLE001 - a bug is a refusal with a reason, never a crash of the plane
            return OperatorReply(ok=False, reason="control.operator_failed", operator=who,
                                 result={"error": type(exc).__name__})
        return await self.confirm(applied)

    async def confirm(self, applied: Applied, timeout_s: float | None = None) -> OperatorReply:
        """Wait (bounded) until the floor took ``applied``; the reply names who confirmed and who did not."""
        assert self.plane is not None
        timeout_s = self.confirm_timeout_s if timeout_s is None else timeout_s
        result = dict(applied.result)
        result["applied_at"] = repr(self.plane.clock.now())  # after the person was checked and the plane changed
        if applied.confirm == CONFIRM_NONE:
            return OperatorReply(ok=True, operator=applied.operator, result=result)
        if applied.confirm == CONFIRM_COMMAND and applied.command is not None:
            service, name, args = applied.command
            answer = await self.command_with_result(service, name, timeout_s, **args)
            result.update(answer.result)
            return OperatorReply(ok=answer.ok, reason=answer.reason, operator=applied.operator, result=result,
                                 applied=[service] if answer.ok else [], missing=[] if answer.ok else [service])
        points = set(self.plane.containment.points)
        if applied.confirm == CONFIRM_CONTAINED:
            principal = applied.principal
            deadline = asyncio.get_running_loop().time() + timeout_s
            while True:
                first = self.plane.containment_first_ack(principal)
                if first:
                    result["first_ack_at"] = repr(first)
                incident = self.plane.containment.open_incident(principal)
                acked = self.plane.containment_acks(principal)
                if (incident is not None and incident.contained) or points <= acked:
                    missing: set[str] = set()
                    break
                if asyncio.get_running_loop().time() >= deadline:
                    missing = points - acked
                    break
                await asyncio.sleep(0.0005)
            acked = points - missing
        else:
            if applied.jwks:
                self._push_frame(PushJwks(jwks=applied.jwks))
            missing, acked_at = await self.barrier(points, timeout_s)
            acked = points - missing
            if acked_at:
                result["first_ack_at"] = repr(min(acked_at))
        if missing:
            return OperatorReply(ok=False, reason=UNCONFIRMED, operator=applied.operator, result=result,
                                 applied=sorted(acked), missing=sorted(missing))
        return OperatorReply(ok=True, operator=applied.operator, result=result, applied=sorted(acked))

    async def barrier(self, points: set[str], timeout_s: float = CONFIRM_TIMEOUT_S) -> tuple[set[str], list[float]]:
        """Send a barrier after every push so far; returns the points that did not answer it in time, and
        when the others did."""
        if not points:
            return set(), []
        self._barrier_ids += 1
        bid = self._barrier_ids
        pending, done, acked_at = set(points), asyncio.Event(), []
        self._barriers[bid] = (pending, done, acked_at)
        try:
            frame = PushBarrier(id=bid)
            for service in points:
                for conn in list(self.subscribers.get(service, ())):
                    if not conn.closed:
                        with contextlib.suppress(Exception):
                            conn.send(frame)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
            return set(pending), list(acked_at)
        finally:
            self._barriers.pop(bid, None)

    def _acked(self, service: str, bid: int) -> None:
        entry = self._barriers.get(bid)
        if entry is None:
            return
        pending, done, acked_at = entry
        if service in pending:
            acked_at.append(self.plane.clock.now() if self.plane is not None else 0.0)
        pending.discard(service)
        if not pending:
            done.set()

    # ------------------------------------------------------------------ control channel
    def _push(self, item: Any) -> None:
        if isinstance(item, Invalidation):
            frame: Any = PushInvalidation(invalidation=item)
        else:  # a RevocationEntry
            frame = PushRevocation(kind=item.kind, value=item.value, reason=item.reason)
        self._push_frame(frame)

    def _push_frame(self, frame: Any) -> None:
        for conn in [c for conns in list(self.subscribers.values()) for c in list(conns)]:
            if not conn.closed:
                with contextlib.suppress(Exception):
                    conn.send(frame)

    def send_command(self, service: str, name: str, **args: str) -> bool:
        sent = False
        for conn in list(self.subscribers.get(service, ())):
            if not conn.closed:
                conn.send(Command(name=name, args={k: str(v) for k, v in args.items()}))
                sent = True
        return sent

    def _answerers(self) -> set[str]:
        return {self.plane.spiffe_id(KILL_SWITCH_SERVICE)} if self.plane is not None else set()

    @staticmethod
    def _issuing(plane: ControlPlane, caller: str, cert_der: bytes, frame: Any
                 ) -> tuple[Callable[[], Any], Callable[[TrustFabricError], Any]]:
        """What a token, table or renewal request is answered with, and refused with."""
        rid = frame.rid
        if type(frame) is TokenRequest:
            def token() -> TokenReply:
                value, audience_id = plane.token_for(caller, cert_der, frame.audience)
                return TokenReply(rid=rid, ok=True, token=value, audience_id=audience_id)
            return token, lambda exc: TokenReply(rid=rid, ok=False, reason=exc.reason, retryable=exc.retryable)
        if type(frame) is TableRequest:
            def table() -> TableReply:
                return TableReply(rid=rid, ok=True, table=plane.table_for(caller, frame.principal, frame.now))

            def table_refused(exc: TrustFabricError) -> TableReply:
                plane.counters["table_refusals"] += 1
                return TableReply(rid=rid, ok=False, reason=exc.reason, retryable=exc.retryable)
            return table, table_refused

        def renew() -> RenewReply:
            cert_pem, bundle_pem = plane.renew(caller, frame.csr_pem, frame.posture)
            return RenewReply(rid=rid, ok=True, cert_pem=cert_pem, bundle_pem=bundle_pem)
        return renew, lambda exc: RenewReply(rid=rid, ok=False, reason=exc.reason, retryable=exc.retryable)

    async def _serve_control(self, conn: FrameConnection) -> None:
        plane = self.plane
        caller = str(conn.peer.spiffe_id) if conn.peer is not None else ""
        cert_der = conn.peer.cert_der if conn.peer is not None else b""
        zero_trust = plane is not None  # the mode, as checked in __init__

        def on_frame(frame: Any) -> None:
            kind = type(frame)
            if kind is Report:
                # a service reports about itself only: its name must be its certificate's
                if zero_trust and not _is_service(plane, caller, frame.service):
                    conn.fail("control.not_owner")
                    return
                self.stats[frame.service] = dict(frame.stats)
                self.links[frame.service] = dict(frame.links)
                if zero_trust:
                    if frame.events:
                        plane.observe_encoded([bytes(e) for e in frame.events])
                    plane.response.decay_risk()  # alert risk heals on the report cadence (rate-limited)
                    for principal in frame.quarantine_acks:
                        plane.acknowledge(principal, frame.service)
            elif kind is Subscribe:
                if zero_trust and not _is_service(plane, caller, frame.service):
                    conn.fail("control.not_owner")
                    return
                self.subscribers.setdefault(frame.service, set()).add(conn)
                if zero_trust:
                    serials, ids = plane.revocation_snapshot()
                    conn.send(Subscribed(jwks=plane.jwks(), revoked=RevocationSnapshot(serials, ids),
                                         global_epoch=plane.engine.global_epoch))
                else:
                    conn.send(Subscribed(jwks=b"", revoked=RevocationSnapshot()))
            elif kind is Ping:
                conn.send(Pong(n=frame.n))
            elif kind is PushAck:
                # a service confirms for itself only: its name must be its certificate's
                if zero_trust and not _is_service(plane, caller, frame.service):
                    conn.fail("control.not_owner")
                    return
                self._acked(frame.service, frame.id)
            elif kind is CommandResult:
                fut = self._results.get(frame.id)
                # only the service the command went to may answer it
                if fut is not None and not fut.done() and (not zero_trust or caller in self._answerers()):
                    fut.set_result(frame)
            elif not zero_trust:
                conn.fail("control.perimeter_mode", kind.__name__)
            elif kind in (TokenRequest, TableRequest, RenewRequest):
                answer, refused = self._issuing(plane, caller, cert_der, frame)
                if plane.follower is None:
                    try:
                        reply = answer()
                    except TrustFabricError as exc:
                        reply = refused(exc)
                    conn.send(reply)
                else:  # a follower replica catches up with the shared state first (off the loop)
                    task = asyncio.get_running_loop().create_task(self._answer_as_follower(conn, frame, answer,
                                                                                           refused))
                    self._follower_tasks.add(task)
                    task.add_done_callback(self._follower_tasks.discard)
            else:
                conn.fail("frame.unexpected", kind.__name__)

        conn.on_frame = on_frame
        try:
            await conn.wait_closed()
        finally:
            for conns in self.subscribers.values():
                conns.discard(conn)
            if zero_trust and conn.close_reason == "cert.expired":  # a channel outlived a certificate
                plane.counters["expired_cert_uses"] += 1
