"""The signals a decision saw are recorded: each table the control plane compiles is a policy.table event,
and a decision is joined to the compile of its principal and epoch when replayed."""

from __future__ import annotations

from tests.policy.lifecycle_fixtures import POLICY_DIR
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.plane import SOURCE, ControlPlane
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy import synthetic
from trustfabric.policy.recorded import read, signals_key
from trustfabric.policy.topology import Topology


def test_the_control_plane_records_each_compiled_tables_signals_once(tmp_path):
    plane = ControlPlane(tmp_path, clock=FakeClock(1_790_000_000.0))
    try:
        sink = MemorySink()
        plane.emitter = Emitter(SOURCE, sink, plane.clock)
        risk, algo = plane.topology.spiffe_id("pre-trade-risk"), plane.topology.spiffe_id("algo-meanrev")
        table = plane.table_for(risk, algo, plane.clock.now())
        plane.table_for(risk, algo, plane.clock.now())  # the cached table: not recorded again
        events = sink.of_kind(Kind.POLICY_TABLE)
        assert len(events) == 1 and events[0].principal == algo and events[0].epoch == table.epoch
        assert events[0].detail["signals"]["posture_ok"] is True and "risk_score" in events[0].detail["signals"]
        plane.hub.set_risk_score(algo, 75)  # a signal moves: the algo's epoch bumps, the next table is new
        later = plane.table_for(risk, algo, plane.clock.now())
        events = sink.of_kind(Kind.POLICY_TABLE)
        assert later.epoch > table.epoch and len(events) == 2 and events[-1].epoch == later.epoch
        assert events[-1].detail["signals"]["risk_score"] == 75
    finally:
        plane.close()


def test_a_decision_replays_with_the_signals_of_its_epochs_compile(tmp_path):
    topology = Topology.load(POLICY_DIR / "floor.toml")
    algo = topology.spiffe_id("algo-meanrev")
    t = 1_700_000_000_000_000_000
    events = [
        synthetic.table_compiled(1, t, algo, epoch=0),
        synthetic.table_compiled(2, t + 10, algo, epoch=1, risk_score=80),
        synthetic.decision(1, t + 20, algo, "submit_order", "risk/orders", True, "policy.allow", 100.0, "JPM"),
        synthetic.decision(2, t + 30, algo, "submit_order", "risk/orders", False, "policy.forbid", 100.0, "JPM",
                           epoch=1),
    ]
    synthetic.write(tmp_path / "audit", events)
    recorded = read(tmp_path / "audit")
    risks = sorted(dict(cls.signals)["risk_score"] for cls in recorded.classes)
    assert risks == [0, 80] and recorded.decisions == 2
    assert signals_key(None) is None


def test_the_token_service_records_an_allowed_connection_as_a_decision(tmp_path):
    plane = ControlPlane(tmp_path, clock=FakeClock(1_790_000_000.0))
    try:
        sink = MemorySink()
        plane.emitter = Emitter(SOURCE, sink, plane.clock)
        algo = plane.topology.spiffe_id("algo-meanrev")
        creds = issue_for_test(plane.identity.ca(plane.trust_domain), algo, plane.clock.now(), 600)
        plane.token_for(algo, creds.cert_der, "pre-trade-risk")
        [event] = [e for e in sink.of_kind(Kind.DECISION) if e.action == "connect"]
        assert (event.principal, event.resource, event.decision) == (algo, "svc/pre-trade-risk", "allow")
        assert event.policy_ids == ("algo-meanrev.connect",)
    finally:
        plane.close()
