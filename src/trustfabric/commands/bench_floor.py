"""``trustfabric bench floor --json``: end-to-end orders/s of the same floor in zero-trust and perimeter mode.

The measurement (and what each figure means) is :mod:`trustfabric.bench.floor`; this
command parses the options and prints.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import typer

from trustfabric.commands.common import console


def command(
    orders: int = typer.Option(16000, "--orders", help="Orders per round."),
    rounds: int = typer.Option(7, "--rounds", help="Alternating rounds per mode."),
    warmup: int = typer.Option(2000, "--warmup", help="Warm-up orders per mode before the rounds."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    web_console: bool = typer.Option(False, "--console", help="Also: the zero-trust floor with the web console "
                                     "attached and a browser on its live page, against the same floor without."),
) -> None:
    """Orders/s algo -> risk -> router -> venue -> OMS, zero-trust vs perimeter, same run."""
    from trustfabric.home import home_dir
    from trustfabric.bench.floor import run_bench

    home = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=home_dir()))
    result = asyncio.run(run_bench(home, orders=orders, rounds=rounds, warmup=warmup, console=web_console))
    if json_out:
        typer.echo(json.dumps(result, default=str))
        return
    console.print(f"zero-trust: {result['zt_orders_per_s']:.0f} orders/s, perimeter: "
                  f"{result['perimeter_orders_per_s']:.0f} orders/s (medians of {rounds}), ratio "
                  f"{result['zt_vs_perimeter']:.2f}; per round {result['round_ratios']}")
    if "console" in result:
        c = result["console"]
        console.print(f"console ({c['watcher']} on the live page): {c['with_console_orders_per_s']:.0f} orders/s vs "
                      f"{c['without_console_orders_per_s']:.0f} without, ratio {c['with_vs_without']:.3f}")
