"""``trustfabric agent``: the per-host agent serving the SPIFFE Workload API on a Unix socket.

The agent attests each caller by its socket's peer credentials and code digest, and
issues X.509- and JWT-SVIDs for promoted releases (:mod:`trustfabric.agent.workload_api`).
It signs this host's posture reports with its own Ed25519 key
(``$TRUSTFABRIC_HOME/agent/host-<host>.pem``, made at the first start): attestation
counts those reports only once an operator registered the key
(``trustfabric ca register-host HOST --public-key $TRUSTFABRIC_HOME/agent/host-HOST.pub``),
and the agent refuses to start until then, saying so.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.agent.workload_api import DEFAULT_SVID_TTL_S, WorkloadApi, WorkloadApiServer
from trustfabric.commands.common import console, refusals_exit, until_signalled
from trustfabric.errors import ConfigError
from trustfabric.home import home_dir
from trustfabric.identity.plane import IdentityPlane
from trustfabric.keyfiles import key_to_pem, write_private_file
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import key_id_of


def host_key(home: Path, host: str) -> Ed25519PrivateKey:
    """The agent's host key (made 0600 at the first start, its public half beside it)."""
    path = home / "agent" / f"host-{host}.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds no Ed25519 key", reason="agent.bad_host_key")
        return key
    key = Ed25519PrivateKey.generate()
    write_private_file(path, key_to_pem(key))
    path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def command(
    socket_path: Path = typer.Option(..., "--socket", help="Unix socket to serve the Workload API on "
                                     "(workloads: SPIFFE_ENDPOINT_SOCKET=unix://PATH)."),
    host: str = typer.Option(socket.gethostname(), "--host", help="This host's name, as registered."),
    trust_domain: str = typer.Option("", "--trust-domain", help="Trust domain (default: the floor's)."),
    svid_ttl: int = typer.Option(DEFAULT_SVID_TTL_S, "--svid-ttl", help="X.509-SVID lifetime, seconds "
                                 "(a new one is pushed at half of it)."),
) -> None:
    """Serve the SPIFFE Workload API to this host's workloads: attested by peer credentials and code digest."""
    with refusals_exit():
        home = home_dir()
        domain = trust_domain or Topology.load(FLOOR_MANIFEST).trust_domain
        key = host_key(home, host)
        plane = IdentityPlane(home)
        plane.ca(domain)  # no CA for the domain: refused now (ca.unknown_domain)
        registered = plane.host_keys().get(key_id_of(key.public_key()))
        if registered is None or registered[0] != host:
            raise ConfigError(f"this agent's host key is not registered for {host}: run `trustfabric ca "
                              f"register-host {host} --public-key {home / 'agent' / f'host-{host}.pub'}`",
                              reason="agent.host_not_registered")
        api = WorkloadApi(plane, domain, HostPostureAgent(host, key), svid_ttl_s=svid_ttl)

    async def run() -> None:
        server = await WorkloadApiServer(api).start(socket_path)
        console.print(f"workload API for {domain} on unix://{socket_path} (host {host})", highlight=False)
        await until_signalled()
        await server.close()

    try:
        asyncio.run(run())
    finally:
        plane.close()
