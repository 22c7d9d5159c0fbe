"""People are contained too: a person reaching protected data or actions outside their role's grants.

The insider detector fires on the very event (a trader reading client orders, booking
into settlement); the default response policy quarantines ``user:<name>`` like a
workload (policy quarantine, epochs bumped, a ``quarantine...`` invalidation that closes
the person's sessions at every enforcement point, an incident with ttd and ttc), and
only a security officer with a fresh step-up releases it. Honest slips stay quiet.
"""

from __future__ import annotations

import pytest

from trustfabric.response.alerts import Category, Severity
from trustfabric.response.containment import OfficerFacts
from trustfabric.response.detectors import InsiderDetector
from trustfabric.response.errors import RELEASE_NOT_OFFICER, RELEASE_STEP_UP_STALE, ReleaseRefused
from trustfabric.response.policy import QUARANTINE, TIGHTEN

from .conftest import make_rig
from .fakes import normal_trading

ALICE = "user:alice"  # trader


@pytest.mark.parametrize("action, resource", [
    ("read_client_orders", "oms/client-orders"),
    ("settle", "settlement/ledger"),
    ("transfer_funds", "treasury/cash"),
    ("execute", "venue-a/orders"),
    ("route_order", "router/orders"),
])
def test_trader_reaching_protected_resource_is_a_high_insider_alert(floor, rig, action, resource):
    ev = rig.factory.decision(ALICE, action, resource, False)
    rig.clock.advance(0.001)
    alerts = InsiderDetector(floor).observe(ev, rig.clock.now())
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.category, a.severity, a.principal) == (Category.INSIDER_PROTECTED, Severity.HIGH, ALICE)
    assert a.confidence >= 0.8 and a.evidence[0].event_id == ev.event_id


def test_insider_detector_stays_quiet_on_grants_limits_workloads_and_unprotected(floor, rig, sid):
    det = InsiderDetector(floor)
    f = rig.factory
    quiet = [
        f.decision(ALICE, "read_positions", "oms/positions", True),  # a trader's grant
        f.decision(ALICE, "submit_order", "risk/orders", False, reason="enforcement.rate"),  # a limit
        f.decision(ALICE, "submit_order", "risk/orders", False, reason="guard.person-notional-step-up"),
        f.decision("user:bob", "read_client_orders", "oms/client-orders", True),  # a risk officer's grant
        f.decision("user:frank", "read_client_orders", "oms/client-orders", False, reason="guard.person-mfa"),
        f.decision(ALICE, "halt", "risk/kill-switch", False),  # not protected data: other detectors' business
        f.decision(sid("algo-meanrev"), "settle", "settlement/ledger", False),  # a workload: lateral detectors
    ]
    assert [det.observe(e, rig.clock.now()) for e in quiet] == [[]] * len(quiet)


def test_an_allowed_never_granted_read_is_critical(floor, rig):
    """Policy drift letting a trader read client orders is the worst case: critical."""
    alerts = InsiderDetector(floor).observe(
        rig.factory.decision(ALICE, "read_client_orders", "oms/client-orders", True), rig.clock.now())
    assert alerts and alerts[0].severity == Severity.CRITICAL


def test_trader_reading_client_orders_is_quarantined_everywhere_with_ttd_and_ttc(floor, rig):
    rig.engine.observe(rig.factory.decision(ALICE, "read_client_orders", "oms/client-orders", False))
    assert rig.containment.is_quarantined(ALICE)
    assert (ALICE, True) in rig.policy.calls  # decisions deny from now on (epochs bumped)
    assert all(ALICE in p.refusing for p in rig.points)  # the invalidation closed the sessions
    assert rig.revoker.revoked == []  # a person has no certificate to revoke
    incident = rig.containment.open_incident(ALICE)
    assert incident is not None and incident.contained
    assert incident.ttd_ms is not None and incident.ttc_ms is not None
    assert rig.engine.actions[QUARANTINE] >= 1


def test_person_release_needs_a_fresh_stepped_up_security_officer(floor, rig):
    rig.engine.observe(rig.factory.decision(ALICE, "settle", "settlement/ledger", False))
    now = rig.clock.now()
    with pytest.raises(ReleaseRefused) as err:  # a risk officer may not release
        rig.engine.release(ALICE, OfficerFacts(name="bob", roles=("risk_officer",), step_up_at=now), now)
    assert err.value.reason == RELEASE_NOT_OFFICER
    with pytest.raises(ReleaseRefused) as err:  # a stale step-up
        rig.engine.release(ALICE, OfficerFacts(name="dave", roles=("security_officer",), step_up_at=now - 900), now)
    assert err.value.reason == RELEASE_STEP_UP_STALE
    assert rig.containment.is_quarantined(ALICE)
    incident = rig.engine.release(ALICE, OfficerFacts(name="dave", roles=("security_officer",), step_up_at=now), now)
    assert incident.released and incident.released_by == "dave"
    assert not rig.containment.is_quarantined(ALICE) and rig.policy.calls[-1] == (ALICE, False)
    # a re-offence after the release is contained afresh
    rig.clock.advance(1.0)
    rig.engine.observe(rig.factory.decision(ALICE, "settle", "settlement/ledger", False))
    assert rig.containment.is_quarantined(ALICE)


def test_a_persons_denied_slip_on_unprotected_resource_does_not_quarantine(floor, rig):
    """A trader pressing halt (not theirs) is refused and noted, not contained."""
    rig.engine.observe(rig.factory.decision(ALICE, "halt", "risk/kill-switch", False))
    assert not rig.containment.is_quarantined(ALICE)


def test_normal_trading_with_people_raises_no_quarantine_and_no_high_alert(floor, sid):
    rig = make_rig(floor)
    events = normal_trading(floor, sid, rig.clock, rig.factory, seconds=600.0)
    assert any(e.principal == ALICE for e in events)
    raised = [a for e in events for a in rig.engine.observe(e)]
    assert rig.store.incidents() == []
    assert [a for a in raised if a.severity in (Severity.HIGH, Severity.CRITICAL)] == []
    assert rig.engine.actions[QUARANTINE] == 0 and rig.engine.actions[TIGHTEN] == 0
