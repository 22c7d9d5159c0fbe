"""``trustfabric bench flood --json``: both targets flooded, refusals seen, a fresh client served after each flood.

A small plan (the figures of the closing note come from the default plan). No memory or
timing assertions: resident memory is the benchmark's figure, not a test's verdict.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.cli import app


@pytest.mark.slow  # a sidecar process and a one-service floor, flooded
def test_bench_flood_json_floods_both_targets_and_each_still_serves(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "flood", "--json", "--floods", "1", "--idle-tcp", "600",
                                      "--client-hellos", "60", "--hold-s", "0.3", "--settle-s", "5.5"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures["targets"]) == {"sidecar", "venue-a"}
    for name, target in figures["targets"].items():
        assert len(target["floods"]) == 1, name
        assert target["served_after_every_flood"], name
        assert target["refused"] > 0, name  # admission control refused most of each flood
        for flood in target["floods"]:
            assert flood["connections"] == 660
            assert flood["held"] <= 128, name  # never more in handshake than the per-source cap
            assert flood["rss_peak_mb"] >= flood["rss_before_mb"] > 0
        assert target["settled_ratio"] > 0
    assert isinstance(figures["settled_within_20pct"], bool)
