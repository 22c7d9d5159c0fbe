"""``trustfabric bench flood``: connection floods against the sidecar and a floor service, memory watched.

The measurement is :func:`trustfabric.bench.flood.measure` (its docstring says what each
figure is); this command parses the options, shows each flood as it ends, and prints
the result (one JSON object with ``--json``).
"""

from __future__ import annotations

import asyncio
import json

import typer
from rich.table import Table

from trustfabric.bench.flood import FloodPlan, measure
from trustfabric.commands.common import console


def command(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    floods: int = typer.Option(5, help="Floods per target."),
    idle_tcp: int = typer.Option(5000, help="Idle TCP connections per flood (never send a byte)."),
    client_hellos: int = typer.Option(500, help="Connections per flood that send a ClientHello, then stall."),
    hold_s: float = typer.Option(1.0, help="Seconds the flood's connections are held open."),
    settle_s: float = typer.Option(7.0, help="Seconds after the flood before the settled RSS is read "
                                             "(longer than the 5 s handshake deadline)."),
) -> None:
    """Flood the sidecar and a floor service with half-open connections; RSS before, at peak and settled."""
    plan = FloodPlan(floods=floods, idle_tcp=idle_tcp, client_hellos=client_hellos, hold_s=hold_s,
                     settle_s=settle_s)
    table = Table(title="trustfabric bench flood (loopback)")
    for column in ("target", "flood", "connections", "refused", "held", "rss before MB", "rss peak MB",
                   "rss settled MB", "served after"):
        table.add_column(column, justify="right")
    counts: dict[str, int] = {}

    def on_flood(target: str, flood: dict) -> None:
        counts[target] = counts.get(target, 0) + 1
        row = (target, str(counts[target]), str(flood["connections"]), str(flood["refused"]), str(flood["held"]),
               str(flood["rss_before_mb"]), str(flood["rss_peak_mb"]), str(flood["rss_settled_mb"]),
               "yes" if flood["served_after"] else "NO")
        table.add_row(*row)
        if not json_out:
            console.print(f"{target} flood {counts[target]}: {flood['refused']} refused, peak "
                          f"{flood['rss_peak_mb']} MB, settled {flood['rss_settled_mb']} MB", highlight=False)

    if json_out:
        result = asyncio.run(measure(plan, on_flood))
        print(json.dumps(result))
        return
    with console.status("flooding ..."):
        result = asyncio.run(measure(plan, on_flood))
    console.print(table)
    for name, target in result["targets"].items():
        console.print(f"{name}: baseline {target['baseline_rss_mb']} MB, peak {target['peak_rss_mb']} MB, "
                      f"settled {target['settled_rss_mb']} MB (x{target['settled_ratio']})", highlight=False)
    console.print(f"settled within 20% of baseline: {'yes' if result['settled_within_20pct'] else 'NO'}")
