"""``trustfabric console`` (loaded by the CLI by name: nothing imports the console): the operators' web console for the floor running under this home.

HTTPS on loopback with a certificate of the floor's CA (the command prints the bundle
for the browser to trust); ``--http`` serves plain HTTP, on loopback only. People log in
with their password and TOTP; pages and actions are decided by Cedar on their role and
audited (see :mod:`trustfabric.console.app`).
"""

from __future__ import annotations

import asyncio

import typer

from trustfabric.commands.common import console as out
from trustfabric.commands.audit import run_audit_dir
from trustfabric.commands.common import refusals_exit, until_signalled
from trustfabric.console.server import start_console
from trustfabric.home import home_dir


def command(
    port: int = typer.Option(8443, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    http: bool = typer.Option(False, "--http", help="Plain HTTP instead of HTTPS (loopback only)."),
    idle: float = typer.Option(900.0, "--idle", help="Seconds without a request before a session ends."),
    run: str = typer.Option("", "--run", help="A demo run's floor: 'latest' or its name (default: the floor of "
                            "this home, as trustfabric up runs it)."),
) -> None:
    """Serve the web console (live decisions, segment map, incidents, kill switch, identities, audit)."""

    async def run() -> None:
        home = run_audit_dir(run).parent if run else home_dir()
        with refusals_exit():
            running = await start_console(home, "127.0.0.1", port, https=not http, idle_s=idle)
        out.print(f"console on [bold]{running.url}[/]", highlight=False)
        if running.bundle is not None:
            out.print(f"trust this CA bundle in your browser: {running.bundle}", highlight=False)
        await until_signalled()
        await running.stop()

    asyncio.run(run())
