"""What every command shares: the console, and how refusals become exits."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console

from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import OperatorCredential

console = Console()
err_console = Console(stderr=True)


def fail(reason: str, message: str = "", code: int = 1) -> "typer.Exit":
    """Print one line ``reason: message`` on stderr and return an Exit to raise."""
    err_console.print(f"[bold red]{reason}[/]" + (f": {message}" if message else ""), highlight=False,
                      soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def refusals_exit(code: int = 1) -> Iterator[None]:
    """Turn a :class:`TrustFabricError` into one line on stderr and a non-zero exit."""
    try:
        yield
    except TrustFabricError as exc:
        print(f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, file=sys.stderr)
        raise typer.Exit(code) from None


def operator_credential(user: str | None, *, totp: str | None = None, step_up: str = "") -> OperatorCredential:
    """The person behind a state-changing command (:mod:`trustfabric.identity.operators`).

    ``user`` from ``--user`` or ``$TRUSTFABRIC_USER``; the password from
    ``$TRUSTFABRIC_PASSWORD`` or a hidden prompt; the TOTP code from ``--totp``,
    ``$TRUSTFABRIC_TOTP`` or a prompt. Nothing is assumed: no user is a refusal.
    """
    name = user or os.environ.get("TRUSTFABRIC_USER", "")
    if not name:
        raise fail("operator.unauthenticated", "a person must run this: --user NAME (or $TRUSTFABRIC_USER)")
    password = os.environ.get("TRUSTFABRIC_PASSWORD") or typer.prompt("password", hide_input=True)
    code = totp or os.environ.get("TRUSTFABRIC_TOTP") or typer.prompt("TOTP code")
    return OperatorCredential(user=name.removeprefix("user:"), password=password, totp=code, step_up=step_up)
