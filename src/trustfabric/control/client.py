"""The workload's side of the control plane: join, then tokens, tables, renewals and the push stream.

* :func:`join` - the bootstrap exchange over server-authenticated TLS (the
  workload checks the control plane's certificate against the trust bundle the
  launcher gave it and its SPIFFE ID); returns the workload's first credentials.
* :class:`ControlClient` - one mTLS connection on the event loop: ``await
  token(audience)``, ``await renew(csr, posture)``, the push stream
  (invalidations, revocations, commands) delivered to callbacks, and ``report``;
  it answers every :class:`~trustfabric.control.protocol.PushBarrier` with a ``PushAck``
  once the pushes before it went through the callbacks, and keeps the token keys
  current (:class:`LiveJwks`, replaced by each ``PushJwks``).
* :class:`ControlTableSource` - the enforcement point's table source: a
  ``TableRequest`` on that same control connection, awaited with its own deadline
  (nothing blocks the event loop; the hot path never calls it). Any failure is
  :class:`~trustfabric.enforcement.remote.EngineUnreachable`, so the enforcement
  point fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustfabric.control.errors import BootstrapRefused, ControlRefused
from trustfabric.control.protocol import (
    CONTROL_CODEC, Command, JoinReply, JoinRequest, PushAck, PushBarrier, PushInvalidation, PushJwks, PushRevocation,
    RenewReply,
    RenewRequest, Report, Subscribe, Subscribed, TableReply, TableRequest, TokenReply, TokenRequest,
)
from trustfabric.enforcement.errors import EngineUnreachable
from trustfabric.errors import PolicyError, TrustFabricError
from trustfabric.identity.errors import TokenError
from trustfabric.identity.certs import peer_spiffe_id
from trustfabric.identity.tokens import StaticJwks
from trustfabric.identity.workload import WorkloadCredentials, key_to_pem, new_key_and_csr
from trustfabric.policy.decision import DecisionTable
from trustfabric.transport.connection import FrameConnection, Limits, connect
from trustfabric.transport.frames import ErrorFrame, FrameDecoder, Ping, Pong
from trustfabric.transport.tls import TLSConfig

JOIN_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0
TABLE_TIMEOUT_S = 0.5  # a session open waits no longer for its table (then it is refused)
CONTROL_LIMITS = Limits(idle_timeout_s=3600.0)


def _client_context(bundle_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the identity is the SPIFFE ID, checked below
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    return ctx


async def _one_exchange(host: str, port: int, *, bundle_pem: bytes, control_id: str, request: Any, timeout_s: float,
                        refused: type[ControlRefused] | type[BootstrapRefused], wrong_server: str,
                        unreachable: str) -> Any:
    """Send one frame over server-authenticated TLS and return the first frame back (or None).

    The server must present ``control_id``; a different server is ``refused`` with reason
    ``wrong_server``, a transport failure or timeout with ``unreachable``, an ``ErrorFrame``
    with the server's own reason.
    """
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=_client_context(bundle_pem))
            try:
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                server_id = str(peer_spiffe_id(x509.load_der_x509_certificate(der)))
                if server_id != control_id:
                    raise refused(f"server is {server_id}, expected {control_id}",
                                  reason=wrong_server)
                writer.write(CONTROL_CODEC.encode(request))
                await writer.drain()
                decoder = FrameDecoder(CONTROL_CODEC)
                frames: list[Any] = []
                while not frames:
                    data = await reader.read(65536)
                    if not data:
                        break
                    frames = decoder.feed(data)
            finally:
                writer.close()
    except refused:
        raise
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
        raise refused(f"{host}:{port} unreachable: {exc!r}", reason=unreachable, retryable=True) from None
    reply = frames[0] if frames else None
    if isinstance(reply, ErrorFrame):
        raise refused(reply.detail, reason=reply.reason)
    return reply


async def join(host: str, port: int, *, bundle_pem: bytes, control_id: str, join_token: str, spiffe_id: str,
               code_digest: str, posture: bytes) -> tuple[WorkloadCredentials, JoinReply]:
    """Attest and get the first certificate; :class:`BootstrapRefused` with the server's reason code."""
    key, csr = new_key_and_csr(spiffe_id)
    request = JoinRequest(join_token=join_token, spiffe_id=spiffe_id,
                          csr_pem=csr.public_bytes(serialization.Encoding.PEM), code_digest=code_digest,
                          posture=posture)
    reply = await _one_exchange(host, port, bundle_pem=bundle_pem, control_id=control_id, request=request,
                                timeout_s=JOIN_TIMEOUT_S, refused=BootstrapRefused,
                                wrong_server="bootstrap.wrong_server", unreachable="bootstrap.unreachable")
    if not isinstance(reply, JoinReply):
        raise BootstrapRefused("no join reply", reason="bootstrap.unreachable")
    return WorkloadCredentials(cert_pem=reply.cert_pem, key_pem=key_to_pem(key), bundle_pem=reply.bundle_pem), reply


