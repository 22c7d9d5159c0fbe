"""The adapters drive the real identity revocation set, signal hub and policy engine epochs."""

from __future__ import annotations

import pytest

from trustfabric.clock import FakeClock
from trustfabric.identity.revocation import RevocationSet
from trustfabric.response.adapters import RevocationSetRevoker, SignalHubPolicyControl, SignalHubRiskSink
from trustfabric.response.containment import Containment, OfficerFacts
from trustfabric.response.errors import ReleaseRefused


@pytest.fixture()
def hub(topology):
    from trustfabric.signals.hub import SignalHub

    return SignalHub(topology, clock=FakeClock())


def test_revocation_set_quarantines_and_releases_the_spiffe_id(sid):
    revocations = RevocationSet()
    revoker = RevocationSetRevoker(revocations, FakeClock())
    algo = sid("algo-meanrev")
    revoker.revoke_spiffe_id(algo, "quarantine.response")
    assert revocations.is_revoked(12345, algo) and revocations.is_quarantined(algo)
    revoker.release_spiffe_id(algo, "release.officer")
    assert not revocations.is_quarantined(algo)


def test_containment_over_real_revocation_and_signal_hub(sid, hub):
    clock = FakeClock()
    revocations = RevocationSet()
    containment = Containment(RevocationSetRevoker(revocations, clock), SignalHubPolicyControl(hub),
                              risk=SignalHubRiskSink(hub), clock=clock)
    algo = sid("algo-meanrev")
    incident = containment.quarantine(algo)
    assert incident.contained and revocations.is_quarantined(algo) and algo in hub.quarantined()
    with pytest.raises(ReleaseRefused):
        containment.release(algo, OfficerFacts(name="erin", roles=("developer",), step_up_at=clock.now()))
    assert algo in hub.quarantined()
    containment.release(algo, OfficerFacts(name="dave", roles=("security_officer",), step_up_at=clock.now()))
    assert algo not in hub.quarantined() and not revocations.is_quarantined(algo)


def test_policy_control_bumps_with_a_quarantine_kind(sid, hub):
    bumps = []

    class Engine:
        def bump(self, principals, reason, source, kind):
            bumps.append((tuple(principals), reason, source, kind))

    control = SignalHubPolicyControl(hub, Engine())
    control.set_quarantined(sid("oms"), True)
    control.set_quarantined(sid("oms"), False)
    assert [(b[1], b[3]) for b in bumps] == [("quarantine.response", "quarantine"), ("release.officer", "release")]


def test_risk_sink_sends_whole_scores(sid, hub):
    SignalHubRiskSink(hub).set_risk(sid("oms"), 72.6, "response.baseline")
    assert hub.risk.get(sid("oms")) == 73


def test_risk_sink_unknown_principal_raises_a_signal_error(hub):
    from trustfabric.errors import SignalError

    with pytest.raises(SignalError):
        SignalHubRiskSink(hub).set_risk("spiffe://prod.acme.example/x/nobody", 50, "response.baseline")




def test_signal_hub_threat_intel_match_is_an_indicator_alert(sid, hub):
    from trustfabric.audit.events import Kind
    from trustfabric.response.detectors import IndicatorDetector

    bundle = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [{
        "type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
        "pattern": "[ipv4-addr:value = '203.0.113.66']", "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z"}]}
    hub.load_threat_intel(bundle)
    hub.observe(sid("analytics"), address="203.0.113.66")
    events = [e for e in hub.emitter.sink.events if e.kind == Kind.SIGNAL_CHANGED and e.principal]
    alerts = [a for e in events for a in IndicatorDetector().observe(e, 0.0)]
    assert [a.principal for a in alerts] == [sid("analytics")]
    quiet = [e for e in hub.emitter.sink.events if e.kind == Kind.SIGNAL_CHANGED and not e.principal]
    assert all(IndicatorDetector().observe(e, 0.0) == [] for e in quiet)


def test_confirm_refusals_acknowledges_only_when_the_point_holds_no_session(sid):
    from trustfabric.policy.bus import InProcessBus
    from trustfabric.policy.decision import QUARANTINE, RELEASE, Invalidation
    from trustfabric.response.adapters import confirm_refusals

    class Point:
        def __init__(self, keep: bool) -> None:
            self.keep = keep
            self.live = {sid("oms")}

        def on_invalidation(self, inv):
            if inv.reason.startswith("quarantine") and not self.keep:
                self.live.discard(inv.principal)

        def sessions(self, principal):
            return [principal] if principal in self.live else []

    clock = FakeClock()
    bus = InProcessBus()

    class Control:
        def set_quarantined(self, principal, quarantined):
            bus.publish(Invalidation(principal, 2, 1, "quarantine.response" if quarantined else "release.officer",
                                     kind=QUARANTINE if quarantined else RELEASE))

    containment = Containment(None, Control(), clock=clock)
    good, stuck = Point(keep=False), Point(keep=True)
    for name, point in (("good", good), ("stuck", stuck)):
        bus.subscribe(point.on_invalidation)
        bus.subscribe(confirm_refusals(containment, name, point))
    incident = containment.quarantine(sid("oms"))
    assert not incident.contained and incident.pending_points == ("good", "stuck")
    assert containment.open_incident(sid("oms")).contained is False
    clock.advance(10)
    [overdue] = containment.check_overdue()
    assert overdue.pending_points == ("stuck",)
