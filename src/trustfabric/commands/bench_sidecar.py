"""``trustfabric bench sidecar``: the sidecar's added latency beside haproxy and stunnel4, same run.

The measurement is :func:`trustfabric.bench.sidecar.measure` (its docstring says what each
figure is); this command parses the options and prints the result (one JSON object with
``--json``: ``{"targets": {"plain": ..., "sidecar": ..., "haproxy": ..., "stunnel4": ...}}``).
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from trustfabric.bench.sidecar import measure
from trustfabric.commands.common import console


def command(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    rounds: int = typer.Option(10, help="Interleaved rounds over the targets."),
    per_round: int = typer.Option(2000, help="Round trips per target per round."),
    size: int = typer.Option(64, help="Bytes per request (echoed back)."),
    warmup: int = typer.Option(500, help="Warm-up round trips per target."),
    connects: int = typer.Option(20, help="New connections per target for connect_ms_p50."),
    busy_poll_us: int = typer.Option(None, "--busy-poll-us", min=0, max=100_000,
                                     help="Polling window of the 'sidecar' target (default: the sidecar's own); "
                                          "'sidecar-no-poll' is measured beside it unless this is 0."),
) -> None:
    """Round trips through the sidecar, haproxy and stunnel4 (when on PATH) to one echo service, vs plain TCP."""
    with console.status("measuring ...", spinner="dots") if not json_out else _nothing():
        result = measure(rounds, per_round, size, warmup, connects, busy_poll_us=busy_poll_us)
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"trustfabric bench sidecar ({size}-byte round trips, loopback, interleaved rounds)")
    for column in ("target", "rtt p50 us", "rtt p99 us", "added p50 us", "added p99 us", "connect p50 ms",
                   "cpu us / rtt"):
        table.add_column(column, justify="right", no_wrap=column == "target")
    for name, t in result["targets"].items():
        table.add_row(name, str(t["rtt_us_p50"]), str(t["rtt_us_p99"]), str(t.get("added_us_p50", "")),
                      str(t.get("added_us_p99", "")), str(t.get("connect_ms_p50", "")),
                      str(t.get("cpu_us_per_rtt", "") if t.get("cpu_us_per_rtt") is not None else ""))
    console.print(table)
    for key in ("sidecar", "sidecar_no_poll"):
        if f"{key}_over_haproxy_added_p50" in result:
            console.print(f"{key.replace('_', '-')} / haproxy added: p50 x{result[f'{key}_over_haproxy_added_p50']}, "
                          f"p99 x{result[f'{key}_over_haproxy_added_p99']}", highlight=False)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
