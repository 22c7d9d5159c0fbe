"""``trustfabric bench hop --json``: runs end to end with tiny sample counts and prints its figures.

No timing assertions (machines are noisy): only that every documented key is there, the
figures are numbers, the audit records reached the spool, and nothing failed open.
"""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from trustfabric.cli import app

KEYS = ("plain_rtt_us_p50", "tls_rtt_us_p50", "zt_rtt_us_p50", "zt_added_us_p50", "zt_added_us_p99",
        "tls_added_us_p50", "zt_over_tls_us_p50", "pep_check_us_p50", "cedar_per_request_us_p50",
        "speedup_vs_cedar", "session_open_ms_p50", "revocation_ms_p50", "tls_floor_added_us_p50",
        "zt_added_over_tls_floor_us_p50")


def test_bench_hop_json_has_its_figures_and_never_fails_open(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "hop", "--json", "--rounds", "2", "--per-round", "20",
                                      "--warmup", "5", "--repeat", "4"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]), key
    assert figures["fail_open"] == 0
    assert figures["rounds"] == 2 and figures["messages_per_round"] == 20
    assert figures["audit_records_spooled"] >= 2 * 20 + 5  # every zero-trust round trip was spooled
    assert set(figures["targets_met"]) == {"zt_added_us_p50<=5", "zt_added_us_p99<=20", "speedup_vs_cedar>=10",
                                           "session_open_ms_p50<=5", "revocation_ms_p50<=10"}
