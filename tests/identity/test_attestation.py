"""Attestation: promoted digest + fresh signed posture, or a refusal with a reason and an event."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.identity.attestation import AttestationRequest, AttestingIssuer, Releases, code_digest
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.certs import peer_spiffe_id, verify_chain
from trustfabric.identity.errors import IdentityError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.workload import new_key_and_csr
from trustfabric.signals.posture import (
    PROD_MINIMUM,
    HostKeyRegistry,
    PostureReport,
    SignedPostureReport,
    sign_report,
)

# A production host as its agent reports it: encrypted root, an EDR agent running, clock synchronised.
HEALTHY = dict(os="Linux", os_id="debian", os_version="12", kernel="6.1.0-18-amd64", encrypted_mounts=("/",),
               security_agents=("falcon-sensor",), listening_ports=(20001,), time_synced=True,
               time_source="adjtimex")

from .conftest import DEV, PROD, T0

ALGO = SpiffeId.workload(PROD, "algo", "momentum")
ARTEFACT = b"momentum-algo wheel v1.4.2"


class World:
    def __init__(self, prod_ca: CertificateAuthority, dev_ca: CertificateAuthority) -> None:
        self.clock = FakeClock(T0)
        self.sink = MemorySink()
        self.store = SqliteIdentityStore()
        self.releases = Releases(self.store)
        self.host_key = Ed25519PrivateKey.generate()
        self.registry = HostKeyRegistry()
        self.registry.register("host-7", self.host_key.public_key())
        self.issuer = AttestingIssuer({PROD: prod_ca, DEV: dev_ca}, self.releases, self.registry,
                                      Emitter("ca", self.sink, self.clock))
        self.releases.promote(PROD, code_digest(ARTEFACT), T0, name="momentum 1.4.2")

    def posture(self, **changes) -> SignedPostureReport:
        fields = dict(host="host-7", issued_at=T0 - 5, **HEALTHY)
        fields.update(changes)
        return sign_report(PostureReport(**fields), self.host_key)

    def request(self, sid=ALGO, digest=None, posture="default") -> AttestationRequest:
        _, csr = new_key_and_csr(sid)
        return AttestationRequest(sid, csr, digest or code_digest(ARTEFACT),
                                  self.posture() if posture == "default" else posture)


@pytest.fixture
def world(prod_ca, dev_ca) -> World:
    return World(prod_ca, dev_ca)


def test_promoted_release_on_healthy_host_gets_a_certificate(world: World, prod_ca) -> None:
    cert = world.issuer.issue(world.request(), T0)
    assert peer_spiffe_id(cert) == ALGO
    verify_chain(cert, prod_ca.bundle_pem(), T0, PROD)
    [event] = world.sink.of_kind(Kind.CERT_ISSUED)
    assert event.principal == str(ALGO) and event.detail["attested"] is True


def _refused(world: World, request: AttestationRequest) -> str:
    with pytest.raises(IdentityError) as info:
        world.issuer.issue(request, T0)
    [event] = world.sink.of_kind(Kind.CERT_REFUSED)
    assert event.reason == info.value.reason and event.decision == "deny"
    assert not world.sink.of_kind(Kind.CERT_ISSUED)
    return info.value.reason


def test_unpromoted_digest_refused(world: World) -> None:
    assert _refused(world, world.request(digest=code_digest(b"tampered build"))) == "attest.unpromoted_digest"


def test_release_promoted_to_dev_is_not_good_for_prod(world: World) -> None:
    other = code_digest(b"dev-only build")
    world.releases.promote(DEV, other, T0)
    assert _refused(world, world.request(digest=other)) == "attest.unpromoted_digest"


def test_malformed_digest_refused(world: World) -> None:
    assert _refused(world, world.request(digest="not-a-digest")) == "attest.bad_digest"


def test_stale_posture_refused(world: World) -> None:
    assert _refused(world, world.request(posture=world.posture(issued_at=T0 - 301))) == "posture.stale"


def test_unsigned_posture_refused(world: World) -> None:
    assert _refused(world, world.request(posture=None)) == "posture.unsigned"
    world.sink.events.clear()
    good = world.posture()
    stripped = SignedPostureReport(report=good.report, signature=b"", key_id=good.key_id)
    assert _refused(world, world.request(posture=stripped)) == "posture.unsigned"


def test_posture_signed_by_unknown_key_refused(world: World) -> None:
    rogue = sign_report(PostureReport(host="host-7", issued_at=T0, **HEALTHY), Ed25519PrivateKey.generate())
    assert _refused(world, world.request(posture=rogue)) == "posture.unknown_key"


def test_posture_below_minimum_refused(world: World) -> None:
    assert _refused(world, world.request(posture=world.posture(kernel="4.9.0-13-amd64"))) == "posture.kernel"


@pytest.mark.parametrize("changes, reason", [
    ({"encrypted_mounts": ()}, "posture.disk_encryption"),
    ({"security_agents": ()}, "posture.security_agent"),
    ({"time_synced": False}, "posture.time_sync"),
    ({"listening_ports": (22, 4444)}, "posture.listening_ports"),
    ({"os": "Darwin"}, "posture.os"),
])
def test_a_production_minimum_refuses_each_failing_check(world: World, prod_ca, dev_ca, changes, reason) -> None:
    strict = AttestingIssuer({PROD: prod_ca, DEV: dev_ca}, world.releases, world.registry,
                             Emitter("ca", world.sink, world.clock), minimums={PROD: PROD_MINIMUM})
    strict.issue(world.request(), T0)  # the healthy report passes the built-in production minimum
    world.sink.events.clear()
    world.issuer = strict
    assert _refused(world, world.request(posture=world.posture(**changes))) == reason


def test_csr_naming_another_identity_refused(world: World) -> None:
    _, csr = new_key_and_csr(SpiffeId.workload(PROD, "trading", "oms"))
    request = AttestationRequest(ALGO, csr, code_digest(ARTEFACT), world.posture())
    assert _refused(world, request) == "cert.csr"


def test_unknown_trust_domain_refused(world: World) -> None:
    assert _refused(world, world.request(sid=SpiffeId.workload("qa.acme.example", "a", "b"))) == "ca.unknown_domain"


def test_no_attest_bypass_is_logged(world: World) -> None:
    _, csr = new_key_and_csr(ALGO)
    cert = world.issuer.issue_unattested(csr, ALGO, T0, operator="alice")
    assert peer_spiffe_id(cert) == ALGO
    [admin] = world.sink.of_kind(Kind.ADMIN_ACTION)
    assert admin.action == "cert.issue_unattested" and admin.principal == "alice"
    [issued] = world.sink.of_kind(Kind.CERT_ISSUED)
    assert issued.detail["attested"] is False


def test_code_digest_of_file(tmp_path) -> None:
    path = tmp_path / "artefact.bin"
    path.write_bytes(ARTEFACT)
    assert code_digest(path) == code_digest(ARTEFACT)
