"""``trustfabric up``: start the control plane and the floor on loopback, with a live view until Ctrl-C.

The view (Rich) refreshes twice a second: orders/s, fills, decisions/s allowed and
denied, alerts, and hop latency p50/p99 per link (from the services' reports).
Ctrl-C stops every service (SIGTERM, then SIGKILL after a bound).

``--md-csv FILE`` starts the floor on a recorded session (``trustfabric floor
record-md``): market-data and both venues replay the file instead of GBM, and the
view shows the replay's progress; at the end of the file publishing stops (the
floor keeps running on the last prices). A bad file is refused before any process
starts (``marketdata.<reason>``, exit 1).

``--fix-port N`` fixes the FIX gateway's port (a busy or invalid port is refused before
any process starts, ``config.floor.fix_port``); by default a free port is chosen and
printed. The README's "Connecting a FIX client" walks a client through onboarding.

``--cert-ttl SECONDS`` sets every certificate's lifetime (workloads and the control
plane; renewed at half of it, each renewal attested on a fresh posture report) and
``--posture-max-age SECONDS`` the posture window. When the floor stops, ``up`` prints
its final summary as JSON: orders and fills, renewals, renewal failures, and
``expired_cert_uses`` (any handshake refused for an expired certificate, any
connection that outlived one, anywhere on the floor: 0 on a healthy floor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from trustfabric.commands.common import console, fail


def _view(floor, rates: dict[str, float]) -> Table:
    from trustfabric.trading.launcher import floor_summary

    s = floor_summary(floor)
    table = Table(title=f"trustfabric floor ({floor.mode})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("orders/s", f"{rates.get('orders', 0):.1f}")
    table.add_row("fills", str(s["fills"]))
    table.add_row("decisions/s allowed", f"{rates.get('allowed', 0):.0f}")
    table.add_row("decisions/s denied", f"{rates.get('denied', 0):.1f}")
    table.add_row("denied hops (total)", str(s["denied_hops"]))
    table.add_row("alerts", str(len(floor.plane.alerts) if floor.plane else 0))
    table.add_row("fail-open", str(s["fail_open"]))
    table.add_row("certificates", f"ttl {s['cert_ttl_s']} s, {s['renewals']} renewals, "
                  f"{s['renewal_failures']} failed, {s['expired_cert_uses']} expired used")
    md = floor.stats().get("market-data", {})
    if "md_replay_ticks_total" in md:
        ended = " (ended: publishing stopped)" if md.get("md_replay_done") else ""
        progress = f"{md['md_replay_ticks']:.0f}/{md['md_replay_ticks_total']:.0f} ticks"
        table.add_row("market data replay", progress + ended)
    for link, (p50, p99, n) in sorted(floor.links().items()):
        if n:
            table.add_row(f"hop {link}", f"p50 {p50:.0f} us / p99 {p99:.0f} us")
    return table


async def start_console_process(port: int, home: Path | None = None, show=None):
    """``trustfabric console`` as its own process (nothing imports the console), once the floor is up."""
    env = {**os.environ, "COLUMNS": "300", **({"TRUSTFABRIC_HOME": str(home)} if home is not None else {})}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "trustfabric.cli", "console", "--port",
                                                str(port), stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    for _ in range(2):
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        if line:
            (show or (lambda text: console.print(text, highlight=False)))(line)
    return proc


def command(
    mode: str = typer.Option("zero-trust", "--mode", help="zero-trust or perimeter."),
    seed: int = typer.Option(7, "--seed", help="Market-data seed."),
    duration: float = typer.Option(0.0, "--duration", hidden=True, help="Stop after this many seconds (tests)."),
    md_csv: Path = typer.Option(None, "--md-csv", help="Replay this recorded session (trustfabric floor record-md) "
                                "at market-data and both venues instead of GBM; stops at the end of the file."),
    fix_port: int = typer.Option(0, "--fix-port", help="The FIX gateway's port on 127.0.0.1 (default: a free "
                                 "port, printed). Clients: README section 'Connecting a FIX client' and "
                                 "'trustfabric fix client add --help'."),
    cert_ttl: int = typer.Option(3600, "--cert-ttl", min=10, max=3600,
                                 help="Certificate lifetime in seconds (renewed at half of it)."),
    posture_max_age: float = typer.Option(None, "--posture-max-age", min=2.0,
                                          help="Posture window in seconds (default: the trust domain's, 300)."),
    web_console: bool = typer.Option(False, "--console", help="Also serve the web console (HTTPS on 127.0.0.1; "
                                     "its URL and CA bundle are printed)."),
    console_port: int = typer.Option(8443, "--console-port", help="The console's port (0: any free port)."),
    bus: str = typer.Option("", "--bus", help="NATS JetStream URL (tls://host:port, configured by trustfabric "
                            "bus config) that carries revocations to every host beside the control channel."),
    standbys: int = typer.Option(0, "--standbys", min=0, max=4,
                                 help="Standby control planes (own processes) that take the floor over, running "
                                      "services and all, when the active one dies (kill -9 included)."),
    replicas: int = typer.Option(1, "--replicas", min=1, max=5,
                                 help="Control-plane replicas in all, beyond one machine (needs "
                                      "$TRUSTFABRIC_DATABASE_URL and --bus): each issues certificates, tokens and "
                                      "tables, the services spread over them; one holds the lease (operators' "
                                      "changes, containment, audit) and another takes it when it dies."),
    deployment: Path = typer.Option(None, "--deployment", help="A deployment file (TOML): the services placed on "
                                    "hosts by address, the bus and the database (README 'Beyond one machine')."),
    table_ttl: float = typer.Option(None, "--table-ttl", min=1.0, max=3600.0,
                                    help="Decision tables' hard lifetime in seconds: how long an enforcement point "
                                         "cut off from the control plane keeps serving before it fails closed "
                                         "(default: the policy engine's, 300)."),
) -> None:
    """Run the floor until Ctrl-C, with a live view. FIX clients connect to --fix-port (README:
    'Connecting a FIX client')."""
    from trustfabric.errors import TrustFabricError
    from trustfabric.home import home_dir
    from trustfabric.trading.launcher import Floor, floor_summary

    from trustfabric.commands.common import load_deployment

    summary: dict = {}
    started_at = time.monotonic()
    try:
        placement = load_deployment(deployment)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail, code=2) from None

    async def main() -> None:
        floor = Floor(home_dir(), mode, seed=seed, md_csv=md_csv, fix_port_fixed=fix_port, cert_ttl_s=cert_ttl,
                      posture_max_age_s=posture_max_age, bus_url=bus or (placement.bus if placement else ""),
                      standbys=standbys if mode == "zero-trust" else 0, deployment=placement, table_ttl_s=table_ttl,
                      replicas=replicas)
        try:
            await floor.start()
        except TrustFabricError as exc:
            raise fail(exc.reason, exc.detail) from None
        for name, why in floor.left_out.items():
            console.print(f"[yellow]{name} not started: {why}[/] (its identity is quarantined; the floor runs "
                          f"without it)")
        console.print(f"floor up: {floor.manifest_path}")
        web = await start_console_process(console_port) if web_console and floor.mode == "zero-trust" else None
        if floor.fix_port:
            console.print(f"FIX gateway: 127.0.0.1:{floor.fix_port} (TargetCompID {floor.fix_edge['fix_comp_id']}; "
                          f"onboard a client with: trustfabric fix client add CLIENT-ID --account ACCT)",
                          highlight=False)
        last = (time.monotonic(), floor_summary(floor))
        rates: dict[str, float] = {}
        try:
            with Live(_view(floor, rates), console=console, refresh_per_second=2) as live:
                started = time.monotonic()
                while (not duration or time.monotonic() - started < duration) and not floor.fenced:
                    await asyncio.sleep(0.5)
                    now, s = time.monotonic(), floor_summary(floor)
                    dt = now - last[0]
                    rates = {"orders": (s["orders_submitted"] - last[1]["orders_submitted"]) / dt,
                             "allowed": (s["decisions_allowed"] - last[1]["decisions_allowed"]) / dt,
                             "denied": (s["denied_hops"] - last[1]["denied_hops"]) / dt}
                    last = (now, s)
                    live.update(_view(floor, rates))
        finally:
            if web is not None:
                web.terminate()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(web.wait(), 10)
            await floor.stop()
            summary.update(floor_summary(floor), mode=floor.mode, fenced=floor.fenced,
                           duration_s=round(time.monotonic() - started_at, 1))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    console.print("floor stopped" if not summary.get("fenced") else
                  "this control plane lost the lease: another one runs the floor now")
    if summary:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
