"""``trustfabric bench operator --json``: from a person's command to its enforcement, on a running floor.

Starts a zero-trust bench floor in a temporary directory under ``$TRUSTFABRIC_HOME``
and measures, ``--repetitions`` times each, a quarantine (then release), a kill switch
halting an agent (then ACTIVE), a risk score raised to 95 (then 0) and a threat-intel
bundle naming the agent (then one naming nothing): the time from the operator request
sent to the first refusal of the agent stamped by an enforcement point, and to the
reply (every enforcement point acknowledged), p50/p99 per kind; the same from the
moment the plane applied the change (after the password and TOTP check) is beside
them. The measurement is :mod:`trustfabric.bench.operator`; this only prints.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import typer

from trustfabric.commands.common import console


def command(
    repetitions: int = typer.Option(20, "--repetitions", min=1, help="Samples of each kind of change."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    samples: bool = typer.Option(False, "--samples", help="Include every sample in the JSON."),
) -> None:
    """Command-to-enforcement time on a running zero-trust floor: quarantine, kill switch, risk, intel."""
    from trustfabric.home import home_dir
    from trustfabric.bench.operator import run_operator_bench

    home = Path(tempfile.mkdtemp(prefix="bench-operator-", dir=home_dir()))
    result = asyncio.run(run_operator_bench(home, repetitions=repetitions))
    if not samples:
        result.pop("samples", None)
    if json_out:
        typer.echo(json.dumps(result, default=str))
        return
    for kind, row in result["kinds"].items():
        refusal, ack = row["to_first_refusal_ms"], row["to_last_ack_ms"]
        applied = row["applied_to_first_refusal_ms"]
        console.print(f"{kind:12s} first refusal p50 {refusal['p50']} ms p99 {refusal['p99']} ms; last ack p50 "
                      f"{ack['p50']} ms p99 {ack['p99']} ms; from applied: refusal p50 {applied['p50']} ms "
                      f"({row['ok']}/{row['samples']} ok)", highlight=False, soft_wrap=True)
