"""``trustfabric fix client add|renew|ls``: onboard FIX clients onto the gateway's edge.

``fix client add CLIENT-ID --account ACCT`` issues the client's certificate from the
edge CA (``--days``, 30 by default), registers CLIENT-ID as a SenderCompID bound to that
certificate with the account its orders are booked to, and prints a QuickFIX-style
session settings block (host, port, CompIDs, HeartBtInt, certificate, key and CA
bundle paths). ``fix client renew`` issues a fresh key and certificate in place;
``trustfabric ca revoke SERIAL`` revokes one. Both are a person's operator actions
(``fix.client_add`` / ``fix.client_renew``: password and TOTP, a security officer by
Cedar, audited under ``user:<name>``): on a running floor through its control plane
(the only writer of the edge registry while it runs), else on the store. The running
floor reads the registry at each Logon and trusts the edge CA, so none of these needs
a restart. The README's
section "Connecting a FIX client" walks a client through it from nothing.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from trustfabric.commands import operate
from trustfabric.commands.common import console, operator_credential, refusals_exit
from trustfabric.control.plane import DEFAULT_POLICIES
from trustfabric.home import home_dir
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.topology import Topology
from trustfabric.trading.fix.edge import (
    DEFAULT_CLIENT_DAYS,
    DEFAULT_HEARTBEAT_S,
    MAX_CLIENT_DAYS,
    ClientEntry,
    EdgePki,
    entry_from_result,
    entry_result,
    gateway_address,
    iso_utc,
    onboard,
    settings_block,
)
from trustfabric.trading.fix.operate import audit_onboarding

HELP = ("FIX clients of the order-entry gateway: onboard (certificate, CompID, account), renew, list. "
        "See README: 'Connecting a FIX client'.")
app = typer.Typer(no_args_is_help=True, help=HELP)
client_app = typer.Typer(no_args_is_help=True, help="Onboard, renew and list FIX clients.")
app.add_typer(client_app, name="client")


def _edge(plane: IdentityPlane) -> EdgePki:
    topology = Topology.for_policies(DEFAULT_POLICIES)
    return EdgePki.open(plane.home, topology.trust_domain, plane.clock.now())


def _print_settings(entry: ClientEntry, host: str | None, port: int | None, heartbeat_s: int) -> None:
    known = gateway_address(home_dir())
    block = settings_block(entry, host=host or known.get("host", "127.0.0.1"), port=port or known.get("port"),
                           target_comp_id=known.get("comp_id", "TRUSTFABRIC"), heartbeat_s=heartbeat_s)
    print(block, end="")


_DAYS = typer.Option(DEFAULT_CLIENT_DAYS, "--days", help=f"Certificate lifetime in days (1..{MAX_CLIENT_DAYS}).")
_HOST = typer.Option(None, "--host", help="Gateway host for the settings block (default: the last floor's).")
_PORT = typer.Option(None, "--port", help="Gateway port for the settings block (default: the last floor's "
                     "--fix-port).")
_HB = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", help="HeartBtInt for the settings block, seconds.")


_USER = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER.")
_TOTP = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP.")


def _onboard(action: str, client_id: str, args: dict[str, str], user: str | None, totp: str | None) -> tuple:
    """The person's ``fix.client_*`` action where the state lives now; (entry, where it was applied)."""

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            entry = onboard(_edge(plane), action, client_id, args, plane.clock.now())
            audit_onboarding(plane.emitter, operator.principal, action, entry)
        return entry_result(entry)

    outcome = operate.run(action, client_id, args, operator_credential(user, totp=totp), offline)
    with refusals_exit():
        entry = entry_from_result(outcome.result)
    where = "on the running floor (live at the client's next Logon)" if outcome.live else "in the store"
    return entry, f"{where}, by {outcome.operator}"


@client_app.command("add")
def add(
    client_id: str = typer.Argument(..., help="The client's SenderCompID (letters, digits, . _ -)."),
    account: str = typer.Option(..., "--account", help="The account the client's orders are booked to."),
    days: int = _DAYS, host: str = _HOST, port: int = _PORT, heartbeat: int = _HB,
    user: Optional[str] = _USER, totp: Optional[str] = _TOTP,
) -> None:
    """Issue a client's certificate from the edge CA, register its CompID and account, print its settings."""
    entry, where = _onboard("fix.client_add", client_id, {"account": account, "days": str(days)}, user, totp)
    console.print(f"# FIX client {entry.comp_id} registered (account {entry.account}) {where}; its certificate, "
                  f"key and CA bundle are in {entry.credentials_dir}", highlight=False, soft_wrap=True)
    _print_settings(entry, host, port, heartbeat)


@client_app.command("renew")
def renew(
    client_id: str = typer.Argument(..., help="A registered client's SenderCompID."),
    days: int = _DAYS, host: str = _HOST, port: int = _PORT, heartbeat: int = _HB,
    user: Optional[str] = _USER, totp: Optional[str] = _TOTP,
) -> None:
    """A fresh key and certificate for a registered client, in place (the floor keeps running)."""
    entry, where = _onboard("fix.client_renew", client_id, {"days": str(days)}, user, totp)
    console.print(f"# FIX client {entry.comp_id}: new certificate serial {entry.serial} in {entry.credentials_dir} "
                  f"{where}", highlight=False, soft_wrap=True)
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
