"""``trustfabric bench audit``: durable append, central ingest and verify throughput, in one run.

The measurement (and what each figure means) is :mod:`trustfabric.bench.audit`; this command prints it.
"""

from __future__ import annotations

import json

import typer

from trustfabric.bench.audit import run
from trustfabric.commands.common import console, figures_table


def command(records: int = typer.Option(100_000, help="Records to append, ingest and verify."),
            batch: int = typer.Option(128, help="Records per group commit (one write + fsync)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON."),
            database: str = typer.Option("", "--database", help="Also ingest into PostgreSQL at this DSN "
                                         "(a fresh schema, dropped afterwards).")) -> None:
    """Measure audit append (durable, batched), central ingest and verify throughput."""
    result = run(records, batch, database)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print(figures_table("audit throughput", result))
