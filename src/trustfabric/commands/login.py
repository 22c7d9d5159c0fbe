"""``trustfabric login | logout | whoami``: an operator's session on this machine, cached like ``gh auth``.

``login [USER]`` checks the person with the identity plane (password and TOTP, from
``$TRUSTFABRIC_PASSWORD`` / ``--totp`` / ``$TRUSTFABRIC_TOTP`` or prompts; lockout and TOTP
replay apply) and caches a short-lived operator session bound to this machine's key
(:class:`~trustfabric.identity.operators.OperatorCache`, ``$TRUSTFABRIC_HOME/operator/``,
0600). Later state-changing commands use it without prompts, each request signed by the
machine key; the most dangerous ones still ask for a TOTP step-up code.

The identity store is shared under ``$TRUSTFABRIC_HOME`` by the commands and a running
control plane: the session is issued from the store's token key ring and recorded there,
so the control plane's operator endpoint verifies it exactly as a command applying a
change offline does. ``logout`` ends the session in the store (a copy of it is dead too)
and removes the cached file; ``whoami`` verifies the cached session as a request would.
Their audit events go to the ``operator-cli`` spool (the control plane writes ``identity``).
"""

from __future__ import annotations

import datetime as dt
import os

import typer

from trustfabric.commands.common import console, err_console, fail, operator_cache, operator_plane, refusals_exit
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import LOGOUT_ACTION, SessionIssuer, machine_jwk, make_proof
from trustfabric.identity.tokens import jwk_thumbprint


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command(
    user: str = typer.Argument(None, help="User name (default: $TRUSTFABRIC_USER, else prompted)."),
    totp: str = typer.Option(None, "--totp", help="Current TOTP code (default: $TRUSTFABRIC_TOTP, else prompted)."),
) -> None:
    """Log in as an operator: password and TOTP once, then a session bound to this machine."""
    name = (user or os.environ.get("TRUSTFABRIC_USER") or typer.prompt("user")).removeprefix("user:")
    password = os.environ.get("TRUSTFABRIC_PASSWORD") or typer.prompt("password", hide_input=True)
    code = totp or os.environ.get("TRUSTFABRIC_TOTP") or typer.prompt("TOTP code")
    cache = operator_cache()
    with refusals_exit():
        key = cache.machine_key(create=True)
        with operator_plane() as plane:
            session = SessionIssuer.for_plane(plane).login(name, password, code, key.public_key(), plane.clock.now())
        cache.save_session(session)
    console.print(f"[green]logged in[/] as [bold]{session.user}[/] ({session.role}) until {_utc(session.expires_at)}, "
                  f"ends after {session.idle_s / 60:.0f} min idle; machine key "
                  f"{jwk_thumbprint(key.public_key())[:16]}", highlight=False)


def logout() -> None:
    """End the cached operator session (in the identity store too) and forget it on this machine."""
    cache = operator_cache()
    with refusals_exit():
        cached = cache.session()
        if cached is None:
            console.print("not logged in")
            return
        key = cache.machine_key()
        with operator_plane() as plane:
            now = plane.clock.now()
            try:
                if key is None:
                    raise TrustFabricError("no machine key on this machine", reason="operator.session_unusable")
                SessionIssuer.for_plane(plane).logout(
                    cached.token, make_proof(key, cached.token, LOGOUT_ACTION, cached.session_id, now), now)
            except TrustFabricError as exc:  # already dead: nothing to end, the file goes anyway
                err_console.print(f"[yellow]{exc.reason}[/]: the session was no longer live", highlight=False)
        cache.clear_session()
    console.print(f"logged out {cached.user}")


def whoami() -> None:
    """Who the cached operator session is, checked against the identity store as a request would be."""
    cache = operator_cache()
    with refusals_exit():
        cached = cache.session()
        if cached is None:
            raise fail("operator.no_session", "not logged in: trustfabric login")
        with operator_plane() as plane:
            session = SessionIssuer.for_plane(plane).inspect(cached.token, plane.clock.now())
            now = plane.clock.now()
        key = cache.machine_key()
        if key is None or machine_jwk(key.public_key()) != machine_jwk(session.cnf):
            raise fail("operator.session_unusable", "the session is bound to a machine key that is not here")
    console.print(f"[bold]{session.name}[/] ({session.role}) session {session.session_id[:12]}, "
                  f"expires {_utc(session.expires_at)} (in {(session.expires_at - now) / 60:.0f} min), "
                  f"machine key {jwk_thumbprint(session.cnf)[:16]}", highlight=False)
