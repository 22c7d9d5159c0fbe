"""``trustfabric bench pdp``: the policy engine's figures, each against its baseline in the same run.

The measurement (and what each figure means) is :mod:`trustfabric.bench.pdp`; this command prints it.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from trustfabric.bench.pdp import run
from trustfabric.commands.common import console


def command(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    iterations: int = typer.Option(2000, min=100, help="Decisions measured (other loops scale from it)."),
) -> None:
    """Policy engine: decision, naive cedarpy, table compile and invalidation latencies, one run."""
    result = run(iterations)
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table("figure", "value", title="policy decision point")
    for key, value in result.items():
        if key != "targets":
            table.add_row(key, str(value))
    console.print(table)
