"""What every command shares: the console, and how refusals become exits."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console

from trustfabric.errors import TrustFabricError

console = Console()
err_console = Console(stderr=True)


def fail(reason: str, message: str = "", code: int = 1) -> "typer.Exit":
    """Print one line ``reason: message`` on stderr and return an Exit to raise."""
    err_console.print(f"[bold red]{reason}[/]" + (f": {message}" if message else ""), highlight=False)
    return typer.Exit(code)


@contextmanager
def refusals_exit(code: int = 1) -> Iterator[None]:
    """Turn a :class:`TrustFabricError` into one line on stderr and a non-zero exit."""
    try:
        yield
    except TrustFabricError as exc:
        print(f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, file=sys.stderr)
        raise typer.Exit(code) from None
