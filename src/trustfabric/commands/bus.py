"""``trustfabric bus config``: a nats-server configuration for the floor's control bus beyond one machine.

It issues the NATS server a certificate from the floor's trust domain CA
(``spiffe://<domain>/bus/nats``), writes it with its key and the CA bundle under ``--out``,
and writes ``nats.conf``: TLS with ``verify_and_map`` (clients authenticate with their
fabric certificates, mapped by SPIFFE ID) and per-identity permissions from the floor's
topology (see :mod:`trustfabric.control.nats_bus`). Run it with ``nats-server -c nats.conf``.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization

from trustfabric.commands.common import console, refusals_exit

app = typer.Typer(no_args_is_help=True, help="The control bus on NATS JetStream: config.")


@app.command("config")
def config(
    out: Path = typer.Option(..., "--out", help="Directory for nats.conf, the server's certificate and the bundle."),
    listen: str = typer.Option("127.0.0.1:4222", "--listen", help="HOST:PORT the NATS server listens on."),
) -> None:
    """Write a nats-server configuration: mTLS with the fabric's CA, users by SPIFFE ID, least privilege."""
    from trustfabric.control.nats_bus import server_config
    from trustfabric.control.plane import CONTROL_NAME, CONTROL_SEGMENT
    from trustfabric.home import home_dir
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.identity.workload import new_key_and_csr
    from trustfabric.keyfiles import key_to_pem, write_private_file
    from trustfabric.policy.paths import FLOOR_MANIFEST
    from trustfabric.policy.topology import Topology

    with refusals_exit():
        topo = Topology.load(FLOOR_MANIFEST)
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        with IdentityPlane(home_dir()) as plane:
            ca = plane.ca(topo.trust_domain)
            sid = f"spiffe://{topo.trust_domain}/bus/nats"
            key, csr = new_key_and_csr(sid)
            cert = ca.issue(csr, sid, time.time(), ca.max_leaf_ttl_s)
            (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                           + ca.current.issuing_cert.public_bytes(serialization.Encoding.PEM))
            write_private_file(out / "key.pem", key_to_pem(key))
            (out / "bundle.pem").write_bytes(ca.bundle_pem())
        control_id = f"spiffe://{topo.trust_domain}/{CONTROL_SEGMENT}/{CONTROL_NAME}"
        (out / "nats.conf").write_text(server_config(topo, listen=listen, store_dir=out / "jetstream",
                                                     cert=out / "cert.pem", key=out / "key.pem",
                                                     bundle=out / "bundle.pem", control_id=control_id))
    console.print(f"wrote {out / 'nats.conf'}; run: nats-server -c {out / 'nats.conf'}", highlight=False)
