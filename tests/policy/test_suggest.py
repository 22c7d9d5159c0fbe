"""``policy suggest``: exactly the observed flows, obligations sized with headroom, valid, tested; unused access."""

from __future__ import annotations

import random

import msgspec
import pytest

from tests.policy.lifecycle_fixtures import NEW_ALGO, floor_with_new_algo, paper_trading_audit
from trustfabric.audit.events import Kind
from trustfabric.policy import synthetic
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import RecordedError
from trustfabric.policy.suggest import SUGGESTED_FILE, suggest
from trustfabric.policy.testcases import run_cases
from trustfabric.policy.topology import Topology


@pytest.fixture()
def window(tmp_path):
    base = floor_with_new_algo(tmp_path / "base")
    return base, paper_trading_audit(base, tmp_path / "audit")


def test_onboarding_window_becomes_least_privilege_grants_that_validate_and_pass(window, tmp_path):
    base, audit = window
    s = suggest(audit, base, out=tmp_path / "out", principal=NEW_ALGO, grant_denied=True)
    granted = {(g.principal, a, r) for g in s.grants for a in g.actions for r in g.resources}
    assert granted == {(NEW_ALGO, "connect", "svc/market-data"), (NEW_ALGO, "connect", "svc/pre-trade-risk"),
                       (NEW_ALGO, "subscribe", "md/KO"), (NEW_ALGO, "subscribe", "md/PEP"),
                       (NEW_ALGO, "submit_order", "risk/orders"), (NEW_ALGO, "cancel_order", "risk/orders")}
    orders = next(g for g in s.grants if "submit_order" in g.actions)
    assert orders.symbols == ("KO", "PEP") and orders.segment == "algo"
    assert orders.max_notional >= orders.peak_notional * 1.5 and orders.max_rate >= orders.peak_rate * 1.5
    engine = PolicyEngine.from_dir(tmp_path / "out", assume_healthy=True)  # validates against the schema
    assert engine.decide(NEW_ALGO, "subscribe", "md/KO").allowed
    assert not engine.decide(NEW_ALGO, "subscribe", "md/AAPL").allowed  # never observed: not granted
    assert not engine.decide(NEW_ALGO, "connect", "svc/oms").allowed
    assert engine.decide(NEW_ALGO, "submit_order", "risk/orders").obligations.max_notional == orders.max_notional
    assert run_cases(tmp_path / "out").failed == 0 and s.tests_passed > 0
    topology = Topology.load(tmp_path / "out" / "floor.toml")  # the topology grants what the policies grant
    assert topology.flows_of(topology.resolve(NEW_ALGO)) == {(a, r) for _, a, r in granted}
    assert "segment algo" in (tmp_path / "out" / SUGGESTED_FILE).read_text()


def test_denied_flows_are_not_granted_unless_asked(window, tmp_path):
    base, audit = window
    s = suggest(audit, base, principal=NEW_ALGO)
    assert s.grants == [] and len(s.refused) == 6


def test_a_flow_a_guard_forbade_is_never_suggested(tmp_path):
    base = floor_with_new_algo(tmp_path / "base")
    topology = Topology.load(base / "floor.toml")
    events = [msgspec.structs.replace(e, reason="policy.forbid", policy_ids=("guard.quarantine",))
              if e.kind == Kind.DECISION and e.action == "submit_order" else e
              for e in synthetic.paper_trading(topology, NEW_ALGO, seconds=5, rng=random.Random(1))]
    synthetic.write(tmp_path / "audit", events)
    s = suggest(tmp_path / "audit", base, principal=NEW_ALGO, grant_denied=True)
    assert not any("submit_order" in g.actions for g in s.grants)
    assert any(a == "submit_order" and why == "policy.forbid" for _, a, _, why in s.refused)


def test_unused_access_lists_grants_never_used(window):
    base, audit = window
    s = suggest(audit, base, principal="algo-meanrev")
    unused = {(u.policy_id, u.action) for u in s.unused}
    assert ("algo-meanrev.orders", "submit_order") in unused and ("algo-meanrev.subscribe", "subscribe") in unused


def test_refuses_a_missing_log_and_a_bad_headroom(window, tmp_path):
    base, audit = window
    with pytest.raises(RecordedError) as missing:
        suggest(tmp_path / "nowhere", base)
    assert missing.value.reason == "policy.recorded.missing"
    with pytest.raises(RecordedError) as bad:
        suggest(audit, base, headroom=0.5)
    assert bad.value.reason == "policy.recorded.headroom"


def test_refuses_to_overwrite_a_directory(window, tmp_path):
    base, audit = window
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(RecordedError) as exc:
        suggest(audit, base, out=tmp_path / "busy", principal=NEW_ALGO, grant_denied=True)
    assert exc.value.reason == "policy.recorded.out_exists"
    assert (tmp_path / "busy" / "x").read_text() == "keep"
