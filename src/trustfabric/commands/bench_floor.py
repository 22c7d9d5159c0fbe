"""``trustfabric bench floor --json``: end-to-end orders/s of the same floor in zero-trust and perimeter mode.

Both floors run side by side in this one invocation on loopback; after a warm-up
of each, ``--rounds`` rounds alternate the two modes (which one goes first
alternates too) with the same burst; medians and min-max are reported. An
algo sends a burst of marketable orders (pipelined, at most 512 unanswered) through
pre-trade risk, the router and the venues to the OMS. Each burst carries its own
tag; the OMS counts exactly that burst's orders and stamps the first and the last,
and a round's orders/s is the steady rate between them (the time from the command
to the last order is reported beside it as ``end_to_end_s``). The
policy set is the floor's own with every rate obligation raised 1000x, and the
risk throttle and credit limits are raised in both modes alike, so the transport
and enforcement - not the configured caps - are measured.
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
) -> None:
    """Orders/s algo -> risk -> router -> venue -> OMS, zero-trust vs perimeter, same run."""
    from trustfabric.home import home_dir
    from trustfabric.trading.runtime import run_bench

    home = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=home_dir()))
    result = asyncio.run(run_bench(home, orders=orders, rounds=rounds, warmup=warmup))
    if json_out:
        typer.echo(json.dumps(result, default=str))
        return
    console.print(f"zero-trust: {result['zt_orders_per_s']:.0f} orders/s, perimeter: "
                  f"{result['perimeter_orders_per_s']:.0f} orders/s (medians of {rounds}), ratio "
                  f"{result['zt_vs_perimeter']:.2f}; per round {result['round_ratios']}")
