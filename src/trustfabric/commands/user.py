"""``trustfabric user ...``: enrol people (role, argon2id password, TOTP) and log them in.

``user add NAME --role ROLE`` prints the TOTP provisioning URI for an
authenticator app; the password comes from ``--password`` or a hidden prompt. Only the
first person (into an empty store, the bootstrap) enrols without an operator; after that,
an authenticated security officer must (``trustfabric login`` first, or ``--user``).
"""

from __future__ import annotations

import typer
from rich.table import Table

from trustfabric.commands.common import (
    console,
    offline_operator_authority,
    operator_credential,
    operator_plane,
    refusals_exit,
)
from trustfabric.home import home_dir
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.users import ROLES

app = typer.Typer(no_args_is_help=True, help="People: enrolment, passwords, TOTP MFA, step-up.")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="User name."),
    role: str = typer.Option(..., "--role", help=f"One of: {', '.join(sorted(ROLES))}."),
    password: str = typer.Option(None, "--password", help="Password (prompted, hidden, when omitted)."),
    user: str = typer.Option(None, "--user", help="The security officer enrolling (default: the logged-in "
                                                  "operator, else $TRUSTFABRIC_USER)."),
    totp: str = typer.Option(None, "--totp", help="The enrolling officer's TOTP code."),
) -> None:
    """Enrol a person and print the TOTP provisioning URI (otpauth://...).

    Once anyone is enrolled, only an authenticated security officer may enrol people (Cedar:
    ``operator.user.add``). The very first enrolment, into a store without people, is the
    bootstrap and is logged as such.
    """
    with refusals_exit(), operator_plane() as plane:
        users = plane.users()
        users.check_enrolment(name, role)
        bootstrap = users.is_empty()
        by = "bootstrap"
        if not bootstrap:
            credential = operator_credential(user, totp=totp, action="user.add", target=name)
            by = offline_operator_authority(plane).authorize(credential, "user.add", name,
                                                             plane.clock.now()).principal
        if password is None:
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        enrolment = users.enrol(name, role, password, plane.clock.now(), by=by, bootstrap=bootstrap)
    console.print(f"enrolled [bold]{name}[/] as {role}" + (" (bootstrap: the first person)" if bootstrap else
                                                           f" by {by}") + "; add this to an authenticator app:")
    typer.echo(enrolment.provisioning_uri)


@app.command("login")
def login(
    name: str = typer.Argument(..., help="User name."),
    code: str = typer.Option(..., "--code", help="Current TOTP code."),
    password: str = typer.Option(None, "--password", help="Password (prompted, hidden, when omitted)."),
) -> None:
    """Check a password and a TOTP code (counts towards lockout; refuses a replayed code)."""
    if password is None:
        password = typer.prompt("password", hide_input=True)
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        auth = plane.users().login(name, password, code, plane.clock.now())
    console.print(f"[green]authenticated[/] {auth.name} ({auth.role}) amr={list(auth.amr)}")


@app.command("list")
def list_users() -> None:
    """List enrolled people, their roles and lock state."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        now = plane.clock.now()
        table = Table("name", "role", "locked", title="Users")
        for row in plane.store.list_users():
            table.add_row(row.name, row.role, "yes" if row.locked_until > now else "no")
    console.print(table)
