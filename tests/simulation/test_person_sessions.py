"""People at the enforcement point: a person's MFA login token, presented from a desk terminal's device
certificate, opens a session whose principal is ``user:<name>``; every other combination is refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint, is_desk_device
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.errors import TokenError
from trustfabric.identity.tokens import KeyRing, TokenIssuer, TokenVerifier
from trustfabric.identity.workload import issue_for_test

ISSUER = "https://identity.prod.acme.example"


@dataclass
class Peer:
    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int


def _peer(ca: CertificateAuthority, spiffe_id: str, now: float) -> Peer:
    creds = issue_for_test(ca, spiffe_id, now - 10, 600)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    return Peer(spiffe_id, der, cert.fingerprint(hashes.SHA256()).hex(), cert.serial_number)


@pytest.fixture
def world(engine, topology, clock):
    now = clock.now()
    keys = KeyRing.generate(now - 10)
    issuer = TokenIssuer(keys, ISSUER)
    verifier = TokenVerifier(keys, ISSUER, clock=clock)
    ca = CertificateAuthority.create(topology.trust_domain, now - 100)
    oms = topology.spiffe_id("oms")
    pep = EnforcementPoint(oms, engine, verifier, clock=clock)
    desk = _peer(ca, f"spiffe://{topology.trust_domain}/desk/desk-1", now)

    def person_token(name: str, aud: str = oms, amr=("pwd", "otp"), device: Peer = desk) -> str:
        return issuer.issue(f"user:{name}", aud, clock.now(), 300, cert_der=device.cert_der, amr=amr,
                            auth_time=clock.now())

    return pep, desk, person_token, issuer, ca, oms


def test_desk_device_ids():
    assert is_desk_device("spiffe://prod.acme.example/desk/desk-1")
    assert not is_desk_device("spiffe://prod.acme.example/algo/algo-meanrev")
    assert not is_desk_device("user:alice")
    assert not is_desk_device("spiffe://prod.acme.example/desk/")


def test_person_session_is_the_persons_and_gets_their_grants(world):
    pep, desk, person_token, *_ = world
    session = pep.open_session(desk, person_token("alice"))
    assert session.principal == "user:alice"
    assert pep.check(session, "read_positions", "oms/positions")[0] is True  # trader grant


def test_person_without_the_grant_is_denied_per_message(world):
    pep, desk, person_token, *_ = world
    session = pep.open_session(desk, person_token("erin"))  # a developer
    allowed, reason = pep.check(session, "read_positions", "oms/positions")
    assert allowed is False and reason


def test_person_token_from_a_workload_certificate_refused(world, topology, clock):
    pep, _desk, person_token, _issuer, ca, _oms = world
    algo = _peer(ca, topology.spiffe_id("algo-meanrev"), clock.now())
    with pytest.raises(SessionRefused) as err:
        pep.open_session(algo, person_token("alice"))  # bound to the desk, presented over the algo's certificate
    assert err.value.reason == "token.cnf_mismatch"
    with pytest.raises(TokenError) as info:  # nor is a person's token issued for a workload's certificate
        person_token("alice", device=algo)
    assert info.value.reason == "token.not_desk_device"


def test_the_same_persons_token_opens_a_session_from_its_own_desk_only(world, topology, clock):
    """The token binds to the desk device it was issued for (cnf x5t#S256): from a second desk, refused."""
    pep, desk, person_token, _issuer, ca, _oms = world
    other_desk = _peer(ca, f"spiffe://{topology.trust_domain}/desk/desk-2", clock.now())
    token = person_token("alice")
    with pytest.raises(SessionRefused) as err:
        pep.open_session(other_desk, token)
    assert err.value.reason == "token.cnf_mismatch"
    assert pep.open_session(desk, token).principal == "user:alice"
    with pytest.raises(SessionRefused) as err:  # a token of hers issued for desk-2 does not open at desk-1
        pep.open_session(desk, person_token("alice", device=other_desk))
    assert err.value.reason == "token.cnf_mismatch"
    assert pep.open_session(other_desk, person_token("alice", device=other_desk)).peer_id == other_desk.spiffe_id


def test_workload_token_from_a_desk_refused(world, topology, clock):
    pep, desk, _person_token, issuer, ca, oms = world
    algo = _peer(ca, topology.spiffe_id("risk-dashboard"), clock.now())
    stolen = issuer.issue(algo.spiffe_id, oms, clock.now(), 300, cert_der=algo.cert_der)
    with pytest.raises(SessionRefused):
        pep.open_session(desk, stolen)


def test_quarantined_person_refused(world):
    pep, desk, person_token, *_ = world
    first = pep.open_session(desk, person_token("alice"))
    pep.quarantine("user:alice", "quarantine.response")
    assert not first.open
    with pytest.raises(SessionRefused) as err:
        pep.open_session(desk, person_token("alice"))
    assert err.value.reason == E.SESSION_PEER_QUARANTINED


def test_person_token_for_another_service_refused(world, topology):
    pep, desk, person_token, *_ = world
    with pytest.raises(SessionRefused):
        pep.open_session(desk, person_token("alice", aud=topology.spiffe_id("settlement")))
