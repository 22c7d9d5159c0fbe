"""``trustfabric bench impact``: ``policy impact``'s replay rate over a day of floor traffic, beside reading alone.

The measurement (and what each figure means) is :mod:`trustfabric.bench.impact`; this command prints it.
"""

from __future__ import annotations

import json

import typer

from trustfabric.bench.impact import run
from trustfabric.commands.common import console, figures_table


def command(decisions: int = typer.Option(1_000_000, "--decisions", min=1, help="Recorded decisions to replay."),
            seed: int = typer.Option(5, help="Random seed of the recorded day."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Replay a day of recorded decisions against the active and a changed set; decisions/s vs reading alone."""
    if as_json:
        result = run(decisions, seed=seed)
        typer.echo(json.dumps(result, indent=2))
        return
    with console.status("recording") as status:
        result = run(decisions, seed=seed, progress=lambda stage: status.update(stage))
    console.print(figures_table(
        f"policy impact over {result['decisions']:,} recorded decisions", result,
        show=lambda value: f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)))
