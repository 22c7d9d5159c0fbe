"""A new algo onboarded end to end through the CLI, no Cedar written by hand:
suggest -> impact -> bundle -> sign x2 -> activate; the floor then serves the signed version."""

from __future__ import annotations

import json
import time

import pyotp
import pytest
from typer.testing import CliRunner

from tests.policy.lifecycle_fixtures import NEW_ALGO, floor_with_new_algo, paper_trading_audit
from trustfabric.cli import app
from trustfabric.clock import FakeClock
from trustfabric.control.plane import ControlPlane
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.bundle import PolicyVersions

runner = CliRunner()
PASSWORD = "correct horse battery"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    monkeypatch.delenv("TRUSTFABRIC_TOTP", raising=False)
    return home


def _people(home) -> dict[str, pyotp.TOTP]:
    totp = {}
    with IdentityPlane(home) as plane:
        for name, role in (("erin", "developer"), ("bob", "risk_officer"), ("carol", "risk_officer"),
                           ("dave", "security_officer")):
            totp[name] = pyotp.TOTP(plane.users().enrol(name, role, PASSWORD, plane.clock.now()).totp_secret)
    return totp


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_onboard_a_new_algo_end_to_end(home, tmp_path):
    base = floor_with_new_algo(tmp_path / "policies")
    plane = ControlPlane(home, policies=base, clock=FakeClock(1_790_000_000.0))
    risk = plane.topology.spiffe_id("pre-trade-risk")
    algo = plane.topology.spiffe_id(NEW_ALGO)
    assert not plane.table_for(risk, algo, plane.clock.now()).lookup("submit_order", "risk/orders").allowed
    plane.close()
    audit = paper_trading_audit(base, tmp_path / "run" / "audit")  # its 60 s of paper trading, all refused
    totp = _people(home)

    _cli("policy", "suggest", "--from-audit", str(audit), "--dir", str(base), "--principal", NEW_ALGO,
         "--grant-denied", "--out", str(tmp_path / "proposed"))
    report = json.loads(_cli("policy", "impact", "--proposed", str(tmp_path / "proposed"), "--replay", str(audit),
                             "--active", str(base), "--json"))
    assert report["flips"] and not report["high_risk"] and report["rate_per_s"] > 0
    assert {f["direction"] for f in report["flips"]} == {"deny->allow"}
    bundle = tmp_path / "v1.json"
    _cli("policy", "bundle", str(tmp_path / "proposed"), "--out", str(bundle), "--user", "erin",
         "--totp", totp["erin"].now(), "--reason", "onboard algo-pairs")
    refused = runner.invoke(app, ["policy", "activate", str(bundle), "--user", "dave", "--totp", totp["dave"].now()])
    assert refused.exit_code == 1 and "policy.bundle.unsigned" in refused.output
    _cli("policy", "sign", str(bundle), "--user", "bob", "--totp", totp["bob"].now())
    _cli("policy", "sign", str(bundle), "--user", "carol", "--totp", totp["carol"].now())
    dave_next = totp["dave"].at(time.time() + 30)  # the refused attempt used dave's current code
    _cli("policy", "activate", str(bundle), "--user", "dave", "--totp", dave_next, "--reason", "change 42")
    history = [json.loads(line) for line in _cli("policy", "history", "--json").splitlines()]
    assert [(h["version"], h["by"], h["author"], h["approvers"]) for h in history] == \
        [(1, "dave", "erin", ["bob", "carol"])]
    assert PolicyVersions(home / "policy").active_version() == 1

    # a floor started now serves the signed version: the new algo's least-privilege grants, nothing more
    plane = ControlPlane(home, policies=base, clock=FakeClock(1_790_000_000.0))
    try:
        assert plane.engine.info.directory.endswith("versions/v1")
        entry = plane.table_for(risk, algo, plane.clock.now()).lookup("submit_order", "risk/orders")
        assert entry.allowed and entry.policy_ids == ("suggested.algo-pairs.risk.orders",)
        assert entry.obligations.symbols == frozenset({"KO", "PEP"}) and entry.obligations.max_notional
        md = plane.table_for(plane.topology.spiffe_id("market-data"), algo, plane.clock.now())
        assert md.lookup("subscribe", "md/KO").allowed and not md.lookup("subscribe", "md/AAPL").allowed
    finally:
        plane.close()
