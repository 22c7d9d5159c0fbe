"""``trustfabric policy`` / ``signal`` / ``bench pdp`` commands, run through the real CLI app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.cli import app

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
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

    return Pool(UserDirectory(open_default_store(), Emitter("test", MemorySink())))


def test_validate_accepts_the_floor():
    result = runner.invoke(app, ["policy", "validate", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_refuses_a_broken_set(tmp_path):
    bad = tmp_path / "p"
    shutil.copytree(POLICY_DIR, bad)
    (bad / "oops.cedar").write_text('@id("oops")\npermit (principal, action, resource) when { context.nope };')
    result = runner.invoke(app, ["policy", "validate", str(bad)])
    assert result.exit_code != 0
    assert "policy.load.validation" in result.output and "oops" in result.output


def test_validate_refuses_a_syntax_error(tmp_path):
    bad = tmp_path / "p"
    shutil.copytree(POLICY_DIR, bad)
    (bad / "guards.cedar").write_text("forbid (principal,")
    result = runner.invoke(app, ["policy", "validate", str(bad)])
    assert result.exit_code != 0 and "policy.load.syntax" in result.output


def test_policy_test_runs_the_shipped_cases():
    result = runner.invoke(app, ["policy", "test", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    passed, failed = last.split(", ")
    assert failed == "0 failed" and int(passed.split()[0]) >= 80


def test_policy_test_reports_a_failing_case(tmp_path):
    bad = tmp_path / "p"
    shutil.copytree(POLICY_DIR, bad)
    (bad / "tests" / "wrong.toml").write_text(
        '[[case]]\nname = "claims algos may reach venues"\nprincipal = "algo-meanrev"\naction = "execute"\n'
        'resource = "venue-a/orders"\nexpect = "allow"\n')
    result = runner.invoke(app, ["policy", "test", str(bad)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and result.output.strip().splitlines()[-1].endswith(", 1 failed")


def test_explain_and_signals_round_trip(officers):
    assert runner.invoke(app, ["signal", "posture", "attest-local", *officers.args()]).exit_code == 0
    out = runner.invoke(app, ["policy", "explain", "algo-meanrev", "submit_order", "risk/orders", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["decision"]["allowed"] is True and data["policies"][0][0] == "algo-meanrev.orders"

    assert runner.invoke(app, ["signal", "kill", "agent", "algo-meanrev", "halted", *officers.args()]).exit_code == 0
    data = json.loads(runner.invoke(app, ["policy", "explain", "algo-meanrev", "submit_order", "risk/orders",
                                          "--json"]).output)
    assert data["decision"]["allowed"] is False
    assert data["decision"]["policy_ids"] == ["guard.kill-switch-halted"] and data["mattered"] == ["kill_switch"]

    refused = runner.invoke(app, ["signal", "risk", "algo-meanrev", "150", *officers.args()])
    assert refused.exit_code != 0 and "signal.risk.out_of_range" in refused.output
    shown = json.loads(runner.invoke(app, ["signal", "show"]).output)
    assert shown["risk_scores"] == {} and shown["kill_switches"] == {"agent:algo-meanrev": "HALTED"}


def test_explain_without_posture_is_a_deny_naming_posture():
    out = runner.invoke(app, ["policy", "explain", "oms", "settle", "settlement/ledger"])
    assert out.exit_code == 0 and "DENY" in out.output and "guard.posture" in out.output


def test_explain_bad_requests_deny_with_a_reason():
    out = runner.invoke(app, ["policy", "explain", "algo-meanrev", "submit_order", "risk/orders",
                              "--context", "{not json", "--json"])
    data = json.loads(out.output)
    assert data["decision"]["allowed"] is False
    assert data["decision"]["errors"][0].startswith("policy.request.malformed_context")
    out = runner.invoke(app, ["policy", "explain", "rogue", "submit_order", "risk/orders", "--json"])
    assert json.loads(out.output)["decision"]["errors"][0].startswith("policy.request.unknown_principal")


def test_bad_intel_bundle_is_refused(tmp_path, officers):
    bundle = tmp_path / "b.json"
    bundle.write_text('{"type": "bundle"')
    out = runner.invoke(app, ["signal", "intel", str(bundle), *officers.args()])
    assert out.exit_code != 0 and "signal.intel.malformed" in out.output


def test_bench_pdp_prints_its_figures():
    out = runner.invoke(app, ["bench", "pdp", "--json", "--iterations", "100"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    for key in ("decide_us_p50", "naive_cedar_us_p50", "table_compile_ms_p50", "invalidation_us_p50"):
        assert data[key] > 0
    assert data["table_entries"] >= 80
