"""``trustfabric bench sidecar --json``: plain TCP and the sidecar (and haproxy / stunnel4 when installed), one run.

No timing assertions: only that each target carried its round trips, with the figures
the command documents, and that the sidecar's figures are there to compare.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from trustfabric.cli import app


@pytest.mark.slow  # an echo process, the sidecar process, haproxy and stunnel4 when on PATH
def test_bench_sidecar_json_has_every_target_it_could_start(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "sidecar", "--json", "--rounds", "2", "--per-round", "50",
                                      "--warmup", "10", "--connects", "2", "--busy-poll-us", "100"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"plain", "sidecar", "sidecar-busy-poll"} | ({"haproxy"} if shutil.which("haproxy") else set()) \
        | ({"stunnel4"} if shutil.which("stunnel4") or shutil.which("stunnel") else set())
    assert set(figures["targets"]) == expected
    for name, target in figures["targets"].items():
        keys = ("rtt_us_p50", "rtt_us_p99") + (() if name == "plain" else
                                               ("added_us_p50", "added_us_p99", "connect_ms_p50"))
        for key in keys:
            assert isinstance(target[key], (int, float)) and math.isfinite(target[key]), (name, key)
    if "haproxy" in expected:
        assert set(figures["targets_met"]) == {"added_p50<=haproxy", "added_p99<=1.5x_haproxy"}
    assert figures["busy_poll_us"] == 100
