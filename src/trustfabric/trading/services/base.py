"""The shell every floor service process shares: identity, enforcement point, links, audit, reports.

A service module (``market_data.py``, ``risk.py``...) is a :class:`FloorService`: it
declares its handlers on a :class:`~trustfabric.enforcement.service.GuardedService`
and the peers it calls; :class:`ServiceRuntime` does the rest, identically for every
service:

``zero-trust`` mode
    join the control plane (join token, code digest, signed posture, CSR ->
    attested certificate), open the mTLS control channel (push stream of
    invalidations, revocations and commands), build the
    :class:`~trustfabric.enforcement.pep.EnforcementPoint` (tables pulled from the
    control plane, tokens verified against its JWKS, revocations mirrored) and
    serve with :func:`~trustfabric.enforcement.guard.guarded_handler` on an mTLS
    :class:`~trustfabric.transport.connection.FrameServer`. Outgoing hops are
    :class:`~trustfabric.trading.services.links.PeerLink` s: mTLS to the expected SPIFFE ID, ``OpenSession`` with a token
    for that audience, then pipelined ``Request`` frames.
``perimeter`` mode
    the same processes, handlers and links over plain TCP, with no session and no
    per-hop check (every request reaches its handler; the caller's identity is
    whatever it claims).

Certificates: the runtime renews its certificate at half its lifetime with a fresh
report from its host's posture agent (asked over the agent's Unix socket,
:mod:`trustfabric.signals.agent_socket`; no report, no renewal), retrying with
backoff before expiry (:func:`~trustfabric.identity.rotation.renewal_delay`).
Open connections keep the certificate they were opened with and the server
closes a connection whose peer certificate expires, so every connection moves
before that: the control channel and each outgoing link re-open on the current
certificate right after a renewal, and again when the peer's certificate enters
its last quarter (the peer renewed at half). A moved link takes new requests at
once and retires the old connection once its answers are in. Any use of an
expired certificate that still happens (a handshake refused for one, a
connection closed because one expired) is counted in ``expired_cert_uses``.

Audit: every event of the process (decisions, session events, the core's own
events) goes through :class:`~trustfabric.trading.services.sink.ServiceSink` to one
:class:`~trustfabric.audit.spool.Spool` under
``$TRUSTFABRIC_HOME/spool/<name>/``; in zero-trust mode the transport flushes it
(``on_before_flush``) before any reply or onward request leaves. Replies and
requests are coalesced: one flush (one write, one fsync) per event-loop turn.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import inspect
import os
import signal
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import msgspec

from trustfabric.audit.events import Emitter, Kind, encode_event
from trustfabric.audit.spool import Spool
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.control import client as control_client
from trustfabric.control.audit_bus import SpoolShipper
from trustfabric.control.nats_bus import NatsBus, client_tls
from trustfabric.control.protocol import Command, Report
from trustfabric.control.server import MODES, PERIMETER, ZERO_TRUST
from trustfabric.enforcement.guard import guarded_handler, service_response
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.service import Context, GuardedService
from trustfabric.errors import TrustFabricError
from trustfabric.identity.attestation import code_digest
from trustfabric.identity.errors import CertificateError
from trustfabric.identity.revocation import TOKEN_KEY, RevocationSet
from trustfabric.identity.rotation import renewal_delay
from trustfabric.identity.tokens import TokenVerifier
from trustfabric.metrics import MetricsEndpoint
from trustfabric.percentiles import percentile
from trustfabric.policy.decision import QUARANTINE
from trustfabric.policy.topology import Topology
from trustfabric.signals.agent_socket import fetch_report
from trustfabric.signals.errors import PostureError
from trustfabric.trading.effects import install_effect_counter
from trustfabric.trading.services.endpoints import ControlEndpoints
from trustfabric.trading.services.links import CERT_EXPIRED, LINK_LIMITS, PeerLink, coalesce_sends
from trustfabric.trading.services.metrics import serve_metrics
from trustfabric.trading.services.sink import ServiceSink
from trustfabric.transport.connection import FrameConnection, FrameServer
from trustfabric.transport.endpoint import answer_unhandled
from trustfabric.transport.frames import Request
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

REPORT_INTERVAL_S = 0.25
RENEW_RETRY_S = 1.0  # first retry of a failed renewal; doubling, at most RENEW_MAX_RETRY_S
RENEW_MAX_RETRY_S = 30.0
MOVE_CHECK_S = 0.5  # how often connections are checked against the certificates in force
PEER_MOVE_FRACTION = 0.25  # move a connection once its peer's certificate is in its last quarter
PEER_RETRY_FRACTION = 0.05  # ...and again this often (of its lifetime) while the peer still shows that one
CONTROL_RETIRE_S = 5.0
SYNC_INTERVAL_S = 0.05
_body_encoder = msgspec.msgpack.Encoder()


def package_version() -> str:
    try:
        return metadata.version("trustfabric")
    except metadata.PackageNotFoundError:
        return "0"


def code_digest_of(module_file: str | Path, service: str) -> str:
    """SHA-256 over a service's build: its module source, the trustfabric version and the service name
    (two services built from one module - venue-a and venue-b - are two releases)."""
    build = b"\0trustfabric " + package_version().encode() + b"\0" + service.encode()
    return code_digest(Path(module_file).read_bytes() + build)


def encode_body(obj: Any) -> bytes:
    return _body_encoder.encode(obj)


def renewal_deadline(creds: Any, clock: Clock) -> float:
    """When to renew ``creds`` (just received), on ``clock``'s monotonic clock: at half their lifetime.

    The validity is the CA's wall time, compared with ours once, here; the wait then runs on
    the monotonic clock, so a wall-clock step cannot move the renewal past the expiry.
    """
    half_life = creds.not_before + (creds.not_after - creds.not_before) / 2
    return clock.monotonic() + (half_life - clock.now())


class FloorService(abc.ABC):
    """A service's own logic; subclasses register handlers and may run background tasks."""

    name = "service"
    peers: tuple[str, ...] = ()

    def __init__(self, runtime: "ServiceRuntime") -> None:
        self.rt = runtime

    @abc.abstractmethod
    def register(self, svc: GuardedService) -> None:
        """Declare this service's handlers on ``svc`` (called once, before the server starts)."""

    async def prepare(self) -> None:
        """Open extra listeners (the FIX gateway's edge port) before the process reports READY."""

    async def run(self) -> None:
        """Background work (market data ticks, strategies...); returns when the service stops."""
        await self.rt.stopped.wait()

    def stats(self) -> dict[str, float]:
        return {}

    def on_command(self, command: Command) -> None:
        """An operator command other than ``stop`` (the kill switch...); most services take none."""

    def module_file(self) -> str:
        return inspect.getfile(type(self))


