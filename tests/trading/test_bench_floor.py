"""``trustfabric bench floor``: both modes measured in one run, each burst counted and timed at the OMS."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_bench_floor_counts_exactly_each_burst_in_both_modes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "floor", "--json", "--orders", "300", "--rounds", "2",
                                      "--warmup", "100"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("zt_orders_per_s", "perimeter_orders_per_s", "zt_vs_perimeter"):
        assert figures[key] > 0, key
    assert figures["complete"] is True
    assert figures["fail_open"] == 0 and figures["denied_hops"] == 0
    for mode in ("zero_trust", "perimeter"):
        rounds = figures[mode]["rounds"]
        assert len(rounds) == 2
        for r in rounds:  # no strategy order and no earlier burst counted in: exactly the burst
            assert r["reached_oms"] == 300
            assert 0 < r["elapsed_s"] <= r["end_to_end_s"]
    assert len(figures["round_ratios"]) == 2
