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
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from trustfabric.audit.events import AuditEventV1, encode_event
from trustfabric.commands.common import console, refusals_exit
from trustfabric.errors import ConfigError
from trustfabric.home import sub_dir


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
) -> None:
    """Terminate mTLS for a non-Python service: authorize each connection by policy, log it, proxy bytes."""
    from trustfabric.enforcement.pep import EnforcementPoint
    from trustfabric.enforcement.sidecar import Sidecar
    from trustfabric.enforcement.tables import StaticTableSource
    from trustfabric.identity.workload import WorkloadCredentials
    from trustfabric.transport.tls import TLSConfig, build_context

    with refusals_exit():
        if (policies is None) == (rules is None):
            raise ConfigError("give exactly one of --policies or --rules", reason="config.policy_source")
        listen_at = _address(listen, "--listen")
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

                manifest = policies / "floor.toml"
                topology = Topology.load(manifest if manifest.exists() else Topology.default_path())
                hub = hub_from_state(topology, load_state(sub_dir("policy") / "signals.json"))
                tables = PolicyEngine.from_dir(policies, topology=topology, signals=hub)
        else:
            tables = StaticTableSource.from_file(rules)
        sink = JsonLinesSink(events or sub_dir("spool", f"sidecar-{service}") / "events.jsonl")
        pep = EnforcementPoint(own_id, tables, _NoTokens(), sink=sink)
        tls = TLSConfig(creds)
        sidecar = Sidecar(pep, resource or f"svc/{service}", upstream_at, build_context(creds, server_side=True),
                          tls.verify_peer)

        async def run() -> None:
            host, port = await sidecar.start(*listen_at)
            console.print(f"sidecar {own_id} listening on {host}:{port} -> {upstream_at[0]}:{upstream_at[1]}",
                          highlight=False, soft_wrap=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await sidecar.close()

        try:
            asyncio.run(run())
        finally:
            pep.flush_decisions()
            sink.close()


class _NoTokens:
    """The sidecar's sessions are certificate-only; a token is never accepted here."""

    def verify(self, token, audience, presented_cert_der=None, now=None):
        from trustfabric.errors import IdentityError

        raise IdentityError("the sidecar takes no tokens", reason="token.not_accepted")
