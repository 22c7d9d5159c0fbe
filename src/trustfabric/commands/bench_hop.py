"""``trustfabric bench hop``: what a zero-trust hop costs, measured against plain TCP in the same run.

The measurement is :func:`trustfabric.bench.hop.measure` (its docstring says what each
figure is); this command parses the options and prints the result.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from trustfabric.bench.hop import measure
from trustfabric.commands.common import console, figures_table
from trustfabric.policy.paths import POLICIES_DIR


def command(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    rounds: int = typer.Option(10, help="Interleaved rounds of plain / TLS / zero-trust round trips."),
    per_round: int = typer.Option(2000, help="Round trips per server per round."),
    policies: Path = typer.Option(None, help="Policy directory (default: the repository's policies/)."),
    warmup: int = typer.Option(500, help="Warm-up round trips per server before measuring."),
    repeat: int = typer.Option(200, help="Samples of the micro-benchmarks (Cedar, session open, revocation)."),
    sync_interval_ms: float = typer.Option(5.0, help="The PEP spool's background fsync period (durability=write)."),
) -> None:
    """Measure a zero-trust hop (mTLS + enforcement) against plain TCP and TLS, side by side, on loopback."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        result = runner.run(measure(rounds, per_round, policies or POLICIES_DIR, warmup, repeat,
                                    sync_interval_ms))
    if json_out:
        print(json.dumps(result))
        return
    console.print(figures_table("trustfabric bench hop (loopback, one loop, interleaved rounds)", result,
                                column="figure"))
