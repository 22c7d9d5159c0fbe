"""``trustfabric simulate``: the threat scenarios on the real floor, perimeter vs zero trust, with a report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from trustfabric.commands.common import console, err_console, refusals_exit
from trustfabric.bench.hop import measure_brief
from trustfabric.simulation.simulate import MODE_CHOICES, run_simulation


def _fmt(value: Any, unit: str = "ms") -> str:
    if value is None:
        return "-"
    if unit == "ms" and value >= 60_000:
        return f"{value / 60_000:.0f} min"
    return f"{value:.1f} {unit}"


def command(
    mode: str = typer.Option("both", "--mode", help="perimeter, zero-trust or both."),
    scenario: str = typer.Option("all", "--scenario", help="A scenario name, or all."),
    report: Optional[Path] = typer.Option(None, "--report", help="Directory for report.html, charts, results.json."),
    json_out: bool = typer.Option(False, "--json", help="Print the results object as JSON."),
    review_interval: float = typer.Option(3600.0, "--review-interval",
                                          help="Perimeter: seconds between log reviews (modelled detection)."),
    warmup: float = typer.Option(3.0, "--warmup", help="Seconds of normal trading before the first attack."),
    scenarios_file: Optional[Path] = typer.Option(None, "--scenarios", help="Scenario file (default: built in)."),
    no_hop: bool = typer.Option(False, "--no-hop", help="Skip the per-hop latency measurement."),
) -> None:
    """Run threat scenarios against the real floor in perimeter and zero-trust modes and measure each."""
    if mode not in MODE_CHOICES:
        err_console.print(f"[bold red]simulate.bad_mode[/]: {mode!r} is not one of {sorted(MODE_CHOICES)}")
        raise typer.Exit(2)
    out = err_console if json_out else console

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "floor.starting":
            out.print(f"[bold]{data['mode']}[/]: starting the floor...")
        elif event == "floor.trading":
            out.print(f"  trading: {data['orders_submitted']:.0f} orders submitted, "
                      f"{data['orders_filled']:.0f} filled")
        elif event == "scenario.done":
            r = data["result"]
            colour = "green" if r.successes == 0 and r.blast_radius == 0 else "red"
            out.print(f"  [{colour}]{r.name:<28}[/] attempts {r.attempts:>4}  successes {r.successes:>4}  "
                      f"blast {r.blast_radius:>3}  detected {'yes' if r.detected else 'no ':<3} "
                      f"ttd {_fmt(r.ttd_ms):>9}  contained {'yes' if r.contained else 'no ':<3} "
                      f"ttc {_fmt(r.ttc_ms):>9}", highlight=False)
        elif event == "hop.measuring":
            out.print("measuring the per-hop latency...")

    with refusals_exit():
        obj = run_simulation(mode, scenario, report_dir=report, review_interval_s=review_interval,
                             warmup_s=warmup, hop=None if no_hop else measure_brief, scenarios_path=scenarios_file, progress=progress)
    if json_out:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        return
    table = Table(title="summary per mode")
    for col in ("mode", "scenarios", "attempts", "successes", "blast radius", "detected", "contained",
                "ttd p99", "ttc p99"):
        table.add_column(col)
    for m, s in obj["summary"].items():
        table.add_row(m, str(s["scenarios"]), str(s["attempts"]), str(s["successes"]), str(s["blast_radius"]),
                      str(s["detected"]), str(s["contained"]), _fmt(s["ttd_ms_p99"]), _fmt(s["ttc_ms_p99"]))
    console.print(table)
    if obj.get("hop_added_us_p50") is not None:
        console.print(f"zero-trust hop adds {obj['hop_added_us_p50']:.1f} us (p50) over plain TCP")
    if report is not None:
        console.print(f"report: {report / 'report.html'}")
