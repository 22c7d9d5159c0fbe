"""``trustfabric simulate``: a mode on the real floor, report.html + results.json with the documented keys."""

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
    """The command on one mode, without the hop measurement. Both modes side by side and the per-hop figure come
    from the same ``run_simulation`` call ``demo --simulate-scenario`` makes, checked in full (rows, summaries,
    charts, the hop) in ``tests/trading/test_floor_run.py``."""
    report = tmp_path / "report"
    result = runner.invoke(app, ["simulate", "--mode", "zero-trust", "--scenario", "algo-direct-venue", "--report",
                                 str(report), "--json", "--warmup", "1", "--no-hop"])
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    written = json.loads((report / "results.json").read_text())
    assert printed["summary"] == written["summary"]
    assert {"scenarios", "summary", "hop_added_us_p50"} <= printed.keys()
    assert printed["hop_added_us_p50"] is None  # --no-hop: not measured
    rows = {(r["name"], r["mode"]): r for r in printed["scenarios"]}
    assert set(rows) == {("algo-direct-venue", "zero-trust")}
    for row in rows.values():
        assert {"name", "mode", "attempts", "successes", "blast_radius", "detected", "ttd_ms", "contained",
                "ttc_ms"} <= row.keys()
    assert set(printed["summary"]) == {"zero-trust"}
    assert {"successes", "blast_radius", "ttd_ms_p99", "ttc_ms_p99"} <= printed["summary"]["zero-trust"].keys()
    zt = rows[("algo-direct-venue", "zero-trust")]
    assert zt["successes"] == 0 and zt["blast_radius"] == 0 and zt["contained"]
    html = (report / "report.html").read_text()
    assert "blast_radius.png" in html and (report / "blast_radius.png").exists()
    assert (report / "detect_contain.png").exists()
    assert "algo-direct-venue" in html
    assert "running" not in result.stdout  # progress goes to stderr with --json


def test_simulate_refuses_a_bad_mode_and_an_unknown_scenario():
    bad = runner.invoke(app, ["simulate", "--mode", "sideways"])
    assert bad.exit_code == 2
    unknown = runner.invoke(app, ["simulate", "--mode", "zero-trust", "--scenario", "no-such-scenario", "--no-hop"])
    assert unknown.exit_code == 1
    assert "scenario.unknown" in unknown.stderr