async def operator_request(host: str, port: int, *, bundle_pem: bytes, control_id: str, request: Any,
                           timeout_s: float = 10.0) -> Any:
    """A person's one request over the operator endpoint (server-authenticated TLS, one exchange).

    A :class:`~trustfabric.control.protocol.KillSwitchRequest` gets a ``KillSwitchReply``, a
    :class:`~trustfabric.control.protocol.ReleaseRequest` a ``ReleaseReply``. Raises
    :class:`ControlRefused` (``control.unreachable``, ``control.wrong_server``) when the control
    plane cannot be reached or is not who the runtime manifest says.
    """
    reply = await _one_exchange(host, port, bundle_pem=bundle_pem, control_id=control_id, request=request,
                                timeout_s=timeout_s, refused=ControlRefused,
                                wrong_server="control.wrong_server", unreachable="control.unreachable")
    if reply is None:
        raise ControlRefused("no reply", reason="control.unreachable", retryable=True)
    return reply


kill_switch = operator_request  # a person's kill-switch request: halt, reduce, resume
release = operator_request  # a security officer's release of a quarantined principal


class LiveJwks:
    """The token verifier's key source on a service: the JWKS from the subscription, replaced when pushed.

    A pushed set that does not parse is refused (``token.bad_jwks``) and the last good one stays.
    A revoked key (a ``token_key`` revocation) stays out of every later set too.
    """

    def __init__(self, jwks: bytes) -> None:
        self._current = StaticJwks(json.loads(jwks))
        self._revoked: set[str] = set()

    def replace(self, jwks: bytes) -> None:
        try:
            document = json.loads(jwks)
        except ValueError as exc:
            raise TokenError(f"unreadable JWKS: {exc}", reason="token.bad_jwks") from None
        fresh = StaticJwks(document)
        for kid in self._revoked:
            fresh.revoke(kid)
        self._current = fresh

    def revoke(self, kid: str) -> bool:
        """Stop trusting ``kid`` now and in every set pushed later."""
        self._revoked.add(kid)
        return self._current.revoke(kid)

    def verification_keys(self, now: float | None = None):  # noqa: ANN201 - the key source protocol of TokenVerifier
        return self._current.verification_keys(now)


