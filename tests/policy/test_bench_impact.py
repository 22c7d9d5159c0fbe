"""``bench impact`` replays a recorded day against the floor's set and a changed copy, and finds the change."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from trustfabric.bench.impact import DROPPED, run
from trustfabric.cli import app


def test_the_bench_replays_every_recorded_decision_and_finds_the_removed_permit():
    result = run(3000, seed=5)
    assert result["decisions"] == 3000 and result["evaluations"] <= result["distinct"] <= 3000
    assert result["flips"] == 1 and result["flipped_decisions"] > 0 and result["high_risk"] is False
    assert result["change"] == f"removed {DROPPED}" and result["rate_per_s"] > 0 and 0 < result["ratio"]


def test_the_cli_prints_json():
    out = CliRunner().invoke(app, ["bench", "impact", "--decisions", "500", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["decisions"] == 500