class ServiceRuntime(ControlEndpoints):
    def __init__(self, name: str, mode: str, boot: dict[str, Any], *, clock: Clock = SYSTEM_CLOCK) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.name = name
        self.mode = mode
        self.boot = boot
        self.clock = clock
        self.metrics: MetricsEndpoint | None = None
        self.bus: NatsBus | None = None
        self.shipper: SpoolShipper | None = None  # this point's spool shipped over the bus
        self.bus_revocations = 0  # revocations heard on the NATS bus (applied once, with the push)
        self.bus_failures = 0
        self.home = Path(boot["home"])
        self.topology = Topology.load(boot["topology"])
        self.spiffe_id = self.topology.spiffe_id(name)
        self.ports: dict[str, int] = {k: int(v) for k, v in boot["ports"].items()}
        # where each service listens (a deployment over several hosts; one machine: all on 127.0.0.1)
        self.addresses: dict[str, str] = {k: str(v) for k, v in boot.get("addresses", {}).items()}
        self.control_host = str(boot.get("control_host", "127.0.0.1"))
        # Group commit: a flush writes to the OS before any effect leaves (a killed process loses
        # nothing); the fsync to the device follows within SYNC_INTERVAL_S, off the hot path.
        self._dirty_fd = -1
        self.spool = Spool(self.home / "spool" / name, name, clock=clock, fsync=self._defer_fsync)
        self.sink = ServiceSink(self.spool)
        self.events = Emitter(name, self.sink, clock)
        self.stopped = asyncio.Event()
        self.links: dict[str, PeerLink] = {}
        self.tls: TLSConfig | None = None
        self.control: control_client.ControlClient | None = None
        # tokens, tables and renewals from a follower control-plane replica (up --replicas), the lease holder behind
        self.reads: control_client.ReplicaClient | None = None
        self.pep: EnforcementPoint | None = None
        self.server: FrameServer | None = None
        self.revocations = RevocationSet()
        self.jwks: control_client.LiveJwks | None = None  # the token keys this service trusts (pushed)
        self.quarantine_acks: list[str] = []
        self._perimeter_owners: set[str] = set()
        self._report_task: asyncio.Task | None = None
        self.service: FloorService | None = None
        self.sim_effects: dict[str, float] = {}  # threat simulator: effects of tagged requests
        self._report_pending = False
        self._tasks: set[asyncio.Task] = set()
        self.tables: control_client.ControlTableSource | None = None
        self._control_fp = ""  # fingerprint of our certificate the control channel was opened with
        self._control_lock = asyncio.Lock()
        # connection -> (peer not_after it was last moved away from, when to try again if the peer still shows it)
        self._moved_from: dict[str, tuple[float, float]] = {}
        self.renewals = 0
        self.renewal_failures = 0
        self.expired_cert_uses = 0
        self.control_moves = 0
        self.control_failovers = 0

    def _defer_fsync(self, fd: int) -> None:
        self._dirty_fd = fd

    def sync_audit(self) -> None:
        fd, self._dirty_fd = self._dirty_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    async def _sync_loop(self) -> None:
        while not self.stopped.is_set():
            await asyncio.sleep(SYNC_INTERVAL_S)
            if self._dirty_fd >= 0:
                await asyncio.get_running_loop().run_in_executor(None, self.sync_audit)

    # ------------------------------------------------------------------ helpers for services
    def loop_task(self, coro: Any) -> asyncio.Task:
        """A background task whose failure is swallowed (links retry on their own)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), t.cancelled() or t.exception()))
        return task

    def link(self, target: str) -> PeerLink:
        link = self.links.get(target)
        if link is None:
            link = self.links[target] = PeerLink(self, target)
        return link

    def principal(self, ctx: Context, claimed: str) -> str:
        """Who is calling: the session's principal; in perimeter mode whatever the caller claims."""
        if self.mode == ZERO_TRUST:
            return ctx.principal
        return claimed

    def owner(self, ctx: Context) -> str:
        if ctx.session is not None:
            return str(ctx.session.session_id)
        return str(ctx.extra.get("owner", ""))

    def live_owners(self) -> set[str]:
        if self.pep is not None:
            return {str(s.session_id) for s in self.pep.sessions()}
        return set(self._perimeter_owners)

    # ------------------------------------------------------------------ start
    async def start(self, service: FloorService) -> int:
        self.service = service
        if self.mode == ZERO_TRUST:
            await self._join()
            svc = GuardedService(self.name, self.pep)  # type: ignore[arg-type]
            handler = guarded_handler(self.pep, svc)  # type: ignore[arg-type]
        else:
            svc = GuardedService(self.name, None)  # type: ignore[arg-type]
            handler = self._open_handler(svc)
        service.register(svc)
        await service.prepare()
        if self.boot.get("sim_effects"):
            install_effect_counter(svc, self.sim_effects)

        async def serve(conn: FrameConnection) -> None:
            coalesce_sends(conn)
            try:
                await handler(conn)
            finally:
                if conn.close_reason == CERT_EXPIRED:  # a caller's connection outlived its certificate
                    self.expired_cert_uses += 1

        self.server = await FrameServer(serve, tls=self.tls, emitter=self.events, name=self.name,
                                        limits=LINK_LIMITS).start(self.address_of(self.name), self.ports[self.name])
        if self.mode == PERIMETER:
            await self._open_ops_channel()
        if self.boot.get("metrics_port") is not None:  # Prometheus, read at scrape time (loopback)
            self.metrics = serve_metrics(self, int(self.boot["metrics_port"]))
        self._report_task = asyncio.get_running_loop().create_task(self._report_loop())
        self.loop_task(self._sync_loop())
        return self.server.port

    def address_of(self, service: str) -> str:
        """The address ``service`` listens on (its host's in a deployment over several hosts)."""
        return self.addresses.get(service, "127.0.0.1")

    @property
    def _source(self) -> str | None:
        """The address this service connects from: its host's in a deployment (else the kernel's choice)."""
        return self.address_of(self.name) if self.addresses else None

    async def _join(self) -> None:
        b = self.boot
        posture = await self.fresh_posture() if b.get("posture_socket") else base64.b64decode(b["posture"])
        creds, reply = await control_client.join(
            self.control_host, int(b["bootstrap_port"]), bundle_pem=b["bundle_pem"].encode(), control_id=b["control_id"],
            join_token=b["join_token"], spiffe_id=self.spiffe_id,
            code_digest=code_digest_of(self.service.module_file(), self.name), posture=posture)  # type: ignore[union-attr]
        creds.write(self.home / "floor" / "creds" / self.name)  # the workload's own key files (0600)
        self.credentials = RotatingCredentials(creds)
        self.tls = TLSConfig(self.credentials, revocation=self.revocations, clock=self.clock,
                             sibling_bundle_pem=reply.sibling_bundle_pem)
        self.control = control_client.ControlClient(self.control_host, int(b["control_port"]), self.tls,
                                                    reply.control_id, self.name, source=self._source)
        self._control_fp = creds.fingerprint_sha256
        subscribed = await self.control.start()
        self._apply_revocations(subscribed)
        self.jwks = self.control.jwks = control_client.LiveJwks(subscribed.jwks)  # replaced by pushes (key rotation)
        self.control.on_jwks_refused = lambda exc: self.events.emit(
            Kind.ALERT, principal=self.spiffe_id, action="jwks.mirror", decision="deny", reason=exc.reason)
        verifier = TokenVerifier(self.jwks, reply.issuer, clock=self.clock)
        read_port = int(b.get("read_port", 0) or 0)
        if read_port and read_port != int(b["control_port"]):
            self.reads = control_client.ReplicaClient(self.control_host, read_port, self.tls, reply.control_id,
                                                      self.name, fallback=lambda: self.control, source=self._source)
        # awaited on the control channel (or the replica's), never blocking
        tables = control_client.ControlTableSource(self.reads or self.control)
        self.tables = tables
        self.pep = EnforcementPoint(self.spiffe_id, tables, verifier, clock=self.clock, sink=self.sink,
                                    source=self.name)
        self.pep.attach_revocations(self.revocations)
        self.sink.forward = True
        self.sink.on_security = self.report_soon
        self.control.on_invalidation = self._on_invalidation
        self.control.on_revocation = self._on_revocation
        self.control.on_command = self._on_command
        if b.get("bus_url"):
            await self._join_bus(str(b["bus_url"]))
        self.loop_task(self._rotate_loop())
        self.loop_task(self._move_loop())
        if len(b.get("control_ports", ())) > 1:  # a standby may take over: notice a control plane that hangs
            self.loop_task(self._liveness_loop())

    async def _join_bus(self, url: str) -> None:
        """The NATS bus beside the control channel: the revocation bucket first (what was revoked while this
        point was away), then every revocation published. Both paths apply each change once."""
        creds = self.home / "floor" / "creds" / self.name
        bus = NatsBus(url, client_tls(creds / "cert.pem", creds / "key.pem", creds / "bundle.pem"), self.name)

        async def catch_up() -> None:  # back after the bus was away: what was published meanwhile
            for entry in await bus.revocation_snapshot():
                self._on_bus_revocation(entry)

        try:
            await bus.connect(on_reconnect=catch_up)
            await catch_up()
            if self.boot.get("audit_over_bus"):  # the central log is reached over the bus (beyond one machine)
                self.shipper = await SpoolShipper(bus, self.name, self.spool.directory).start()
                self.loop_task(self.shipper.run(self.stopped))
            await bus.on_revocation(self._on_bus_revocation)
        except Exception as exc:  # noqa: BLE001 - the control channel's push still carries every revocation
            self.bus_failures += 1
            self.events.emit(Kind.ALERT, principal=self.spiffe_id, action="bus.join", decision="deny",
                             reason=getattr(exc, "reason", "bus.unreachable"), detail={"detail": str(exc)[:200]})
            return
        self.bus = bus

    def _on_bus_revocation(self, data: dict) -> None:
        kind, value = str(data.get("kind", "")), str(data.get("value", ""))
        try:
            known = {"serial": lambda: self.revocations.is_revoked(int(value), ""),
                     "spiffe_id": lambda: self.revocations.is_quarantined(value),
                     "release_spiffe_id": lambda: not self.revocations.is_quarantined(value)}[kind]()
        except (KeyError, ValueError):
            return  # not a revocation this point applies
        self.bus_revocations += 1
        if not known:
            self._on_revocation(SimpleNamespace(kind=kind, value=value, reason=str(data.get("reason", ""))))

    def _apply_revocations(self, subscribed: Any) -> None:
        """The revocation snapshot a subscription starts with (idempotent: again on every new channel)."""
        for serial in subscribed.revoked.serials:
            self.revocations.revoke_serial(int(serial), self.clock.now(), "snapshot")
        for sid in subscribed.revoked.spiffe_ids:
            self.revocations.revoke_spiffe_id(sid, self.clock.now(), "quarantine.snapshot")

    async def _open_ops_channel(self) -> None:
        """Perimeter mode: a plain channel to the launcher for reports and commands only."""
        b = self.boot
        self.control = control_client.ControlClient(self.control_host, int(b["control_port"]), None, None, self.name)
        await self.control.start()
        self.control.on_command = self._on_command

    def _on_invalidation(self, inv: Any) -> None:
        assert self.pep is not None
        self.pep.on_invalidation(inv)
        if inv.principal and inv.kind == QUARANTINE and not self.pep.sessions(inv.principal):
            self.quarantine_acks.append(inv.principal)
            self.report_soon()

    def _on_revocation(self, push: Any) -> None:
        now = self.clock.now()
        try:
            if push.kind == "serial":
                self.revocations.revoke_serial(int(push.value), now, push.reason)
            elif push.kind == "spiffe_id":
                self.revocations.revoke_spiffe_id(push.value, now, push.reason)
                if self.pep is not None and not self.pep.sessions(push.value):
                    self.quarantine_acks.append(push.value)
                    self.report_soon()
            elif push.kind == "release_spiffe_id":
                self.revocations.release_spiffe_id(push.value, now, push.reason)
            elif push.kind == TOKEN_KEY:  # the verifier drops the key, then the PEP closes what it admitted
                if self.jwks is not None:
                    self.jwks.revoke(push.value)
                self.revocations.revoke_token_key(push.value, now, push.reason)
        except (TrustFabricError, ValueError) as exc:  # a malformed push revokes nothing: say so in the audit log
            self.events.emit(Kind.ALERT, principal=str(push.value)[:200], action="revocation.mirror", decision="deny",
                             reason=getattr(exc, "reason", "revocation.bad_serial"), detail={"kind": push.kind})

    def _on_command(self, command: Command) -> None:
        if command.name == "stop":
            self.stopped.set()
        elif self.service is not None:
            self.service.on_command(command)

    async def fresh_posture(self) -> bytes:
        """A signed report of this host made now by its posture agent (never one kept from boot)."""
        path = self.boot.get("posture_socket")
        if not path:
            raise PostureError("no posture agent socket for this host", reason="posture.agent_unreachable")
        return await fetch_report(path)

    async def _rotate_loop(self) -> None:
        """Renew the certificate at half its lifetime: new key, fresh posture, attested again.

        The wait runs on the monotonic clock from the moment the certificate was received
        (:func:`renewal_deadline`: the CA's wall-clock validity is compared with ours once), so a
        wall-clock step cannot move the renewal past the expiry. A failed attempt (no report from
        the agent, refused by the CA, control plane away) is retried with backoff, several times
        before the certificate expires; without a fresh report there is no attempt at all (fail closed).
        """
        failures = 0
        creds = self.credentials.current()
        renew_at = renewal_deadline(creds, self.clock)
        received = (self.clock.monotonic(), self.clock.now())
        while not self.stopped.is_set():
            current = self.credentials.current()
            if current is not creds:  # renewed (here or by a move): a new anchor
                creds, renew_at = current, renewal_deadline(current, self.clock)
                received = (self.clock.monotonic(), self.clock.now())
            if failures:
                passed = received[1] + (self.clock.monotonic() - received[0])  # wall time, as the monotonic clock saw it
                delay = renewal_delay(creds.not_before, creds.not_after, passed, failures,
                                      retry_s=RENEW_RETRY_S, max_retry_s=RENEW_MAX_RETRY_S)
            else:
                delay = max(0.0, renew_at - self.clock.monotonic())
            await self._pause(delay)
            if self.stopped.is_set():
                return
            try:
                await self.renew_now()
            except Exception as exc:  # noqa: BLE001 - every failure is retried; none ends the loop
                failures += 1
                self.renewal_failures += 1
                self.events.emit(Kind.CERT_REFUSED, principal=self.spiffe_id, action="cert.renew", decision="deny",
                                 reason=getattr(exc, "reason", "cert.renew_failed"),
                                 detail={"attempt": failures, "error": type(exc).__name__})
                continue
            failures = 0

    async def renew_now(self) -> None:
        """One renewal: a fresh report from the host agent, a new key and CSR, then move every connection."""
        posture = await self.fresh_posture()
        fresh = await self.issuing.renew(self.spiffe_id, posture)
        if not fresh.valid_at(self.clock.now()):
            raise CertificateError("the renewed certificate is not valid now", reason="cert.not_valid")
        self.credentials.replace(fresh)
        fresh.write(self.home / "floor" / "creds" / self.name)
        self.renewals += 1
        await self.move_connections()

    def _needs_move(self, key: str, conn: FrameConnection | None, opened_with: str) -> bool:
        """Opened with a certificate we no longer present, or the peer's is in its last quarter."""
        if conn is None or conn.closed:
            return False
        if opened_with and opened_with != self.credentials.current().fingerprint_sha256:
            return True
        peer = conn.peer
        if peer is None:
            return False
        now = self.clock.now()
        moved = self._moved_from.get(key)
        if moved is not None and moved[0] == peer.not_after and now < moved[1]:
            return False  # moved for this certificate of the peer, which had not renewed yet: not so soon again
        return now >= peer.not_after - (peer.not_after - peer.not_before) * PEER_MOVE_FRACTION

    def _moved_away(self, key: str, peer: Any) -> None:
        lifetime = peer.not_after - peer.not_before
        self._moved_from[key] = (peer.not_after, self.clock.now() + max(1.0, lifetime * PEER_RETRY_FRACTION))

    async def move_connections(self) -> None:
        """Move the control channel, then every outgoing link, that :meth:`_needs_move`."""
        control = self.control
        if control is not None and self._needs_move("control", control.conn, self._control_fp):
            await self.control_on_current(peer_too=True)
        for target, link in list(self.links.items()):
            if self._needs_move(target, link.conn, link.opened_with):
                peer = link.conn.peer if link.conn is not None else None
                for_peer = link.opened_with == self.credentials.current().fingerprint_sha256
                if await link.move() and peer is not None and for_peer:
                    self._moved_away(target, peer)

    async def control_on_current(self, *, peer_too: bool = False) -> None:
        """Make the control channel show our current certificate (tokens are bound to it).

        A new channel subscribes, takes the revocation snapshot again and replaces the old
        one, which stops taking commands at once and closes after ``CONTROL_RETIRE_S``
        (answers still due on it arrive). The table source re-opens on the new certificate.
        """
        async with self._control_lock:
            old = self.control
            if old is None or self.tls is None:
                return
            current = self.credentials.current().fingerprint_sha256
            if self._control_fp == current and not (peer_too and self._needs_move("control", old.conn, current)):
                return  # already on our certificate (and, when asked, the plane's is not ending)
            peer = old.conn.peer if old.conn is not None and self._control_fp == current else None
            new, subscribed = await self._subscribe(old, old.port)
            old.on_command = None  # the server sends to both channels until the old one closes: act once
            new.on_command = self._on_command
            self.control = new
            self._control_fp = current
            self.control_moves += 1
            if peer is not None:
                self._moved_away("control", peer)
            if self.tables is not None and self.reads is None:
                self.tables.client = new  # the next table request goes over the current channel
            asyncio.get_running_loop().call_later(CONTROL_RETIRE_S, old.close)

    @property
    def issuing(self) -> Any:
        """Where tokens and renewals are asked for: the service's control replica, else the lease holder."""
        return self.reads if self.reads is not None else self.control

    async def _subscribe(self, old: Any, port: int) -> tuple[Any, Any]:
        """A new control channel to ``port`` beside ``old``: subscribed, the same key set, the snapshot applied."""
        new = control_client.ControlClient(old.host, port, self.tls, old.control_id, self.name, source=self._source)
        new.on_invalidation = self._on_invalidation
        new.on_revocation = self._on_revocation
        new.jwks, new.on_jwks_refused = old.jwks, old.on_jwks_refused  # one key set, kept by pushes on either
        try:
            subscribed = await new.start()
        except (TrustFabricError, OSError, asyncio.TimeoutError):
            new.close()
            raise
        self._apply_revocations(subscribed)
        return new, subscribed

    async def _move_loop(self) -> None:
        while not self.stopped.is_set():
            await self._pause(MOVE_CHECK_S)
            if self.stopped.is_set():
                return
            try:
                await self.move_connections()
            except (TrustFabricError, OSError, asyncio.TimeoutError):
                pass  # tried again at the next check; the certificates' margins allow many

    def _open_handler(self, svc: GuardedService):
        """Perimeter mode: every request reaches its handler, no session, no check."""

        async def handler(conn: FrameConnection) -> None:
            loop = asyncio.get_running_loop()
            owner = f"conn-{id(conn)}"
            self._perimeter_owners.add(owner)
            send = conn.send

            async def run(req: Request) -> None:
                reply = await svc.dispatch_request(Context(None, req.trace_id, {"owner": owner}), req)
                if conn.closed:
                    return
                send(service_response(req.rid, reply))

            def on_frame(frame: Any) -> None:
                if type(frame) is Request:
                    loop.create_task(run(frame))
                else:
                    answer_unhandled(conn, frame)

            conn.on_frame = on_frame
            try:
                await conn.wait_closed()
            finally:
                self._perimeter_owners.discard(owner)
                with contextlib.suppress(Exception):
                    self.spool.flush()

        return handler

    # ------------------------------------------------------------------ reports
    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.pep is not None:
            pep = self.pep
            out.update(pep_allowed=pep.allowed, pep_denied=pep.denied, pep_refused=pep.refused,
                       fail_open=pep.fail_open, engine_failures=pep.engine_failures,
                       sessions=len(pep.sessions()), session_opens=pep.session_opens)
            opens = list(pep.session_open_ns)  # the ring of recent opens (the rigorous check), read here only
            if opens:
                out["session_open_ms_p50"] = percentile(opens, 50) / 1e6
        else:
            out.update(pep_allowed=0, pep_denied=0, pep_refused=0, fail_open=0)
        expired = self.expired_cert_uses
        if self.server is not None:
            out["handshake_refusals"] = float(sum(self.server.refusals.values()))
            expired += self.server.refusals.get(CERT_EXPIRED, 0)
        if self.mode == ZERO_TRUST:
            if self.shipper is not None:
                out.update(audit_shipped=self.shipper.shipped, audit_resent=self.shipper.resent)
            out.update(bus_revocations=self.bus_revocations, bus_failures=self.bus_failures,
                       bus_reconnects=float(self.bus.reconnects) if self.bus is not None else 0.0)
            out.update(renewals=self.renewals, renewal_failures=self.renewal_failures, expired_cert_uses=expired,
                       connection_moves=self.control_moves + sum(link.moves for link in self.links.values()),
                       control_failovers=self.control_failovers)
            if self.reads is not None:  # what the service's control replica answered, and what went to the holder
                out.update(replica_answered=self.reads.answered, replica_fell_back=self.reads.fell_back,
                           replica_dropped=self.reads.dropped)
            if self.tls is not None:
                out["cert_left_s"] = round(self.credentials.current().not_after - self.clock.now(), 1)
        if self.service is not None:
            out.update(self.service.stats())
        out.update(self.sim_effects)
        return out

    def report_soon(self) -> None:
        """Security events and quarantine confirmations leave on the next loop turn, not the next tick."""
        if self._report_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the service's loop: the periodic report carries them
            return
        self._report_pending = True

        def send() -> None:
            self._report_pending = False
            self.report_now()

        loop.call_soon(send)

    def report_now(self) -> None:
        if self.control is None:
            return
        if self.mode == PERIMETER:
            with contextlib.suppress(Exception):
                self.spool.flush()
        events, self.sink.security = self.sink.security, []
        acks, self.quarantine_acks = self.quarantine_acks, []

        links = {f"{self.name}->{t}": l.latency.summary() for t, l in self.links.items()}
        self.control.report(Report(service=self.name, stats=self.report_stats(), links=links,
                                   events=[encode_event(e) for e in events], quarantine_acks=acks))

    def report_stats(self) -> dict[str, float]:
        """The stats as the report's schema wants them (numbers only).

        A value that is not a number is left out and counted in ``report_stats_dropped``,
        and a ``stats()`` that raises sends only ``report_stats_failed``. The control plane's
        decoder would otherwise refuse the whole report, and with it the security events it
        carries.
        """
        try:
            raw = self.stats()
        except Exception:  # noqa: BLE001 - the events in the report must still leave
            return {"report_stats_failed": 1.0}
        out: dict[str, float] = {}
        dropped = 0
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                dropped += 1
                continue
            out[str(key)] = float(value)
        if dropped:
            out["report_stats_dropped"] = float(dropped)
        return out

    async def _report_loop(self) -> None:
        while not self.stopped.is_set():
            await self._pause(REPORT_INTERVAL_S)
            if self.control is not None and self.control.conn is not None and self.control.conn.closed:
                if self.control.conn.close_reason == CERT_EXPIRED:
                    self.expired_cert_uses += 1
                if not await self._fail_over():
                    self.stopped.set()  # the control plane is gone and no other took the floor: shutting down
            self.report_now()

    async def close(self) -> None:
        self.stopped.set()
        self.report_now()
        for link in self.links.values():
            link.close()
        if self.server is not None:
            await self.server.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.control is not None:
            self.control.close()
        if self.reads is not None:
            self.reads.close()
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        with contextlib.suppress(Exception):
            self.spool.flush()
        self.sync_audit()
        with contextlib.suppress(Exception):
            self.spool.close()


async def serve_service(name: str, mode: str, boot: dict[str, Any], factory: Callable[[ServiceRuntime], FloorService]
                        ) -> int:
    """Run one service until SIGTERM, a ``stop`` command, or the control plane going away."""
    runtime = ServiceRuntime(name, mode, boot)
    service = factory(runtime)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopped.set)
    try:
        port = await runtime.start(service)
    except TrustFabricError as exc:
        print(f"REFUSED {exc.reason} {exc.detail[:200]}", flush=True)
        runtime.spool.close()
        return 3
    print(f"READY {port}", flush=True)
    task = loop.create_task(service.run())
    await runtime.stopped.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await runtime.close()
    return 0


def read_boot() -> dict[str, Any]:
    line = sys.stdin.readline()
    return msgspec.json.decode(line.encode()) if line.strip() else {}
