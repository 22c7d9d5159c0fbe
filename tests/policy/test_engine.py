"""Decisions, bad requests, policy loading and refusal, obligations and explanations."""

from __future__ import annotations

import shutil

import pytest

from trustfabric.audit.events import Kind
from trustfabric.policy.decision import REASON_ALLOW, REASON_ERROR, REASON_FORBID, REASON_NO_PERMIT
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import PolicyLoadError, RequestError
from trustfabric.policy.context import StaticSignals

from .conftest import POLICY_DIR

MEANREV = "algo-meanrev"


def test_algo_may_subscribe_to_its_streams_and_order_at_risk(engine):
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert d.allowed and d.reason == REASON_ALLOW and d.policy_ids == ("algo-meanrev.subscribe",)
    d = engine.decide(MEANREV, "submit_order", "risk/orders", {"notional": 1000})
    assert d.allowed
    assert d.obligations.max_rate == 100 and d.obligations.max_notional == 250000
    assert d.obligations.symbols == frozenset(engine.topology.services[MEANREV].symbols)
    assert d.obligations.ttl_s == 120


@pytest.mark.parametrize("action, resource", [
    ("subscribe", "md/AAPL"),          # the other algo's stream
    ("execute", "venue-a/orders"),     # straight to a venue
    ("route_order", "router/orders"),  # bypass risk
    ("settle", "settlement/ledger"),
    ("transfer_funds", "treasury/cash"),
    ("read_positions", "oms/positions"),
    ("connect", "svc/settlement"),
    ("publish", "md/JPM"),
])
def test_algo_is_refused_everything_else(engine, action, resource):
    d = engine.decide(MEANREV, action, resource)
    assert not d.allowed and d.reason == REASON_NO_PERMIT and d.policy_ids == ()


def test_only_the_router_reaches_venues_and_only_risk_routes(engine, topology):
    for svc in topology.services:
        assert engine.decide(svc, "execute", "venue-b/orders").allowed == (svc == "order-router")
        assert engine.decide(svc, "route_order", "router/orders").allowed == (svc == "pre-trade-risk")
        assert engine.decide(svc, "settle", "settlement/ledger").allowed == (svc == "oms")


@pytest.mark.parametrize("principal, action, resource, context, reason", [
    ("nobody", "subscribe", "md/JPM", None, "policy.request.unknown_principal"),
    ("spiffe://prod.evil.example/algo/algo-meanrev", "subscribe", "md/JPM", None, "policy.request.wrong_trust_domain"),
    (MEANREV, "teleport", "md/JPM", None, "policy.request.unknown_action"),
    (MEANREV, "subscribe", "md/NOPE", None, "policy.request.unknown_resource"),
    (MEANREV, "subscribe", "md/JPM", "notional=5", "policy.request.malformed_context"),
    (MEANREV, "subscribe", "md/JPM", {"quarantined": False}, "policy.request.malformed_context"),
    (MEANREV, "submit_order", "risk/orders", {"notional": -1}, "policy.request.malformed_context"),
    (MEANREV, "submit_order", "risk/orders", {"notional": float("nan")}, "policy.request.malformed_context"),
    (MEANREV, "submit_order", "risk/orders", {"notional": True}, "policy.request.malformed_context"),
    (MEANREV, "submit_order", "risk/orders", {"risk_reducing": "yes"}, "policy.request.malformed_context"),
    (MEANREV, "submit_order", "risk/orders", {"notional": 1, "pad": "x" * 10000}, "policy.request.oversized_context"),
    (None, "subscribe", "md/JPM", None, "policy.request.malformed"),
])
def test_bad_requests_are_denied_with_the_error_kept(engine, principal, action, resource, context, reason):
    d = engine.decide(principal, action, resource, context)
    assert d.allowed is False and d.reason == REASON_ERROR
    assert d.errors and d.errors[0].startswith(reason)


def test_caller_cannot_supply_signals(engine, hub):
    hub.quarantine(MEANREV)
    d = engine.decide(MEANREV, "subscribe", "md/JPM", {"quarantined": False})
    assert not d.allowed


def test_evaluation_error_is_a_deny_with_the_error_kept(engine, clock):
    """A forbid that errors at run time (Long overflow) must not let the permit through."""
    schema, sources = PolicyEngine.read_dir(POLICY_DIR)
    sources["z.cedar"] = ('@id("overflowing-guard")\nforbid (principal, action == Action::"submit_order", resource)'
                          ' when { context.notional * 1000000000 > 5 };')
    engine.load_sources(schema, sources)
    assert engine.decide(MEANREV, "submit_order", "risk/orders", {"notional": 0}).allowed
    d = engine.decide(MEANREV, "submit_order", "risk/orders", {"notional": 10**13})
    assert not d.allowed and d.reason == REASON_ERROR and d.errors
    assert "overflow" in " ".join(d.errors).lower()


