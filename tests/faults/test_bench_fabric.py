"""``trustfabric bench fabric --json``: every figure it documents, from one small run (no timing assertions)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def test_bench_fabric_measures_the_bus_the_database_and_both_floors(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["bench", "fabric", "--json", "--database", DSN, "--points", "4", "--hosts",
                                      "2", "--rounds", "3", "--records", "2000", "--floor-seconds", "0", "--failover-rounds", "1"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout[result.stdout.index("{"):])
    assert figures["revocations_missing"] == 0 and figures["fail_open"] == 0
    for key in ("revocation_ms_p50", "revocation_ms_p99", "embedded_revocation_ms_p50", "audit_ingest_records_per_s",
                "embedded_audit_ingest_records_per_s", "session_open_ms_p50", "embedded_session_open_ms_p50"):
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key
    assert figures["replica_answered"] > 0 and figures["table_refusals"] == 0  # a follower issued, refused nothing
    assert figures["replica_table_ms_p50"] > 0 and figures["holder_table_ms_p50"] > 0
    assert figures["failover_rounds"] == 1 and 0 < figures["failover_s_p50"] == figures["failover_s_max"]
    assert set(figures["targets_met"]) == {"revocation_ms_p99<=10", "audit_ingest>=50000", "session_open_ms_p50<=5",
                                           "failover_s<=2", "fail_open==0"}


def test_bench_fabric_needs_a_database(monkeypatch):
    monkeypatch.delenv("TRUSTFABRIC_DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["bench", "fabric", "--json"])
    assert result.exit_code == 2 and "db.no_dsn" in result.output
