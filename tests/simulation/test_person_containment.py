"""A person contained by the real control plane: policy quarantine, sessions closed, every token refused.

The control plane (identity plane, policy engine on live signals, response engine) is
the real one, in process with a FakeClock; two real enforcement points of the OMS read
their tables from it - point A subscribed to its pushes, point B a replica that missed
them. A trader (``user:alice``, MFA login from a desk terminal) asks for the clients'
orders. That one denied decision is an insider alert; the control plane quarantines
``user:alice`` at once:

* point A's open session is closed by the ``quarantine...`` invalidation;
* tokens issued *before* the quarantine and never used are refused at every session
  open: at A (its quarantine state) and at B, which never saw the push, because the
  control plane serves no decision table for a quarantined principal - so the policy
  quarantine alone refuses the person's outstanding tokens; no per-user token
  revocation is needed;
* the incident carries ttd and ttc (A confirmed);
* release goes through ``ControlPlane.release_with_step_up`` (= ``ResponseEngine.release``):
  a wrong TOTP code or a risk officer is refused, a security officer with a fresh step-up
  releases, and alice works again - within her grants (client orders stay refused).
"""

from __future__ import annotations

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from trustfabric.audit.events import Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.plane import PRINCIPAL_QUARANTINED, ControlPlane
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.errors import TrustFabricError
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.decision import Invalidation
from trustfabric.response.alerts import Category
from trustfabric.response.errors import RELEASE_NOT_OFFICER, ReleaseRefused
from trustfabric.signals.host_agent import HostPostureAgent

ALICE = "user:alice"
DESK = "desk-1"


class Peer:
    def __init__(self, creds) -> None:
        cert = x509.load_pem_x509_certificate(creds.cert_pem)
        self.spiffe_id = ""
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint_sha256 = cert.fingerprint(hashes.SHA256()).hex()
        self.serial = cert.serial_number


class PlaneTables:
    """What an OMS enforcement point asks the control plane for (its table cut), in process."""

    def __init__(self, plane: ControlPlane, asking: str) -> None:
        self.plane = plane
        self.asking = asking

    def decision_table(self, principal: str, now: float):
        return self.plane.table_for(self.asking, principal, now)


@pytest.fixture()
def floor(tmp_path):
    clock = FakeClock(1_790_000_000.0)
    plane = ControlPlane(tmp_path, clock=clock)
    agent = HostPostureAgent(DESK)
    agent.register(plane.hub.host_keys)
    plane.identity.register_host(DESK, agent._key.public_key())
    plane.agents[DESK] = agent
    plane.refresh_posture()
    plane.hub.record_authentication("alice", mfa=True, step_up_at=None, device_host=DESK)
    oms = plane.spiffe_id("oms")
    verifier = plane.identity.token_verifier()
    sink_a, sink_b = MemorySink(), MemorySink()
    pep_a = EnforcementPoint(oms, PlaneTables(plane, oms), verifier, clock=clock, sink=sink_a, source="oms")
    pep_b = EnforcementPoint(oms, PlaneTables(plane, oms), verifier, clock=clock, sink=sink_b, source="oms-b")
    plane.register_points(["oms"])

    def on_push(item) -> None:  # what the OMS process does with a control push
        if isinstance(item, Invalidation):
            pep_a.on_invalidation(item)
            if item.principal and item.reason.startswith("quarantine") and not pep_a.sessions(item.principal):
                plane.acknowledge(item.principal, "oms")

    plane.subscribe(on_push)
    now = clock.now()
    desk_creds = issue_for_test(plane.identity.ca(plane.trust_domain),
                                f"spiffe://{plane.trust_domain}/desk/{DESK}", now - 5, 600)
    desk = Peer(desk_creds)
    desk.spiffe_id = f"spiffe://{plane.trust_domain}/desk/{DESK}"

    def token() -> str:
        t = clock.now()
        return plane.tokens.issue(ALICE, oms, t, 300, cert_der=desk_creds.cert_der, amr=("pwd", "otp"), auth_time=t)

    directory = plane.identity.users()
    totp = {}
    for name, role in (("dave", "security_officer"), ("bob", "risk_officer")):
        totp[name] = pyotp.TOTP(directory.enrol(name, role, "correct horse " + name, now).totp_secret)
    yield plane, clock, pep_a, pep_b, sink_a, desk, token, totp
    plane.close()


def _denied_events(pep, sink):
    pep.flush_decisions()
    return [e for e in sink.events if e.kind == Kind.DECISION and e.decision == "deny"]


def test_trader_reading_client_orders_is_contained_and_every_outstanding_token_refused(floor):
    plane, clock, pep_a, pep_b, sink_a, desk, token, _totp = floor
    session = pep_a.open_session(desk, token())
    assert session.principal == ALICE
    assert pep_a.check(session, "read_positions", "oms/positions")[0] is True  # a trader's grant
    outstanding_a, outstanding_b = token(), token()  # issued now, used only after the quarantine

    clock.advance(0.002)
    allowed, _ = pep_a.check(session, "read_client_orders", "oms/client-orders")
    assert allowed is False  # least privilege: traders never read client orders
    clock.advance(0.003)
    plane.observe(_denied_events(pep_a, sink_a))

    assert Category.INSIDER_PROTECTED in [a.category for a in plane.alerts]
    assert plane.is_quarantined(ALICE) and ALICE in plane.hub.quarantined()
    assert not session.open  # closed by the quarantine invalidation, at once
    with pytest.raises(SessionRefused) as err:
        pep_a.open_session(desk, outstanding_a)
    assert err.value.reason == E.SESSION_PEER_QUARANTINED
    with pytest.raises(SessionRefused) as err:  # B never saw the push: the control plane refuses the table
        pep_b.open_session(desk, outstanding_b)
    assert err.value.reason == PRINCIPAL_QUARANTINED
    incident = plane.containment.open_incident(ALICE)
    assert incident is not None and incident.contained
    assert incident.ttd_ms is not None and 0 <= incident.ttd_ms < 100
    assert incident.ttc_ms is not None and incident.ttc_ms >= 0


def test_person_release_only_by_a_stepped_up_security_officer_then_works_within_grants(floor):
    plane, clock, pep_a, pep_b, sink_a, desk, token, totp = floor
    plane.containment.quarantine(ALICE, trigger="manual:test")
    assert plane.is_quarantined(ALICE)
    now = clock.now()
    right = totp["dave"].at(now)
    wrong = "000000" if right != "000000" else "111111"
    with pytest.raises(TrustFabricError):
        plane.release_with_step_up(ALICE, "dave", wrong)
    with pytest.raises(ReleaseRefused) as err:
        plane.release_with_step_up(ALICE, "bob", totp["bob"].at(now))
    assert err.value.reason == RELEASE_NOT_OFFICER
    assert plane.is_quarantined(ALICE)
    with pytest.raises(SessionRefused):
        pep_b.open_session(desk, token())

    incident = plane.release_with_step_up(ALICE, "dave", right)
    assert incident.released and incident.released_by == "dave"
    assert not plane.is_quarantined(ALICE)
    session = pep_b.open_session(desk, token())
    assert pep_b.check(session, "read_positions", "oms/positions")[0] is True
    assert pep_b.check(session, "read_client_orders", "oms/client-orders")[0] is False
