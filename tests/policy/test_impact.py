"""``policy impact``: recorded requests replayed against both sets; flips, the policies behind them, high-risk exit."""

from __future__ import annotations

import random
import shutil

import pytest
from typer.testing import CliRunner

from tests.policy.lifecycle_fixtures import (
    NEW_ALGO,
    POLICY_DIR,
    floor_with_new_algo,
    paper_trading_audit,
)
from trustfabric.cli import app
from trustfabric.policy import synthetic
from trustfabric.policy.impact import ALLOW_TO_DENY, DENY_TO_ALLOW, impact
from trustfabric.policy.suggest import suggest
from trustfabric.policy.topology import Topology

runner = CliRunner()


@pytest.fixture()
def day(tmp_path):
    topology = Topology.load(POLICY_DIR / "floor.toml")
    events = list(synthetic.floor_day(topology, 3000, rng=random.Random(5)))
    last = events[-1]
    events.append(synthetic.decision(last.seq + 1, last.time_ns + 1, topology.spiffe_id("analytics"),
                                     "read_client_orders", "oms/client-orders", False, "enforcement.not_in_table"))
    synthetic.write(tmp_path / "day", events)
    return tmp_path / "day"


def _proposed(tmp_path, extra: str = "", drop: str = ""):
    proposed = tmp_path / "proposed"
    shutil.copytree(POLICY_DIR, proposed)
    text = (proposed / "workloads.cedar").read_text()
    if drop:
        start = text.index(f'@id("{drop}")')
        text = text[:start] + text[text.index(";", start) + 1:]
    (proposed / "workloads.cedar").write_text(text + extra)
    return proposed


def test_the_same_set_flips_nothing(day):
    report = impact(POLICY_DIR, day, POLICY_DIR)
    assert report.decisions == 3001 and report.flips == [] and not report.high_risk
    assert report.evaluations < report.decisions  # identical requests are evaluated once


def test_a_removed_permit_flips_allow_to_deny_naming_the_policy(day, tmp_path):
    report = impact(_proposed(tmp_path, drop="venue-b.fills"), day, POLICY_DIR)
    assert {(f.resource, f.action, f.direction) for f in report.flips} == {("oms/fills", "report_fill", ALLOW_TO_DENY)}
    flip = report.flips[0]
    assert flip.principal.endswith("/venue-b") and flip.active_policies == ("venue-b.fills",)
    assert flip.proposed_reason == "policy.no_permit" and flip.count > 0 and not report.high_risk


def test_a_high_risk_deny_to_allow_is_flagged_and_exits_non_zero(day, tmp_path):
    grant = ('\n@id("analytics.client-orders") @ttl("300")\npermit (principal == Workload::"analytics", '
             'action == Action::"read_client_orders", resource == Resource::"oms/client-orders");\n')
    proposed = _proposed(tmp_path, extra=grant)
    report = impact(proposed, day, POLICY_DIR)
    flips = [f for f in report.flips if f.direction == DENY_TO_ALLOW]
    assert flips and all(f.resource == "oms/client-orders" and f.high_risk for f in flips)
    assert flips[0].proposed_policies == ("analytics.client-orders",) and report.high_risk
    result = runner.invoke(app, ["policy", "impact", "--proposed", str(proposed), "--replay", str(day),
                                 "--active", str(POLICY_DIR)])
    assert result.exit_code == 2, result.output
    assert "policy.impact.high_risk" in result.output


def test_recorded_signals_are_replayed(day, tmp_path):
    # the 1% of the day recorded under risk 75 (epoch 1) stays denied by guard.risk-elevated in both sets; with
    # the guard removed those submit_order requests flip deny -> allow
    proposed = tmp_path / "noguard"
    shutil.copytree(POLICY_DIR, proposed)
    text = (proposed / "guards.cedar").read_text()
    start = text.index('@id("guard.risk-elevated")')
    (proposed / "guards.cedar").write_text(text[:start] + text[text.index(";", start) + 1:])
    report = impact(proposed, day, POLICY_DIR)
    assert report.flips and all(f.direction == DENY_TO_ALLOW for f in report.flips)
    assert {f.active_policies for f in report.flips} == {("guard.risk-elevated",)}
    topology = Topology.load(POLICY_DIR / "floor.toml")  # high-risk exactly when a flipped resource is one
    assert report.high_risk == any(topology.is_high_risk(f.resource) for f in report.flips)
    assert report.assumed_signals == 0


def test_onboarding_impact_is_only_the_new_algo_and_not_high_risk(tmp_path):
    base = floor_with_new_algo(tmp_path / "base")
    audit = paper_trading_audit(base, tmp_path / "audit", seconds=10)
    suggest(audit, base, out=tmp_path / "out", principal=NEW_ALGO, grant_denied=True)
    report = impact(tmp_path / "out", audit, base)
    assert report.flips and all(f.principal.endswith("/" + NEW_ALGO) and f.direction == DENY_TO_ALLOW
                                for f in report.flips)
    assert not report.high_risk and report.rate > 0
