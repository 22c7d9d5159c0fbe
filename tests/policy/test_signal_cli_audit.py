"""``trustfabric signal ...`` events go to the audit spool and ``audit collect`` ships them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trustfabric.audit.events import Kind
from trustfabric.cli import app
from tests.people import PASSWORD, enrol

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    return tmp_path / "home"


@pytest.fixture()
def officers(home):
    from trustfabric.audit.events import Emitter, MemorySink
    from trustfabric.identity.store import open_default_store
    from trustfabric.identity.users import UserDirectory

    users = UserDirectory(open_default_store(), Emitter("test", MemorySink()))
    return [enrol(users, "dave", "security_officer"), enrol(users, "sam", "security_officer")]


def _as(person, *args: str) -> list[str]:
    return [*args, "--user", person.name, "--totp", person.code()]


def _query(kind: str) -> list[dict]:
    out = runner.invoke(app, ["audit", "query", "--kind", kind, "--json"])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines() if line.strip()]


def test_signal_changes_are_spooled_and_collected(home, officers) -> None:
    dave, sam = officers
    assert runner.invoke(app, _as(dave, "signal", "quarantine", "algo-meanrev", "--reason", "test")).exit_code == 0
    assert runner.invoke(app, _as(dave, "signal", "release", "algo-meanrev")).exit_code == 0
    refused = runner.invoke(app, _as(sam, "signal", "risk", "algo-meanrev", "150"))
    assert refused.exit_code != 0
    assert list((home / "spool" / "policy-cli").glob("*.seg"))
    assert not (home / "policy" / "signal-events.jsonl").exists()
    collected = runner.invoke(app, ["audit", "collect"])
    assert collected.exit_code == 0, collected.output
    changed = _query(Kind.SIGNAL_CHANGED)
    assert changed, "no signal change reached the central log"
    sources = {(r.get("event") or r).get("source") for r in changed}
    assert sources == {"policy-cli"}
    by = {(r.get("event") or r).get("detail", {}).get("source") for r in changed}
    assert by == {"user:dave"}  # the person who made the change, not a typed name
    # a second command continues the same source's sequence (nothing refused as out of order)
    assert runner.invoke(app, _as(sam, "signal", "quarantine", "algo-momentum")).exit_code == 0
    again = runner.invoke(app, ["audit", "collect"])
    assert again.exit_code == 0, again.output
    assert len(_query(Kind.SIGNAL_CHANGED)) > len(changed)
