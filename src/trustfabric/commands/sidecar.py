"""``trustfabric sidecar``: mTLS termination and policy for a service that is not Python.

A thin shell around :class:`trustfabric.enforcement.sidecar.Sidecar`: loads the
workload's credentials (``cert.pem``, ``key.pem``, ``bundle.pem`` in
``--identity``), a table source (the Cedar policy engine over ``--policies`` or a
``--rules`` file; the engine reads the signals set with ``trustfabric signal ...``
(``$TRUSTFABRIC_HOME/policy/signals.json``) unless ``--assume-healthy`` is given
deliberately), and writes every event (handshake refusals, sessions,
decisions) as JSON lines to ``--events`` (default
``$TRUSTFABRIC_HOME/spool/sidecar-<service>/events.jsonl``), flushed before any
byte is forwarded upstream.

Revocations and quarantines reach it like every enforcement point: the identity
store under ``$TRUSTFABRIC_HOME`` (what ``trustfabric ca revoke`` writes) is read
before the sidecar listens and polled while it runs, and when a floor's control
plane runs (``$TRUSTFABRIC_HOME/floor/runtime.json``) the sidecar also subscribes
to its push (revocations, quarantines) under its own certificate. The TLS layer
and the enforcement point consult that copy: a revoked certificate is refused at
the handshake and its live connections are closed.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from pathlib import Path

import typer
import uvloop

from trustfabric.audit.events import AuditEventV1, encode_event
from trustfabric.commands.common import console, refusals_exit
from trustfabric.commands.response import live_control_plane
from trustfabric.enforcement.metrics import pep_families
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.sidecar import DEFAULT_BUSY_POLL_US, RevocationMirror, Sidecar
from trustfabric.errors import ConfigError, TrustFabricError
from trustfabric.home import home_dir, sub_dir
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.store import open_identity_store
from trustfabric.metrics import MetricsEndpoint, counter, gauge, refusals
from trustfabric.policy.decision import QUARANTINE, RELEASE
from trustfabric.transport.tls import TLSConfig


class JsonLinesSink:
    """Events as JSON lines in one append-only file; ``flush`` writes them through to the OS."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab", buffering=1024 * 1024)  # noqa: SIM115 - closed by close()

    def append(self, event: AuditEventV1) -> None:
        self._file.write(encode_event(event) + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{option} must be HOST:PORT, not {value!r}", reason="config.address")
    return host, int(port)


def command(
    listen: str = typer.Option(..., help="HOST:PORT to accept mTLS connections on (port 0: any free port)."),
    upstream: str = typer.Option(..., help="HOST:PORT of the plain-TCP service behind the sidecar."),
    identity: Path = typer.Option(..., help="Directory with the sidecar's cert.pem, key.pem and bundle.pem."),
    policies: Path = typer.Option(None, help="Cedar policy directory: decisions from the policy engine."),
    rules: Path = typer.Option(None, help="Rules file (JSON) instead of a policy directory."),
    resource: str = typer.Option("", help="Resource callers must be allowed to 'connect' to (default svc/<service>)."),
    events: Path = typer.Option(None, help="Where events go as JSON lines."),
    assume_healthy: bool = typer.Option(False, "--assume-healthy",
                                        help="With --policies: fixed, healthy signals instead of the recorded "
                                             "signal state (tests and demos only)."),
    metrics: str = typer.Option("127.0.0.1:0", "--metrics", help="Loopback HOST:PORT for Prometheus metrics "
                                "(port 0: any free port, printed); 'off' for none."),
    busy_poll_us: int = typer.Option(int(DEFAULT_BUSY_POLL_US), "--busy-poll-us", min=0, max=100_000,
                                     help="Keep polling (no sleep) this many microseconds after each forwarded "
                                          "chunk, so a reply is read without a process wake-up; spends CPU only "
                                          "while traffic flows (a core at most; the busy_poll_seconds metric). "
                                          "0: off."),
) -> None:
    """Terminate mTLS for a non-Python service: authorize each connection by policy, log it, proxy bytes."""
    from trustfabric.enforcement.tables import StaticTableSource
    from trustfabric.identity.workload import WorkloadCredentials

    with refusals_exit():
        if (policies is None) == (rules is None):
            raise ConfigError("give exactly one of --policies or --rules", reason="config.policy_source")
        listen_at = _address(listen, "--listen")
        metrics_at = _address(metrics, "--metrics") if metrics != "off" else ("", 0)
        upstream_at = _address(upstream, "--upstream")
        creds = WorkloadCredentials.load(identity)
        own_id = str(creds.spiffe_id)
        service = own_id.rstrip("/").rsplit("/", 1)[-1]
        if policies is not None:
            from trustfabric.policy.engine import PolicyEngine

            if assume_healthy:
                tables = PolicyEngine.from_dir(policies, assume_healthy=True)
            else:
                from trustfabric.policy.topology import Topology
                from trustfabric.signals.state import hub_from_state, load_state

                topology = Topology.for_policies(policies)
                hub = hub_from_state(topology, load_state(sub_dir("policy") / "signals.json"))
                tables = PolicyEngine.from_dir(policies, topology=topology, signals=hub)
        else:
            tables = StaticTableSource.from_file(rules)
        sink = JsonLinesSink(events or sub_dir("spool", f"sidecar-{service}") / "events.jsonl")
        pep = EnforcementPoint(own_id, tables, _NoTokens(), sink=sink)
        store = open_identity_store(home_dir())
        mirror = RevocationMirror(RevocationSet())
        mirror.load(store.list_revocations()[1])  # revoked before the start: refused from the first handshake
        pep.attach_revocations(mirror)
        tls = TLSConfig(creds, revocation=mirror)
        sidecar = Sidecar(pep, resource or f"svc/{service}", upstream_at,
                          lambda: tls.context(server_side=True)[0], tls.verify_peer, busy_poll_us=busy_poll_us)

        async def run() -> None:
            host, port = await sidecar.start(*listen_at)
            stop = asyncio.Event()
            poll = asyncio.get_running_loop().create_task(mirror.follow_store(store.list_revocations, stop))
            gc.collect()
            gc.freeze()  # what start-up made is never collected again: no full collection walks it mid-request
            console.print(f"sidecar {own_id} listening on {host}:{port} -> {upstream_at[0]}:{upstream_at[1]}",
                          highlight=False, soft_wrap=True)
            endpoint = None
            if metrics != "off":
                endpoint = MetricsEndpoint(lambda: sidecar_families(sidecar, creds)).start(*metrics_at)
                console.print(f"metrics on {endpoint.url}", highlight=False)
            control = await _follow_control_plane(tls, service, mirror, pep)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await poll
            if endpoint is not None:
                endpoint.close()
            if control is not None:
                control.close()
            await sidecar.close()

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the transport's loop
                runner.run(run())
        finally:
            pep.flush_decisions()
            sink.close()
            store.close()


async def _follow_control_plane(tls: TLSConfig, service: str, mirror: RevocationMirror, pep: EnforcementPoint):
    """Subscribe to a running floor's push (revocations, quarantines) under the sidecar's certificate.

    Returns the control client, or ``None`` when no control plane runs or it refuses the
    subscription (the sidecar's identity is not one of its services); the identity store
    poll covers those cases (one line says which source the sidecar follows).
    """
    from trustfabric.control.client import ControlClient

    try:
        control = live_control_plane()
    except TrustFabricError as exc:
        console.print(f"revocations: identity store only ({exc.reason})", highlight=False)
        return None
    if control is None:
        console.print("revocations: identity store (no control plane running)", highlight=False)
        return None
    client = ControlClient("127.0.0.1", int(control["control_port"]), tls, control["spiffe_id"], service)

    def on_invalidation(inv) -> None:  # the sidecar's tables are its own: only quarantines and releases apply
        if inv.principal and inv.kind == QUARANTINE:
            pep.quarantine(inv.principal, inv.reason)
        elif inv.principal and inv.kind == RELEASE:
            pep.release(inv.principal)

    client.on_revocation = lambda push: mirror.apply(push.kind, push.value, push.reason)
    client.on_invalidation = on_invalidation
    try:
        subscribed = await client.start()
    except (TrustFabricError, OSError, TimeoutError) as exc:
        client.close()
        console.print(f"revocations: identity store only (control plane: {getattr(exc, 'reason', repr(exc))})",
                      highlight=False)
        return None
    for serial in subscribed.revoked.serials:
        mirror.apply("serial", str(serial), "snapshot")
    for sid in subscribed.revoked.spiffe_ids:
        mirror.apply("spiffe_id", sid, "quarantine.snapshot")
    console.print(f"revocations: identity store and the control plane's push ({control['spiffe_id']})",
                  highlight=False)
    return client


def sidecar_families(sidecar: Sidecar, creds):
    """The sidecar's metrics: its enforcement point, its listener, what it forwarded, its certificate."""
    yield from pep_families(sidecar.pep)
    stats = sidecar.stats()
    yield refusals({"sidecar": stats["handshake_refusals"]})
    yield gauge("handshakes_in_flight", "Connections admitted and still in their handshake.",
                stats["admission"]["handshaking"], labels={"service": "sidecar"})
    yield gauge("connections_open", "Proxied connections open now.", stats["open"], labels={"service": "sidecar"})
    yield counter("sidecar_proxied_bytes", "Bytes forwarded both ways.", stats["proxied_bytes"])
    yield counter("sidecar_busy_poll_seconds", "Seconds spent polling for the next chunk instead of sleeping.",
                  stats["busy_poll_s"])
    yield counter("sidecar_connections", "Connections by outcome.", label="outcome",
                  by={"accepted": stats["accepted"], "refused": stats["refused"]})
    yield gauge("certificate_expiry_seconds", "Seconds left on the sidecar's certificate.",
                creds.not_after - time.time(), labels={"service": "sidecar"})


class _NoTokens:
    """The sidecar's sessions are certificate-only; a token is never accepted here."""

    def verify(self, token, audience, presented_cert_der=None, now=None):
        from trustfabric.errors import IdentityError

        raise IdentityError("the sidecar takes no tokens", reason="token.not_accepted")
