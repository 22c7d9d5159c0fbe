"""Cross-trust-domain handshakes through the response engine: the named one is contained, the anonymous one only alerted."""

from __future__ import annotations

from trustfabric.audit.events import Kind
from trustfabric.response.alerts import Category, Severity
from trustfabric.response.policy import ALERT_ONLY, QUARANTINE

from .conftest import make_rig

DEV_ID = "spiffe://dev.acme.example/algo/algo-momentum"


def _refused(rig, sid, principal: str, port: int):
    return rig.factory.event(Kind.HANDSHAKE_REFUSED, at=sid("settlement"), principal=principal,
                             reason="cert.wrong_trust_domain", decision="deny", trust_domain="prod.acme.example",
                             detail={"peer_address": f"10.1.2.3:{port}", "server": "settlement"})


def test_a_sibling_domain_certificate_is_a_high_alert_and_its_identity_is_contained(floor, sid):
    rig = make_rig(floor)
    [alert] = rig.engine.observe(_refused(rig, sid, DEV_ID, 40001))
    assert alert.category == Category.CROSS_TRUST_DOMAIN and alert.principal == DEV_ID
    assert alert.severity in (Severity.HIGH, Severity.CRITICAL) and "10.1.2.3:40001" in alert.summary
    assert rig.engine.actions[QUARANTINE] == 1 and rig.containment.is_quarantined(DEV_ID)


def test_an_unknown_ca_is_alerted_once_per_source_and_nobody_is_contained(floor, sid):
    rig = make_rig(floor)
    [alert] = rig.engine.observe(_refused(rig, sid, "", 40001))
    assert alert.category == Category.CROSS_TRUST_DOMAIN and alert.principal == ""
    assert alert.resource == "peer:10.1.2.3" and "10.1.2.3:40001" in alert.summary
    rig.clock.advance(1.0)
    assert rig.engine.observe(_refused(rig, sid, "", 40002)) == []  # the same source again
    assert rig.engine.actions[ALERT_ONLY] == 1 and rig.engine.actions[QUARANTINE] == 0
    assert rig.revoker.revoked == [] and rig.policy.calls == []
    [logged] = [e for e in rig.sink.of_kind(Kind.ALERT)]
    assert logged.reason == Category.CROSS_TRUST_DOMAIN
