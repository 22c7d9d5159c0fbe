"""``trustfabric floor status``: who runs the floor now, read from its runtime manifest and the processes."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from trustfabric.cli import app


def test_no_floor_is_a_clear_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["floor", "status"])
    assert result.exit_code == 1 and "floor.not_running" in result.output


def test_a_stopped_floor_and_its_standby_and_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    (tmp_path / "floor").mkdir()
    manifest = {"mode": "zero-trust", "pid": os.getpid(), "stopped_at": 1.0,
                "control": {"control_port": 21000, "bootstrap_port": 21001},
                "standbys": [{"bootstrap_port": 21002, "control_port": 21003, "pid": 2 ** 22 + 7}],
                "takeover": {"lease_at": 10.0, "active_at": 10.2, "all_moved_at": 10.3},
                "services": {"venue-a": {"port": 22000, "pid": os.getpid(), "address": "127.0.0.4",
                                         "host": "venues-edge"}}}
    (tmp_path / "floor" / "runtime.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["floor", "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["running"] is False and report["control_plane"]["alive"] is True
    assert report["standbys"][0]["alive"] is False and report["takeover"]["all_moved_at"] == 10.3
    assert report["services"]["venue-a"] == {"address": "127.0.0.4", "host": "venues-edge", "port": 22000,
                                             "pid": os.getpid(), "alive": True}
    table = CliRunner().invoke(app, ["floor", "status"])
    assert table.exit_code == 0 and "venues-edge" in table.output and "0.300 s" in " ".join(table.output.split())
