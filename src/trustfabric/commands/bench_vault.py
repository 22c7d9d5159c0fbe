"""``trustfabric bench vault --json``: the data vault's costs beside plain reads and AES-GCM alone (same run)."""

from __future__ import annotations

import json

import typer

from trustfabric.bench.vault import run
from trustfabric.commands.common import console


def command(
    reads: int = typer.Option(5000, "--reads", help="1 KiB reads (vault and plain file)."),
    big: int = typer.Option(20, "--big", help="1 MiB objects sealed and opened."),
    unwraps: int = typer.Option(200, "--unwraps", help="Cold unwraps (new session each)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Permitted cached read vs plain read; seal/open MB/s vs AES-GCM; unwrap at the key service."""
    result = run(reads=reads, big=big, unwraps=unwraps)
    if json_out:
        typer.echo(json.dumps(result))
        return
    console.print(f"read (cached decision) {result['read_cached_us_p50']} us p50 vs plain file "
                  f"{result['plain_read_us_p50']} us; seal {result['seal_mb_s']} MB/s, open {result['open_mb_s']} "
                  f"MB/s vs AES-GCM {result['aesgcm_mb_s']} MB/s; cold unwrap {result['unwrap_ms_p50']} ms p50")
