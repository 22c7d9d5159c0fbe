"""The simulation report renders the tables and charts from a results object."""

import json

from trustfabric.simulation.report import write_report
from trustfabric.percentiles import percentile
from trustfabric.simulation.results import ScenarioResult, results_object


def _results():
    rows = [
        ScenarioResult(name="compromised-algo", mode="perimeter", attempts=5, successes=4, blast_radius=7,
                       detected=True, ttd_ms=3_600_000.0, contained=False, ttc_ms=None, category="compromised_algo",
                       ttd_method="periodic log review every 3600 s"),
        ScenarioResult(name="compromised-algo", mode="zero-trust", attempts=5, successes=0, blast_radius=0,
                       detected=True, ttd_ms=2.5, contained=True, ttc_ms=40.0, category="compromised_algo"),
        ScenarioResult(name="insider", mode="zero-trust", attempts=2, successes=0, blast_radius=0,
                       detected=True, ttd_ms=1.5, contained=True, ttc_ms=30.0, category="insider"),
    ]
    hop = {"plain_rtt_us_p50": 20.0, "plain_rtt_us_p99": 40.0, "tls_rtt_us_p50": 24.0, "tls_rtt_us_p99": 50.0,
           "zt_rtt_us_p50": 25.0, "zt_rtt_us_p99": 55.0, "zt_added_us_p50": 5.0, "zt_added_us_p99": 15.0}
    return results_object(rows, hop)


def test_percentile_nearest_rank():
    assert percentile([], 99) is None
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 99) == 4


def test_summary_per_mode():
    res = _results()
    assert res["summary"]["zero-trust"]["successes"] == 0
    assert res["summary"]["zero-trust"]["ttc_ms_p99"] == 40.0
    assert res["summary"]["perimeter"]["blast_radius"] == 7
    assert res["hop_added_us_p50"] == 5.0


def test_report_has_tables_and_charts(tmp_path):
    path = write_report(_results(), tmp_path)
    html = path.read_text()
    assert "Blast radius" in html and "hours to months" in html and "5-20 us" in html
    assert "Compromised algorithmic agents" in html
    for png in ("blast_radius.png", "detect_contain.png", "hop_latency.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert png in html
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["perimeter"]["successes"] == 4
