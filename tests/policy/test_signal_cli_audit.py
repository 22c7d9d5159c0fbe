"""``trustfabric signal ...`` events go to the audit spool and ``audit collect`` ships them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.audit.events import Kind
from trustfabric.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _query(kind: str) -> list[dict]:
    out = runner.invoke(app, ["audit", "query", "--kind", kind, "--json"])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines() if line.strip()]


def test_signal_changes_are_spooled_and_collected(home) -> None:
    assert runner.invoke(app, ["signal", "quarantine", "algo-meanrev", "--reason", "test"]).exit_code == 0
    assert runner.invoke(app, ["signal", "release", "algo-meanrev"]).exit_code == 0
    refused = runner.invoke(app, ["signal", "risk", "algo-meanrev", "150"])
    assert refused.exit_code != 0
    assert list((home / "spool" / "policy-cli").glob("*.seg"))
    assert not (home / "policy" / "signal-events.jsonl").exists()
    collected = runner.invoke(app, ["audit", "collect"])
    assert collected.exit_code == 0, collected.output
    changed = _query(Kind.SIGNAL_CHANGED)
    assert changed, "no signal change reached the central log"
    sources = {(r.get("event") or r).get("source") for r in changed}
    assert sources == {"policy-cli"}
    # a second command continues the same source's sequence (nothing refused as out of order)
    assert runner.invoke(app, ["signal", "quarantine", "algo-momentum"]).exit_code == 0
    again = runner.invoke(app, ["audit", "collect"])
    assert again.exit_code == 0, again.output
    assert len(_query(Kind.SIGNAL_CHANGED)) > len(changed)
