"""``trustfabric bench fabric``: the fabric on NATS JetStream and PostgreSQL beside the embedded default, one run.

The measurement (and what each figure means) is :mod:`trustfabric.bench.fabric`; this command prints it.
"""

from __future__ import annotations

import json
import os

import typer

from trustfabric.bench.fabric import run
from trustfabric.commands.common import console, fail, figures_table


def command(
    database: str = typer.Option("", "--database", help="PostgreSQL DSN (default $TRUSTFABRIC_DATABASE_URL); a "
                                 "fresh schema is made and dropped."),
    points: int = typer.Option(20, "--points", min=1, max=200, help="Enforcement points on the bus."),
    hosts: int = typer.Option(3, "--hosts", min=1, max=16, help="Host processes the points run in."),
    rounds: int = typer.Option(50, "--rounds", min=1, help="Quarantines published."),
    records: int = typer.Option(100_000, "--records", min=1000, help="Audit records ingested."),
    floor_seconds: float = typer.Option(5.0, "--floor-seconds", min=0.0, help="Seconds each floor trades."),
    failover_rounds: int = typer.Option(3, "--failover-rounds", min=0, max=20,
                                        help="Floors whose active control plane is killed (kill -9)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revocation through NATS to points on several hosts, audit ingest into PostgreSQL, session opens, control
    plane failover (kill -9), fail_open."""
    dsn = database or os.environ.get("TRUSTFABRIC_DATABASE_URL", "")
    if not dsn:
        raise fail("db.no_dsn", "give --database or set $TRUSTFABRIC_DATABASE_URL", code=2)
    if as_json:
        result = run(points=points, hosts=hosts, rounds=rounds, database=dsn, records=records,
                     floor_seconds=floor_seconds, failover_rounds=failover_rounds)
        typer.echo(json.dumps(result, indent=2))
        return
    with console.status("starting") as status:
        result = run(points=points, hosts=hosts, rounds=rounds, database=dsn, records=records,
                     floor_seconds=floor_seconds, failover_rounds=failover_rounds,
                     progress=lambda stage: status.update(stage))
    console.print(figures_table(f"the fabric beyond one machine ({points} points over {hosts} hosts)", result,
                                show=lambda value: json.dumps(value) if isinstance(value, dict) else str(value)))
