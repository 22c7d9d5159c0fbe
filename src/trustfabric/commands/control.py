"""``trustfabric control serve``: one control-plane replica of a floor that runs without the launcher.

A deployment file with ``[[replica]]`` entries and every host's ``port_base`` (README, "Beyond one
machine") runs the floor machine by machine: ``control serve --replica NAME`` here, ``host serve`` on
each host (after ``host enrol``). The replica listens at the address and ports the file gives it,
against the database and bus the file names (``$TRUSTFABRIC_KEK`` for the sealed keys). The first
replica to find the floor's lease free holds it (operators' changes, containment, the central log, the
pushes); every other one serves joins, renewals, tokens and tables as a follower and takes the lease
when its holder dies or hangs. It runs until SIGTERM or Ctrl-C, or ``--duration`` seconds; a holder
that hung and finds the lease taken fences itself and exits (status 3): started again, it follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from pathlib import Path

import typer

from trustfabric.commands.common import console, fail

app = typer.Typer(no_args_is_help=True, help="The control plane beyond one machine: serve a replica.")


@app.command("serve")
def serve(
    deployment: Path = typer.Option(..., "--deployment", help="The deployment file (with [[replica]] entries "
                                    "and every host's port_base)."),
    replica: str = typer.Option(..., "--replica", help="Which [[replica]] of the file this process is."),
    duration: float = typer.Option(0.0, "--duration", min=0.0, help="Stop after this many seconds (0: until "
                                   "SIGTERM or Ctrl-C)."),
    cert_ttl: int = typer.Option(3600, "--cert-ttl", min=10, max=3600, help="Certificate lifetime in seconds."),
    any_address: bool = typer.Option(False, "--any-address", help="Accept addresses that are not loopback ones "
                                     "(real hosts); by default the file must name loopback addresses."),
) -> None:
    """Serve one control-plane replica: a follower that issues, or the lease holder that also leads."""
    from trustfabric.audit.log import database_url
    from trustfabric.errors import TrustFabricError
    from trustfabric.home import home_dir
    from trustfabric.trading.launcher import Floor, floor_summary

    from trustfabric.commands.common import load_deployment

    try:
        placement = load_deployment(deployment, loopback_only=not any_address)
        placement.require_fixed()
        me = placement.replica(replica)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail, code=2) from None
    if not (database_url() and placement.bus):
        raise fail("config.floor.replicas", "a replica needs the database and the bus: name both in the file "
                   "(database = ..., bus = ...)", code=2)

    async def main() -> int:
        floor = Floor(home_dir(), "zero-trust", services=placement.services, bus_url=placement.bus,
                      deployment=placement, cert_ttl_s=cert_ttl, control_ports=(me.bootstrap_port, me.control_port),
                      instance=me.name, bind=me.address, ship_spools=True)
        stop = threading.Event()
        stopping = asyncio.Event()

        def on_signal() -> None:
            stop.set()
            stopping.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        if duration:
            loop.call_later(duration, on_signal)
        where = f"{me.address}:{me.bootstrap_port}/{me.control_port}"
        try:
            held = await floor.serve_replica(stop, lambda role: console.print(
                f"replica {me.name} on {where}: {role} (issuing; the lease is held elsewhere)", highlight=False))
        except TrustFabricError as exc:
            raise fail(exc.reason, exc.detail) from None
        if not held:
            await floor.close_follower()
            console.print(f"replica {me.name} stopped without holding the lease", highlight=False)
            return 0
        console.print(f"replica {me.name} on {where} holds the floor's lease", highlight=False)
        while not stopping.is_set() and not floor.fenced:  # fenced: it hung and another replica took the lease
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)
        summary = floor_summary(floor)  # what the services reported to this holder
        await floor.stop()
        if floor.fenced:
            console.print(f"replica {me.name} lost the lease: another replica runs the floor now; start this one "
                          "again to follow it", highlight=False)
        console.print(json.dumps({"replica": me.name, "held": True, "fenced": floor.fenced, "takeover": floor.takeover,
                                  "summary": summary}), highlight=False)
        return 3 if floor.fenced else 0

    raise typer.Exit(asyncio.run(main()))
