"""Quarantine drives every protocol and measures ttd/ttc; release needs a fresh-MFA security officer."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import Kind
from trustfabric.response import errors as E
from trustfabric.response.containment import OfficerFacts
from trustfabric.response.errors import ReleaseRefused

from .conftest import make_rig
from .fakes import FakeEnforcementPoint, FakeRevoker


def _attack(rig, sid, delay_s: float = 0.004):
    algo = sid("algo-meanrev")
    ev = rig.factory.decision(algo, "settle", "settlement/ledger", False)
    rig.clock.advance(delay_s)  # detection happens a little after the attempt
    return algo, rig.engine.observe(ev)


def test_quarantine_on_first_denied_cross_segment_attempt_drives_every_protocol(rig, sid):
    algo, alerts = _attack(rig, sid)
    assert len(alerts) >= 1
    assert rig.revoker.revoked == [(algo, "quarantine.response")]
    assert rig.policy.calls == [(algo, True)]
    assert rig.closer.closed == [(algo, "quarantine.response")]
    assert all(algo in p.refusing for p in rig.points)
    assert all(not p.open(algo) for p in rig.points)
    incident = rig.containment.open_incident(algo)
    assert incident.contained and incident.pending_points == () and incident.errors == ()
    assert abs(incident.ttd_ms - 4.0) < 0.01 and incident.ttc_ms == 0.0
    [containment] = rig.sink.of_kind(Kind.CONTAINMENT)
    assert containment.principal == algo and containment.detail["ttd_ms"] == incident.ttd_ms
    assert containment.detail["ttc_ms"] == incident.ttc_ms and containment.detail["contained"] is True
    alert_events = rig.sink.of_kind(Kind.ALERT)
    assert alert_events and all("ttd_ms" in e.detail for e in alert_events)
    assert alert_events[0].detail["response"] == "quarantine"
    assert rig.store.incidents(principal=algo)[0].contained


def test_ttc_is_alert_to_last_enforcement_point_confirmation(floor, sid):
    rig = make_rig(floor, points=0)
    slow = [FakeEnforcementPoint(f"slow-{i}", rig.bus, rig.containment, rig.clock, delay_s=0.01 * (i + 1))
            for i in range(3)]
    algo, _ = _attack(rig, sid)
    incident = rig.containment.open_incident(algo)
    assert not incident.contained and set(incident.pending_points) == {"slow-0", "slow-1", "slow-2"}
    assert rig.sink.of_kind(Kind.CONTAINMENT) == []
    for p in slow:
        p.flush_acks()
    incident = rig.containment.open_incident(algo)
    assert incident.contained and abs(incident.ttc_ms - 30.0) < 0.01
    assert rig.sink.of_kind(Kind.CONTAINMENT)[0].detail["ttc_ms"] == incident.ttc_ms


def test_a_silent_enforcement_point_leaves_the_incident_uncontained(floor, sid):
    rig = make_rig(floor, points=1)
    FakeEnforcementPoint("mute", rig.bus, rig.containment, rig.clock, silent=True)
    algo, _ = _attack(rig, sid)
    assert not rig.containment.open_incident(algo).contained
    assert rig.containment.check_overdue() == []  # not yet overdue
    rig.clock.advance(10)
    [overdue] = rig.containment.check_overdue()
    assert overdue.contained is False and overdue.pending_points == ("mute",)
    [event] = rig.sink.of_kind(Kind.CONTAINMENT)
    assert event.reason == "containment.unconfirmed" and event.detail["contained"] is False


def test_a_failing_revoker_does_not_stop_the_quarantine(floor, sid):
    rig = make_rig(floor, revoker=FakeRevoker(fail=True))
    algo, _ = _attack(rig, sid)
    incident = rig.containment.open_incident(algo)
    assert rig.policy.calls == [(algo, True)] and all(algo in p.refusing for p in rig.points)
    assert incident.contained and incident.errors == ("revoke:ConnectionError",)


def test_quarantine_is_idempotent_and_later_alerts_join_the_incident(rig, sid):
    algo, _ = _attack(rig, sid)
    rig.engine.observe(rig.factory.decision(algo, "execute", "venue-a/orders", False))
    assert rig.policy.calls == [(algo, True)] and len(rig.revoker.revoked) == 1
    [incident] = rig.store.incidents(principal=algo)
    assert len(incident.alerts) >= 2


OFFICER = ("security_officer",)


def test_release_refused_for_non_officer_missing_stale_or_future_mfa(rig, sid):
    algo, _ = _attack(rig, sid)
    now = rig.clock.now()
    cases = [
        (OfficerFacts(name="alice", roles=("trader",), step_up_at=now - 5), E.RELEASE_NOT_OFFICER),
        (OfficerFacts(name="dave", roles=OFFICER, step_up_at=None), E.RELEASE_STEP_UP_REQUIRED),
        (OfficerFacts(name="dave", roles=OFFICER, step_up_at=now - 3600), E.RELEASE_STEP_UP_STALE),
        (OfficerFacts(name="dave", roles=OFFICER, step_up_at=now + 600), E.RELEASE_STEP_UP_STALE),
    ]
    for facts, reason in cases:
        with pytest.raises(ReleaseRefused) as exc:
            rig.containment.release(algo, facts)
        assert exc.value.reason == reason
    assert rig.containment.is_quarantined(algo)
    assert rig.policy.calls == [(algo, True)]
    refused = rig.sink.of_kind(Kind.RELEASE)
    assert [e.reason for e in refused] == [r for _, r in cases] and all(e.decision == "deny" for e in refused)


def test_release_of_a_principal_that_is_not_quarantined_is_refused(rig, sid):
    with pytest.raises(ReleaseRefused) as exc:
        rig.containment.release(sid("oms"), OfficerFacts(name="dave", roles=OFFICER,
                                                         step_up_at=rig.clock.now()))
    assert exc.value.reason == E.RELEASE_NOT_QUARANTINED


def test_fresh_officer_releases_and_the_principal_works_again(rig, sid):
    algo, _ = _attack(rig, sid)
    assert not rig.policy.decide(algo, "submit_order", "risk/orders")
    rig.clock.advance(60)
    incident = rig.containment.release(algo, OfficerFacts(name="dave", roles=OFFICER,
                                                          step_up_at=rig.clock.now() - 30))
    assert incident.released and incident.released_by == "dave"
    assert rig.policy.calls[-1] == (algo, False)
    assert rig.revoker.released == [(algo, "release.officer")]
    assert rig.policy.decide(algo, "submit_order", "risk/orders")
    assert all(p.open(algo) for p in rig.points)
    assert rig.policy.risk[algo] == (0.0, "response.containment")
    assert not rig.containment.is_quarantined(algo)
    assert rig.sink.of_kind(Kind.RELEASE)[-1].decision == "allow"
    # normal work after release raises nothing new
    assert rig.engine.observe(rig.factory.decision(algo, "submit_order", "risk/orders", True)) == []
    assert rig.policy.calls[-1] == (algo, False)
    # and a new attack opens a new incident
    rig.clock.advance(120)
    _attack(rig, sid)
    assert rig.containment.is_quarantined(algo) and len(rig.store.incidents(principal=algo)) == 2


def test_policy_control_failure_on_release_keeps_the_quarantine(rig, sid):
    algo, _ = _attack(rig, sid)

    def broken(principal, quarantined):
        raise ConnectionError("policy engine down")

    rig.containment.policy.set_quarantined = broken
    with pytest.raises(ConnectionError):
        rig.containment.release(algo, OfficerFacts(name="dave", roles=OFFICER, step_up_at=rig.clock.now()))
    assert rig.containment.is_quarantined(algo)


def test_manual_quarantine_records_operator_and_contains(rig, sid):
    oms = sid("oms")
    alert = rig.engine.quarantine_manually(oms, "dave", "suspicious")
    incident = rig.containment.open_incident(oms)
    assert incident.trigger == "manual:dave" and incident.contained and incident.alerts == (alert,)
    assert rig.policy.calls == [(oms, True)]


def test_open_incidents_survive_a_restart_in_sqlite_and_release_still_needs_an_officer(floor, sid, tmp_path):
    from trustfabric.response.containment import Containment
    from trustfabric.response.incidents import SqliteIncidentStore

    rig = make_rig(floor)
    store = SqliteIncidentStore(tmp_path / "response.db")
    rig.containment.store = store
    rig.engine.store = store
    algo, _ = _attack(rig, sid)
    store.close()

    store2 = SqliteIncidentStore(tmp_path / "response.db")
    again = Containment(FakeRevoker(), rig.policy, clock=rig.clock, store=store2)
    assert again.restore_open_incidents() == 1 and again.is_quarantined(algo)
    with pytest.raises(ReleaseRefused):
        again.release(algo, OfficerFacts(name="alice", roles=("trader",), step_up_at=rig.clock.now()))
    again.release(algo, OfficerFacts(name="dave", roles=OFFICER, step_up_at=rig.clock.now()))
    [incident] = store2.incidents(principal=algo)
    assert incident.released and incident.contained and incident.ttd_ms is not None
    assert store2.incidents(open_only=True) == []
    assert [a.principal for a, act in store2.alerts()] and all(act == "quarantine" for _, act in store2.alerts())