class ControlClient:
    """The workload's mTLS control channel (one event loop)."""

    def __init__(self, host: str, port: int, tls: TLSConfig | None, control_id: str | None, service: str,
                 source: str | None = None) -> None:
        self.host, self.port, self.tls, self.control_id, self.service = host, port, tls, control_id, service
        self.source = source  # the local address to connect from (the service's host in a deployment)
        self.conn: FrameConnection | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._rid = 0
        self.on_invalidation: Callable[[Any], None] | None = None
        self.on_revocation: Callable[[PushRevocation], None] | None = None
        self.on_command: Callable[[Command], None] | None = None
        self.on_jwks_refused: Callable[[TrustFabricError], None] | None = None
        self.jwks: LiveJwks | None = None
        self.subscribed: asyncio.Future | None = None
        self._refusal = ""
        self._pings: dict[int, asyncio.Future] = {}
        self._ping_n = 0

    async def start(self) -> Subscribed:
        await self.connect()
        self.subscribed = asyncio.get_running_loop().create_future()
        self.conn.send(Subscribe(service=self.service))  # type: ignore[union-attr]
        return await asyncio.wait_for(self.subscribed, REQUEST_TIMEOUT_S)

    async def connect(self) -> None:
        """The channel alone, for requests (a follower replica's: pushes come from the lease holder only)."""
        self.conn = await connect(self.host, self.port, tls=self.tls, codec=CONTROL_CODEC, limits=CONTROL_LIMITS,
                                  expected_peer=self.control_id, source=self.source)
        for frame in self.conn.take_early_frames():
            self._on_frame(frame)
        self.conn.on_frame = self._on_frame
        self.conn.on_close = self._on_close

    def _on_close(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        if self.subscribed is not None:
            pending[0] = self.subscribed  # a refused subscription ends start() now, not at its timeout
        refused = self._refusal or "control.unreachable"  # the server's reason code when it sent one
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ControlRefused(f"control channel closed: {reason}", reason=refused,
                                                 retryable=not self._refusal))

    def _on_frame(self, frame: Any) -> None:
        kind = type(frame)
        if kind is PushInvalidation:
            if self.on_invalidation is not None:
                self.on_invalidation(frame.invalidation)
        elif kind is PushRevocation:
            if self.on_revocation is not None:
                self.on_revocation(frame)
        elif kind is Command:
            if self.on_command is not None:
                self.on_command(frame)
        elif kind is PushBarrier:
            # every frame before it went through the callbacks above, synchronously, in order
            if self.conn is not None and not self.conn.closed:
                self.conn.send(PushAck(service=self.service, id=frame.id))
        elif kind is PushJwks:
            try:
                if self.jwks is not None:  # the service's verifier reads it (perimeter: none)
                    self.jwks.replace(frame.jwks)
            except TrustFabricError as exc:  # the last good keys stay; the service logs it
                if self.on_jwks_refused is not None:
                    self.on_jwks_refused(exc)
        elif kind is Subscribed:
            if self.subscribed is not None and not self.subscribed.done():
                self.subscribed.set_result(frame)
        elif kind is ErrorFrame:  # the server refuses and closes: keep its reason for what is pending
            self._refusal = frame.reason
        elif kind is Pong:
            waiter = self._pings.pop(frame.n, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        else:
            fut = self._pending.pop(getattr(frame, "rid", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    def _channel(self) -> Any:
        """The open channel; :class:`ControlRefused` (``control.unreachable``, retryable) when it is down."""
        conn = self.conn
        if conn is None or conn.closed:
            raise ControlRefused("control channel down", reason="control.unreachable", retryable=True)
        return conn

    async def _exchange(self, conn: Any, waiting: dict[int, asyncio.Future], key: int, frame: Any,
                        timeout_s: float, *, late: str, reason: str) -> Any:
        """Send ``frame`` and wait for the answer the frame handler files under ``key`` in ``waiting``;
        :class:`ControlRefused` (``reason``, retryable) when none comes within ``timeout_s``."""
        fut = asyncio.get_running_loop().create_future()
        waiting[key] = fut
        try:
            conn.send(frame)
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise ControlRefused(f"{late} in {timeout_s} s", reason=reason, retryable=True) from None
        finally:  # answered, timed out or cancelled: nothing waits for this key any more
            waiting.pop(key, None)

    async def _request(self, make: Callable[[int], Any], timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        conn = self._channel()
        self._rid += 1
        rid = self._rid
        return await self._exchange(conn, self._pending, rid, make(rid), timeout_s,
                                    late="control plane did not answer", reason="control.unreachable")

    async def ping(self, timeout_s: float) -> None:
        """One round trip on the channel: :class:`ControlRefused` (``control.unresponsive``, retryable) when the
        control plane does not answer within ``timeout_s`` (hung), ``control.unreachable`` when it is closed."""
        conn = self._channel()
        self._ping_n += 1
        n = self._ping_n
        await self._exchange(conn, self._pings, n, Ping(n=n), timeout_s,
                             late="the control plane did not answer a ping", reason="control.unresponsive")

    async def table(self, principal: str, now: float, *, timeout_s: float = REQUEST_TIMEOUT_S) -> TableReply:
        """The decision table of ``principal`` (the control plane answers ``ok=False`` with a reason)."""
        return await self._request(lambda rid: TableRequest(rid=rid, principal=principal, now=now), timeout_s)

    async def token(self, audience: str) -> tuple[str, str]:
        """(token, audience SPIFFE ID) for ``audience`` (a service name)."""
        reply: TokenReply = await self._request(lambda rid: TokenRequest(rid=rid, audience=audience))
        if not reply.ok:
            raise ControlRefused(f"no token for {audience}", reason=reply.reason, retryable=reply.retryable)
        return reply.token, reply.audience_id

    async def renew(self, spiffe_id: str, posture: bytes) -> WorkloadCredentials:
        key, csr = new_key_and_csr(spiffe_id)
        pem = csr.public_bytes(serialization.Encoding.PEM)
        reply: RenewReply = await self._request(lambda rid: RenewRequest(rid=rid, csr_pem=pem, posture=posture))
        if not reply.ok:
            raise BootstrapRefused("renewal refused", reason=reply.reason, retryable=reply.retryable)
        return WorkloadCredentials(cert_pem=reply.cert_pem, key_pem=key_to_pem(key), bundle_pem=reply.bundle_pem)

    def report(self, report: Report) -> None:
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(Exception):
                self.conn.send(report)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class ReplicaClient:
    """Tokens, tables and renewals from a follower control-plane replica, the lease holder's channel behind it.

    The floor spreads its services over its control replicas (``read_port`` in a service's boot line); the
    service's subscription - pushes, reports, commands - stays on the lease holder. A request goes to the
    replica; when the replica cannot answer (down, not caught up with the state of record: a retryable
    refusal) it goes to the lease holder (``fallback()``, the current channel). A final refusal is the answer.
    The channel to the replica is opened on first use and again, at most every ``RETRY_S``, after it closed. A
    replica that does not answer within ``ATTEMPT_S`` (hung: SIGSTOP, a stuck loop) is dropped at once and left
    alone for ``RETRY_S``: one slow request, then the holder answers, and the session opens in time.
    """

    RETRY_S = 2.0
    ATTEMPT_S = 0.25  # a follower answers in milliseconds (one query, then the table)
    CONNECT_S = 0.5

    def __init__(self, host: str, port: int, tls: TLSConfig | None, control_id: str | None, service: str,
                 fallback: Callable[[], ControlClient], source: str | None = None) -> None:
        self.host, self.port = host, port
        self._make = lambda: ControlClient(host, port, tls, control_id, service, source=source)
        self.fallback = fallback
        self.client: ControlClient | None = None
        self._tried_at = -self.RETRY_S
        self.answered = 0  # requests the replica answered
        self.fell_back = 0  # requests that went to the lease holder instead
        self.dropped = 0  # times the replica did not answer in time and was left alone

    async def _replica(self) -> ControlClient | None:
        client = self.client
        if client is not None and client.conn is not None and not client.conn.closed:
            return client
        now = time.monotonic()
        if now - self._tried_at < self.RETRY_S:
            return None
        self._tried_at = now
        client = self._make()
        try:
            await asyncio.wait_for(client.connect(), self.CONNECT_S)
        except (TrustFabricError, OSError, TimeoutError):
            client.close()
            return None
        self.client = client
        return client

    def _drop(self, client: ControlClient) -> None:
        """A replica that did not answer in time: closed, and not asked again for ``RETRY_S``."""
        client.close()
        if self.client is client:
            self.client = None
        self._tried_at = time.monotonic()
        self.dropped += 1

    async def _ask(self, call: Callable[[ControlClient], Awaitable[Any]], ok: Callable[[Any], bool]) -> Any:
        replica = await self._replica()
        if replica is not None:
            try:
                result = await asyncio.wait_for(call(replica), self.ATTEMPT_S)
            except TimeoutError:
                self._drop(replica)
            except TrustFabricError as exc:
                if not exc.retryable:
                    self.answered += 1
                    raise
            else:
                if ok(result):
                    self.answered += 1
                    return result
        self.fell_back += 1
        return await call(self.fallback())

    async def table(self, principal: str, now: float, *, timeout_s: float = REQUEST_TIMEOUT_S) -> TableReply:
        return await self._ask(lambda c: c.table(principal, now, timeout_s=timeout_s),
                               lambda reply: reply.ok or not reply.retryable)

    async def token(self, audience: str) -> tuple[str, str]:
        return await self._ask(lambda c: c.token(audience), lambda _: True)

    async def renew(self, spiffe_id: str, posture: bytes) -> WorkloadCredentials:
        return await self._ask(lambda c: c.renew(spiffe_id, posture), lambda _: True)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class ControlTableSource:
    """Decision tables over the workload's control channel, awaited with their own deadline.

    An enforcement point awaits :meth:`fetch_table` (session open, renewal, re-pull of a
    stale table) while its event loop keeps serving every other connection; a control
    plane that does not answer within ``timeout_s`` (stopped, hung, gone) is
    :class:`~trustfabric.enforcement.remote.EngineUnreachable` and the session is refused.
    """

    def __init__(self, client: ControlClient, timeout_s: float = TABLE_TIMEOUT_S) -> None:
        self.client = client
        self.timeout_s = timeout_s

    async def fetch_table(self, principal: str, now: float) -> DecisionTable:
        try:
            reply = await self.client.table(principal, now, timeout_s=self.timeout_s)
        except ControlRefused as exc:
            raise EngineUnreachable(f"control plane: {exc.detail or exc.reason}") from None
        if not reply.ok or reply.table is None:
            raise PolicyError(f"control plane refused the table of {principal}", reason=reply.reason or "policy.error",
                              retryable=reply.retryable)
        return reply.table

    def decision_table(self, principal: str, now: float) -> DecisionTable:
        """Never blocks: these tables are awaited (:meth:`fetch_table`), so a synchronous pull is unreachable."""
        raise EngineUnreachable("the control plane's tables are awaited (fetch_table), never pulled synchronously")