def test_validator_refuses_unguarded_optional_attributes(engine):
    """A policy that could read a missing attribute is refused at load (validation), not discovered at run time."""
    schema, sources = PolicyEngine.read_dir(POLICY_DIR)
    schema = schema.replace("entity Resource in [StreamSet] { kind: String };",
                            "entity Resource in [StreamSet] { kind: String, tier?: Long };")
    sources["z.cedar"] = ('@id("needs-tier")\nforbid (principal, action == Action::"subscribe", resource)'
                          ' when { resource.tier > 1 };')
    with pytest.raises(PolicyLoadError) as info:
        engine.load_sources(schema, sources)
    assert info.value.reason == "policy.load.validation" and "tier" in info.value.errors[0]


def _copy_policies(tmp_path):
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def test_syntax_error_refuses_the_whole_set_and_keeps_the_last_good(engine, tmp_path, sink):
    bad = _copy_policies(tmp_path)
    (bad / "workloads.cedar").write_text((bad / "workloads.cedar").read_text() + "\npermit (principal, action")
    before = engine.info
    with pytest.raises(PolicyLoadError) as info:
        engine.load_dir(bad)
    assert info.value.reason == "policy.load.syntax"
    assert engine.info == before
    assert engine.decide(MEANREV, "subscribe", "md/JPM").allowed
    refused = sink.of_kind(Kind.POLICY_REFUSED)
    assert refused and refused[-1].reason == "policy.load.syntax"


def test_schema_violation_refuses_the_whole_set(engine, tmp_path):
    bad = _copy_policies(tmp_path)
    (bad / "extra.cedar").write_text('@id("bad")\npermit (principal, action, resource) when { context.no_such };')
    with pytest.raises(PolicyLoadError) as info:
        engine.load_dir(bad)
    assert info.value.reason == "policy.load.validation"
    assert any("bad" in e for e in info.value.errors)
    assert not engine.decide(MEANREV, "execute", "venue-a/orders").allowed


@pytest.mark.parametrize("text, reason", [
    ('permit (principal, action, resource);', "policy.load.annotation"),
    ('@id("x") @max_rate("fast")\npermit (principal, action, resource);', "policy.load.annotation"),
    ('@id("guard.posture")\npermit (principal, action, resource);', "policy.load.annotation"),
])
def test_bad_annotations_refuse_the_set(engine, tmp_path, text, reason):
    bad = _copy_policies(tmp_path)
    (bad / "extra.cedar").write_text(text)
    with pytest.raises(PolicyLoadError) as info:
        engine.load_dir(bad)
    assert info.value.reason == reason


