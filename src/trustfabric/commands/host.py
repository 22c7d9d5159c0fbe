"""``trustfabric host enrol | serve``: a host of a floor that runs without the launcher.

``host enrol NAME`` (a security officer, password and a TOTP code verified with the request) generates
the posture-agent keys of the host NAME of the deployment file here, has the control plane (or, with no
floor running, the store) register their public halves and issue one join token per service the file
places on NAME, and writes the enrolment directory (``--out``, 0700, its secrets 0600): copy it to the
machine. ``host serve --host NAME --enrolment DIR`` is that machine's runner: the posture agents, their
reports to the lease holder, and the services, until SIGTERM or Ctrl-C (README, "Beyond one machine").
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Optional

import typer

from trustfabric.commands.common import console, fail

app = typer.Typer(no_args_is_help=True, help="A host run by its own runner: enrol, serve.")

_DEPLOYMENT = typer.Option(..., "--deployment", help="The deployment file (with [[replica]] entries and every "
                           "host's port_base).")
_ANY = typer.Option(False, "--any-address", help="Accept addresses that are not loopback ones (real hosts).")


@app.command("enrol")
def enrol(
    name: str = typer.Argument(..., help="The host, as the deployment file names it."),
    deployment: Path = _DEPLOYMENT,
    out: Path = typer.Option(..., "--out", help="The enrolment directory to write (copy it to the host)."),
    ttl: float = typer.Option(3600.0, "--ttl", min=60.0, max=86400.0, help="How long the join tokens are good, "
                              "in seconds (each is redeemed once)."),
    user: Optional[str] = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP."),
    any_address: bool = _ANY,
) -> None:
    """Enrol a host for its runner: its posture keys registered, join tokens for its services issued."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trustfabric.commands import operate
    from trustfabric.commands.common import load_deployment, operator_credential
    from trustfabric.errors import TrustFabricError
    from trustfabric.home import home_dir
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.keyfiles import key_to_pem, write_private_file
    from trustfabric.policy.topology import Topology
    from trustfabric.trading.hosts import ACTION, topology_hosts
    from trustfabric.trading.hosts import enrol as enrol_store
    from trustfabric.trading.runner import ENROLMENT_FILE, KEYS_DIR

    try:
        placement = load_deployment(deployment, loopback_only=not any_address)
        placement.require_fixed()
        topology = Topology.load(Topology.default_path())
        posture_hosts = topology_hosts(placement, topology, name)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail, code=2) from None
    keys = {host: Ed25519PrivateKey.generate() for host in posture_hosts}
    public = {host: key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
              for host, key in keys.items()}
    args = {"keys": json.dumps(public), "ttl_s": repr(ttl)}

    def offline(operator) -> dict[str, str]:  # noqa: ANN001 - an authorized Operator
        with IdentityPlane(home_dir()) as plane:
            return enrol_store(plane, topology, placement, name, public, ttl, plane.clock.now(), operator.principal,
                               plane.emitter)

    outcome = operate.run(ACTION, name, args, operator_credential(user, totp=totp, action=ACTION, target=name),
                          offline)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    for host, key in keys.items():
        write_private_file(out / KEYS_DIR / f"{host}.pem", key_to_pem(key))
    write_private_file(out / ENROLMENT_FILE, json.dumps(dict(outcome.result), indent=2).encode())
    where = "on the running floor" if outcome.live else "in the store (no floor running)"
    console.print(f"host {name} enrolled {where} by {outcome.operator}: {len(keys)} posture keys, join tokens for "
                  f"{', '.join(sorted(json.loads(outcome.result['tokens'])))}; copy {out} to the host and run "
                  f"'trustfabric host serve --host {name} --enrolment DIR' there", highlight=False, soft_wrap=True)


@app.command("serve")
def serve(
    host: str = typer.Option(..., "--host", help="This machine's host, as the deployment file names it."),
    deployment: Path = _DEPLOYMENT,
    enrolment: Path = typer.Option(..., "--enrolment", help="The directory host enrol wrote for this host."),
    duration: float = typer.Option(0.0, "--duration", min=0.0, help="Stop after this many seconds (0: until "
                                   "SIGTERM or Ctrl-C)."),
    any_address: bool = _ANY,
) -> None:
    """Run this host's part of the floor: its posture agents and its services."""
    from trustfabric.commands.common import load_deployment
    from trustfabric.errors import TrustFabricError
    from trustfabric.home import home_dir
    from trustfabric.trading.runner import HostRunner, failed

    try:
        placement = load_deployment(deployment, loopback_only=not any_address)
        runner = HostRunner(home_dir(), placement, host, enrolment)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail, code=2) from None

    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if duration:
            loop.call_later(duration, stopping.set)
        try:
            await runner.start()
        except TrustFabricError as exc:
            raise fail(exc.reason, exc.detail) from None
        bad = failed(runner)
        for service, why in bad.items():
            console.print(f"[red]{service} did not start[/]: {why}", highlight=False)
        console.print(f"host {host}: {len(runner.processes) - len(bad)} of {len(runner.processes)} services running, "
                      f"posture reported to the lease holder", highlight=False)
        if not bad:
            await stopping.wait()
        await runner.stop()
        console.print(json.dumps({"host": host, "services": sorted(runner.processes), "failed": bad,
                                  "posture_submitted": runner.submitted, "posture_failures": runner.submit_failures}),
                      highlight=False)
        return 1 if bad else 0

    raise typer.Exit(asyncio.run(main()))
