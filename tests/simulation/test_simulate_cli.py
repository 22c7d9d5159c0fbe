"""``trustfabric simulate``: both modes on the real floor, report.html + results.json with the documented keys."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.cli import app

runner = CliRunner()
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))


@pytest.mark.slow
def test_simulate_writes_report_and_json(tmp_path):
    report = tmp_path / "report"
    result = runner.invoke(app, ["simulate", "--mode", "both", "--scenario", "algo-direct-venue", "--report",
                                 str(report), "--json", "--warmup", "1"])
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    written = json.loads((report / "results.json").read_text())
    assert printed["summary"] == written["summary"]
    assert {"scenarios", "summary", "hop_added_us_p50"} <= printed.keys()
    assert printed["hop_added_us_p50"] is not None
    rows = {(r["name"], r["mode"]): r for r in printed["scenarios"]}
    assert set(rows) == {("algo-direct-venue", "zero-trust"), ("algo-direct-venue", "perimeter")}
    for row in rows.values():
        assert {"name", "mode", "attempts", "successes", "blast_radius", "detected", "ttd_ms", "contained",
                "ttc_ms"} <= row.keys()
    for mode in ("zero-trust", "perimeter"):
        assert {"successes", "blast_radius", "ttd_ms_p99", "ttc_ms_p99"} <= printed["summary"][mode].keys()
    zt, per = rows[("algo-direct-venue", "zero-trust")], rows[("algo-direct-venue", "perimeter")]
    assert zt["successes"] == 0 and zt["blast_radius"] == 0 and zt["contained"]
    assert per["successes"] > 0 and per["blast_radius"] > 0  # the perimeter lets the venue orders through
    html = (report / "report.html").read_text()
    assert "blast_radius.png" in html and (report / "blast_radius.png").exists()
    assert (report / "detect_contain.png").exists() and (report / "hop_latency.png").exists()
    assert "algo-direct-venue" in html
    assert "running" not in result.stdout  # progress goes to stderr with --json


def test_simulate_refuses_a_bad_mode_and_an_unknown_scenario():
    bad = runner.invoke(app, ["simulate", "--mode", "sideways"])
    assert bad.exit_code == 2
    unknown = runner.invoke(app, ["simulate", "--mode", "zero-trust", "--scenario", "no-such-scenario", "--no-hop"])
    assert unknown.exit_code == 1
    assert "scenario.unknown" in unknown.stderr
