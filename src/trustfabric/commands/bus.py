"""``trustfabric bus config``: a nats-server configuration for the floor's control bus beyond one machine.

It issues the NATS server a certificate from the floor's trust domain CA
(``spiffe://<domain>/bus/nats``), writes it with its key and the CA bundle under ``--out``,
and writes ``nats.conf``: TLS with ``verify_and_map`` (clients authenticate with their
fabric certificates, mapped by SPIFFE ID) and per-identity permissions from the floor's
topology (see :mod:`trustfabric.control.nats_bus`). Run it with ``nats-server -c nats.conf``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from trustfabric.commands.common import console, refusals_exit

app = typer.Typer(no_args_is_help=True, help="The control bus on NATS JetStream: config.")


@app.command("config")
def config(
    out: Path = typer.Option(..., "--out", help="Directory for nats.conf, the server's certificate and the bundle."),
    listen: str = typer.Option("127.0.0.1:4222", "--listen", help="HOST:PORT the NATS server listens on."),
) -> None:
    """Write a nats-server configuration: mTLS with the fabric's CA, users by SPIFFE ID, least privilege."""
    from trustfabric.control.nats_bus import write_server_files
    from trustfabric.control.plane import CONTROL_NAME, CONTROL_SEGMENT
    from trustfabric.home import home_dir
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.policy.paths import FLOOR_MANIFEST
    from trustfabric.policy.topology import Topology

    with refusals_exit():
        topo = Topology.load(FLOOR_MANIFEST)
        with IdentityPlane(home_dir()) as plane:
            write_server_files(plane, topo, out, listen,
                               f"spiffe://{topo.trust_domain}/{CONTROL_SEGMENT}/{CONTROL_NAME}")
    console.print(f"wrote {out / 'nats.conf'}; run: nats-server -c {out / 'nats.conf'}", highlight=False)
