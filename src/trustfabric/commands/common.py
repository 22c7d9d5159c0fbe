"""What every command shares: the console, how refusals become exits, who the operator is, a figures table,
waiting for a stop signal."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from rich.console import Console
from rich.table import Table

from trustfabric.audit.events import Emitter
from trustfabric.audit.spool import Spool
from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.errors import TrustFabricError
from trustfabric.home import home_dir, sub_dir
from trustfabric.identity.operators import (
    STEP_UP_ACTIONS,
    OperatorAuthority,
    OperatorCache,
    OperatorCredential,
    make_proof,
)
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.signals.state import hub_from_state, load_state

console = Console()
err_console = Console(stderr=True)


def fail(reason: str, message: str = "", code: int = 1) -> "typer.Exit":
    """Print one line ``reason: message`` on stderr and return an Exit to raise."""
    err_console.print(f"[bold red]{reason}[/]" + (f": {message}" if message else ""), highlight=False,
                      soft_wrap=True)
    return typer.Exit(code)


def figures_table(title: str, result: Mapping[str, Any], *, column: str = "measure",
                  show: Callable[[Any], str] = str) -> Table:
    """A measurement's result as a table: one row a figure (its name, ``show(value)`` on the right)."""
    table = Table(title=title)
    table.add_column(column)
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, show(value))
    return table


async def until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (a foreground service's stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@contextmanager
def refusals_exit(code: int = 1) -> Iterator[None]:
    """Turn a :class:`TrustFabricError` into one line on stderr and a non-zero exit."""
    try:
        yield
    except TrustFabricError as exc:
        print(f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, file=sys.stderr)
        raise typer.Exit(code) from None


OPERATOR_AUDIT_SOURCE = "operator-cli"


@contextmanager
def operator_plane() -> Iterator[IdentityPlane]:
    """The identity plane for an operator command, auditing to its own spool (``spool/operator-cli/``).

    A running control plane writes the ``identity`` spool; a command run beside it (``login``,
    ``user add``) must not append to the same one.
    """
    spool = Spool(sub_dir("spool", OPERATOR_AUDIT_SOURCE), OPERATOR_AUDIT_SOURCE)
    try:
        with IdentityPlane(home_dir(), sink=spool) as plane:
            plane.emitter = Emitter(OPERATOR_AUDIT_SOURCE, spool, plane.clock, start_seq=spool.emitter_start_seq())
            yield plane
    finally:
        spool.close()


def operator_cache() -> OperatorCache:
    """This machine's operator files: ``$TRUSTFABRIC_HOME/operator/`` (machine key, cached session)."""
    return OperatorCache(home_dir() / "operator")


def operator_credential(user: str | None, *, totp: str | None = None, step_up: str = "", action: str = "",
                        target: str = "") -> OperatorCredential:
    """The person behind a state-changing command (:mod:`trustfabric.identity.operators`).

    With a session cached by ``trustfabric login`` (and its machine key) and the request's
    ``action`` and ``target`` given, the credential is that session with the machine key's
    proof over this request: no prompts. ``--totp`` is then the step-up code; the actions of
    :data:`~trustfabric.identity.operators.STEP_UP_ACTIONS` prompt for one when none is given
    (``$TRUSTFABRIC_TOTP`` serves too).

    Otherwise a login with the request: ``user`` from ``--user`` or ``$TRUSTFABRIC_USER``;
    the password from ``$TRUSTFABRIC_PASSWORD`` or a hidden prompt; the TOTP code from
    ``--totp``, ``$TRUSTFABRIC_TOTP`` or a prompt. Nothing is assumed: no user is a refusal.
    """
    name = (user or os.environ.get("TRUSTFABRIC_USER", "")).removeprefix("user:")
    if action:
        with refusals_exit():
            cache = operator_cache()
            cached = cache.session()
            now = SYSTEM_CLOCK.now()
            if cached is not None and (not name or name == cached.user):
                name = cached.user
                key = cache.machine_key()
                if now >= cached.expires_at:
                    err_console.print("[yellow]operator.session_expired[/]: the cached session ended; logging in "
                                      "for this request (trustfabric login for a new session)", highlight=False)
                elif key is None:
                    err_console.print("[yellow]operator.session_unusable[/]: the cached session's machine key is "
                                      "not on this machine; logging in for this request", highlight=False)
                else:
                    code = step_up or totp or ""
                    if not code and action in STEP_UP_ACTIONS:
                        code = os.environ.get("TRUSTFABRIC_TOTP") or typer.prompt(f"TOTP code (step-up for {action})")
                    return OperatorCredential(user=cached.user, session=cached.token, step_up=code,
                                              proof=make_proof(key, cached.token, action, target, now))
    if not name:
        raise fail("operator.unauthenticated",
                   "a person must run this: trustfabric login, or --user NAME (or $TRUSTFABRIC_USER)")
    password = os.environ.get("TRUSTFABRIC_PASSWORD") or typer.prompt("password", hide_input=True)
    code = totp or os.environ.get("TRUSTFABRIC_TOTP") or typer.prompt("TOTP code")
    return OperatorCredential(user=name, password=password, totp=code, step_up=step_up)


def offline_operator_authority(plane: IdentityPlane) -> OperatorAuthority:
    """The authority a command applies itself when no floor runs.

    Cedar from the policies folder over the floor's topology, with the signals kept between
    command runs (``$TRUSTFABRIC_HOME/policy/signals.json``): a quarantined or high-risk person
    operates nothing offline either.
    """
    topology = Topology.load(Topology.default_path(), firm=plane.firm)
    hub = hub_from_state(topology, load_state(sub_dir("policy") / "signals.json"))
    engine = PolicyEngine(topology, hub, clock=plane.clock)
    engine.load_dir(Topology.default_path().parent)
    return OperatorAuthority.for_plane(plane, engine)


def load_deployment(path, *, loopback_only: bool = True):  # noqa: ANN001, ANN201 - a Path or None -> a Deployment
    """``--deployment FILE``: the placement of the floor's services on hosts (refused with its reason), its
    database put in ``$TRUSTFABRIC_DATABASE_URL`` for this process and the services it starts."""
    if path is None:
        return None
    from trustfabric.trading.deployment import load

    deployment = load(path, Topology.load(Topology.default_path()), loopback_only=loopback_only)
    if deployment.database:
        os.environ["TRUSTFABRIC_DATABASE_URL"] = deployment.database
    return deployment
