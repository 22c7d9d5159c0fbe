"""``trustfabric fix client add|renew|ls``: onboard FIX clients onto the gateway's edge.

``fix client add CLIENT-ID --account ACCT`` issues the client's certificate from the
edge CA (``--days``, 30 by default), registers CLIENT-ID as a SenderCompID bound to that
certificate with the account its orders are booked to, and prints a QuickFIX-style
session settings block (host, port, CompIDs, HeartBtInt, certificate, key and CA
bundle paths). ``fix client renew`` issues a fresh key and certificate in place;
``trustfabric ca revoke SERIAL`` revokes one. The running floor reads the registry at
each Logon and trusts the edge CA, so none of these needs a restart. The README's
section "Connecting a FIX client" walks a client through it from nothing.
"""

from __future__ import annotations

import getpass

import typer
from rich.table import Table

from trustfabric.audit.events import Kind
from trustfabric.commands.common import console, refusals_exit
from trustfabric.control.plane import DEFAULT_POLICIES
from trustfabric.home import home_dir
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.topology import Topology
from trustfabric.trading.fix.edge import (
    DEFAULT_CLIENT_DAYS,
    DEFAULT_HEARTBEAT_S,
    MAX_CLIENT_DAYS,
    ClientEntry,
    EdgePki,
    gateway_address,
    iso_utc,
    settings_block,
)

HELP = ("FIX clients of the order-entry gateway: onboard (certificate, CompID, account), renew, list. "
        "See README: 'Connecting a FIX client'.")
app = typer.Typer(no_args_is_help=True, help=HELP)
client_app = typer.Typer(no_args_is_help=True, help="Onboard, renew and list FIX clients.")
app.add_typer(client_app, name="client")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _edge(plane: IdentityPlane) -> EdgePki:
    manifest = DEFAULT_POLICIES / "floor.toml"
    topology = Topology.load(manifest if manifest.exists() else Topology.default_path())
    return EdgePki.open(plane.home, topology.trust_domain, plane.clock.now())


def _print_settings(entry: ClientEntry, host: str | None, port: int | None, heartbeat_s: int) -> None:
    known = gateway_address(home_dir())
    block = settings_block(entry, host=host or known.get("host", "127.0.0.1"), port=port or known.get("port"),
                           target_comp_id=known.get("comp_id", "TRUSTFABRIC"), heartbeat_s=heartbeat_s)
    print(block, end="")


def _audit(plane: IdentityPlane, action: str, entry: ClientEntry) -> None:
    plane.emitter.emit(Kind.CERT_ISSUED, principal=_operator(), action=action, resource=entry.spiffe_id,
                       decision="allow", detail={"comp_id": entry.comp_id, "account": entry.account,
                                                 "serial": str(entry.serial), "not_after": entry.not_after})


_DAYS = typer.Option(DEFAULT_CLIENT_DAYS, "--days", help=f"Certificate lifetime in days (1..{MAX_CLIENT_DAYS}).")
_HOST = typer.Option(None, "--host", help="Gateway host for the settings block (default: the last floor's).")
_PORT = typer.Option(None, "--port", help="Gateway port for the settings block (default: the last floor's "
                     "--fix-port).")
_HB = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", help="HeartBtInt for the settings block, seconds.")


@client_app.command("add")
def add(
    client_id: str = typer.Argument(..., help="The client's SenderCompID (letters, digits, . _ -)."),
    account: str = typer.Option(..., "--account", help="The account the client's orders are booked to."),
    days: int = _DAYS, host: str = _HOST, port: int = _PORT, heartbeat: int = _HB,
) -> None:
    """Issue a client's certificate from the edge CA, register its CompID and account, print its settings."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        entry = _edge(plane).add_client(client_id, account, plane.clock.now(), days=days)
        _audit(plane, "fix.client.add", entry)
    console.print(f"# FIX client {entry.comp_id} registered (account {entry.account}); its certificate, key "
                  f"and CA bundle are in {entry.credentials_dir}", highlight=False)
    _print_settings(entry, host, port, heartbeat)


@client_app.command("renew")
def renew(
    client_id: str = typer.Argument(..., help="A registered client's SenderCompID."),
    days: int = _DAYS, host: str = _HOST, port: int = _PORT, heartbeat: int = _HB,
) -> None:
    """A fresh key and certificate for a registered client, in place (the floor keeps running)."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        entry = _edge(plane).renew_client(client_id, plane.clock.now(), days=days)
        _audit(plane, "fix.client.renew", entry)
    console.print(f"# FIX client {entry.comp_id}: new certificate serial {entry.serial} in {entry.credentials_dir}",
                  highlight=False)
    _print_settings(entry, host, port, heartbeat)


@client_app.command("ls")
def ls() -> None:
    """The registered FIX clients: CompID, account, certificate serial and expiry."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        entries = _edge(plane).clients()
    table = Table(title="FIX clients")
    for column in ("SenderCompID", "account", "serial", "valid until (UTC)", "credentials"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e.comp_id, e.account, str(e.serial), iso_utc(e.not_after), e.credentials_dir)
    console.print(table)