def test_empty_or_failed_set_never_allows(topology, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(POLICY_DIR / "floor.cedarschema", empty)
    (empty / "none.cedar").write_text("// nothing\n")
    engine = PolicyEngine(topology, StaticSignals())
    with pytest.raises(PolicyLoadError) as info:
        engine.load_dir(empty)
    assert info.value.reason == "policy.load.empty"
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert not d.allowed and d.errors[0].startswith("policy.no_active_set")
    with pytest.raises(PolicyLoadError):
        engine.decision_table(MEANREV, 0.0)
    with pytest.raises(PolicyLoadError):
        engine.load_dir(tmp_path / "missing")


def test_unknown_principal_has_no_table(engine, clock):
    with pytest.raises(RequestError) as info:
        engine.decision_table("spiffe://prod.acme.example/algo/rogue", clock.now())
    assert info.value.reason == "policy.request.unknown_principal"


def test_a_failing_signal_source_denies(topology):
    class Broken(StaticSignals):
        def signals_for(self, principal, now):
            raise RuntimeError("feed down")

    engine = PolicyEngine(topology, Broken())
    engine.load_dir(POLICY_DIR)
    d = engine.decide(MEANREV, "subscribe", "md/JPM")
    assert not d.allowed and d.errors[0].startswith("signal.unavailable")
    with pytest.raises(RequestError):
        engine.decision_table(MEANREV, 0.0)


def test_person_needs_mfa_and_step_up(engine, hub, clock):
    assert engine.decide("user:alice", "submit_order", "risk/orders", {"notional": 10_000}).allowed
    big = engine.decide("user:alice", "submit_order", "risk/orders", {"notional": 2_000_000})
    assert not big.allowed and big.policy_ids == ("guard.person-notional-step-up",)
    halt = engine.decide("user:bob", "halt", "risk/kill-switch")
    assert not halt.allowed and "guard.person-step-up" in halt.policy_ids
    hub.record_authentication("bob", mfa=True, step_up_at=clock.now(), device_host="desk-1")
    assert engine.decide("user:bob", "halt", "risk/kill-switch").allowed
    clock.advance(301)
    assert not engine.decide("user:bob", "halt", "risk/kill-switch").allowed
    hub.record_authentication("alice", mfa=False, device_host="desk-1")
    d = engine.decide("user:alice", "read_positions", "oms/positions")
    assert not d.allowed and "guard.person-mfa" in d.policy_ids


def test_stepped_up_trader_gets_the_higher_cap(engine, hub, clock):
    assert engine.decide("user:alice", "submit_order", "risk/orders").obligations.max_notional == 1_000_000
    hub.record_authentication("alice", mfa=True, step_up_at=clock.now(), device_host="desk-1")
    d = engine.decide("user:alice", "submit_order", "risk/orders", {"notional": 2_000_000})
    assert d.allowed and d.obligations.max_notional == 5_000_000
    table = engine.decision_table("user:alice", clock.now())
    assert table.expires_at <= clock.now() + 300


def test_explain_names_policies_and_the_signals_that_mattered(engine, hub):
    hub.set_risk_score(MEANREV, 75)
    x = engine.explain(MEANREV, "submit_order", "risk/orders")
    assert not x.decision.allowed and x.decision.reason == REASON_FORBID
    assert x.policies[0][0] == "guard.risk-elevated" and x.policies[0][1] == "forbid"
    assert x.mattered == ("risk_score",)
    assert engine.explain(MEANREV, "subscribe", "md/JPM").decision.allowed


def test_table_entries_agree_with_single_decisions(engine, topology, clock):
    for svc in ("algo-momentum", "pre-trade-risk", "fix-gateway"):
        table = engine.decision_table(svc, clock.now())
        for (action, resource), entry in table.entries.items():
            single = engine.decide(svc, action, resource)
            assert (entry.allowed, entry.policy_ids, entry.obligations) == \
                (single.allowed, single.policy_ids, single.obligations), (svc, action, resource)


@pytest.mark.parametrize("signals", [
    {"quarantined": True}, {"risk_score": 75}, {"kill_switch": "REDUCING"}, {"market_open": False},
    {"mfa": False}, {"step_up_age_s": 10}, {"posture_ok": False},
])
def test_table_allow_set_equals_single_decisions_under_any_signals(topology, signals):
    """The scope pre-check and resource classes never change an allow/deny, whatever the signals."""
    engine = PolicyEngine(topology, StaticSignals({"*": signals}))
    engine.load_dir(POLICY_DIR)
    for key in topology.principal_keys():
        table = engine.decision_table(key, 0.0)
        for (action, resource), entry in table.entries.items():
            single = engine.decide(key, action, resource, now=0.0)
            assert entry.allowed == single.allowed, (key, action, resource)
            if entry.allowed:
                assert entry.obligations == single.obligations


def test_adding_a_person_bumps_only_that_person(engine, hub, topology, clock):
    got = []
    engine.bus.subscribe(got.append)
    new = topology.with_person("grace", ("trader",))
    hub.set_topology(new)
    engine.set_topology(new)
    assert [i.principal for i in got] == ["user:grace"]
    assert not engine.decide("user:grace", "read_positions", "oms/positions").allowed  # no MFA recorded yet
    hub.record_authentication("grace", mfa=True, device_host="desk-1")
    assert engine.decide("user:grace", "read_positions", "oms/positions").allowed
    with pytest.raises(Exception) as info:
        topology.with_person("mallory", ("root",))
    assert getattr(info.value, "reason", "") == "policy.topology.unknown"


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(principal=st.one_of(st.sampled_from(["algo-meanrev", "user:alice", "oms"]), st.text(max_size=30)),
       action=st.one_of(st.sampled_from(["submit_order", "subscribe", "execute"]), st.text(max_size=15)),
       resource=st.one_of(st.sampled_from(["risk/orders", "md/JPM", "venue-a/orders"]), st.text(max_size=15)),
       context=st.one_of(st.none(), _json, st.dictionaries(st.sampled_from(["notional", "risk_reducing", "x"]), _json)))
def test_fuzzed_requests_never_crash_and_never_allow_with_an_error(engine, principal, action, resource, context):
    d = engine.decide(principal, action, resource, context)
    assert isinstance(d.allowed, bool)
    if d.allowed:
        assert not d.errors and d.policy_ids
        assert (action, resource) in engine.topology.flows_of(engine.topology.resolve(principal))
