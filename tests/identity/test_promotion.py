"""The promotion gateway: provenance (in-toto / SLSA in DSSE) by the build identity, approvals, order, tests."""

from __future__ import annotations

import pyotp
import pytest

from tests.people import cheap_hasher
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.identity.attestation import Releases, code_digest
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.errors import IdentityError, UserError
from trustfabric.identity.operators import OperatorAuthority, OperatorCredential
from trustfabric.identity.promotion import (
    PolicyTestOutcome,
    PromotionGateway,
    check_direct_promotion,
    make_provenance,
    release_target,
)
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.users import UserDirectory
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.policy.context import StaticSignals

from .conftest import T0

FIRM = "acme.example"
PASSWORD = "correct horse battery"
ARTEFACT = b"momentum-algo 2.4.0 wheel bytes"
DIGEST = code_digest(ARTEFACT)


@pytest.fixture(scope="module")
def cas():
    return {f"{env}.{FIRM}": CertificateAuthority.create(f"{env}.{FIRM}", T0 - 600) for env in ("dev", "test", "prod")}


class World:
    def __init__(self, cas) -> None:
        self.clock = FakeClock(T0)
        self.sink = MemorySink()
        self.emitter = Emitter("identity", self.sink, self.clock)
        self.store = SqliteIdentityStore()
        self.users = UserDirectory(self.store, self.emitter,
                                   hasher=cheap_hasher())
        self.engine = PolicyEngine.from_dir(Topology.default_path().parent, signals=StaticSignals(), clock=self.clock)
        self.tests = PolicyTestOutcome(10, 0)
        self.authority = OperatorAuthority(self.users, self.emitter, self.engine)
        self.gateway = PromotionGateway(self.store, cas, self.emitter, FIRM, lambda: self.tests)
        self.totp: dict[str, pyotp.TOTP] = {}
        for name, role in (("erin", "developer"), ("fred", "developer"), ("dave", "security_officer"),
                           ("sam", "security_officer")):
            self.totp[name] = pyotp.TOTP(self.users.enrol(name, role, PASSWORD, T0).totp_secret)
        self.build = issue_for_test(cas[f"dev.{FIRM}"], f"spiffe://dev.{FIRM}/build/builder", T0 - 60)
        self.oms = issue_for_test(cas[f"dev.{FIRM}"], f"spiffe://dev.{FIRM}/oms/oms", T0 - 60)

    def cred(self, name: str, totp: str | None = None) -> OperatorCredential:
        return OperatorCredential(user=name, password=PASSWORD, totp=totp or self.totp[name].at(self.clock.now()))

    def step(self, step: str, name: str, digest: str, env: str = "", *args, totp: str | None = None):
        """What a command does: the authority decides the person (Cedar, fresh TOTP), then the gateway's rules."""
        now = self.clock.now()
        operator = self.authority.authorize(self.cred(name, totp), f"release.{step}", release_target(digest, env), now)
        if step == "submit":
            return self.gateway.submit(operator, digest, *args, now)
        return getattr(self.gateway, step)(operator, digest, env, now)

    def provenance(self, creds=None, digest: str = DIGEST) -> dict:
        creds = creds or self.build
        return make_provenance(digest, "momentum-algo", creds.private_key(), creds.certificate)

    def submit(self, envelope=None, creds=None):
        creds = creds or self.build
        return self.step("submit", "erin", DIGEST, "", envelope if envelope is not None else self.provenance(),
                         creds.cert_pem, "momentum-algo")

    def approve_and_promote(self, env: str, approvers=("fred", "sam")):
        for who in approvers:
            self.step("approve", who, DIGEST, env)
        row = self.step("promote", "dave", DIGEST, env)
        self.clock.advance(30)  # next TOTP step for everyone
        return row


@pytest.fixture
def world(cas):
    return World(cas)


def reason(exc_info) -> str:
    return exc_info.value.reason


def test_dev_test_prod_in_order_and_only_promoted_digests_attest(world):
    world.submit()
    with pytest.raises(IdentityError) as exc:
        world.step("promote", "dave", DIGEST, "test")
    assert reason(exc) == "release.out_of_order"
    world.clock.advance(30)
    for env in ("dev", "test", "prod"):
        world.approve_and_promote(env)
        assert Releases(world.store).is_promoted(f"{env}.{FIRM}", DIGEST)
    events = [(e.action, e.decision, e.trust_domain) for e in world.sink.events if e.kind == Kind.RELEASE]
    assert ("release.promote", "allow", f"prod.{FIRM}") in events
    assert ("release.promote", "deny", f"test.{FIRM}") in events


def test_refused_artefact_with_no_provenance(world):
    with pytest.raises(IdentityError) as exc:
        world.submit(envelope={})
    assert reason(exc) == "release.no_provenance"
    with pytest.raises(IdentityError) as exc:  # never submitted: nothing to approve or promote
        world.step("promote", "dave", DIGEST, "dev")
    assert reason(exc) == "release.no_provenance"


def test_refused_provenance_signed_by_a_non_build_identity(world):
    with pytest.raises(IdentityError) as exc:
        world.submit(envelope=world.provenance(world.oms), creds=world.oms)
    assert reason(exc) == "release.provenance_not_build"
    world.clock.advance(30)
    with pytest.raises(IdentityError) as exc:  # signed by another key than the build certificate's
        world.submit(envelope=world.provenance(world.oms), creds=world.build)
    assert reason(exc) == "release.provenance_bad_signature"


def test_refused_digest_mismatch_tampered_artefact(world):
    tampered = code_digest(ARTEFACT + b"backdoor")
    with pytest.raises(IdentityError) as exc:
        world.step("submit", "erin", tampered, "", world.provenance(), world.build.cert_pem, "x")
    assert reason(exc) == "release.digest_mismatch"


def test_refused_approval_by_the_author(world):
    world.submit()
    world.clock.advance(30)
    with pytest.raises(IdentityError) as exc:
        world.step("approve", "erin", DIGEST, "dev")
    assert reason(exc) == "release.author_approval"


def test_refused_single_approval_and_same_person_twice(world):
    world.submit()
    world.step("approve", "fred", DIGEST, "dev")
    world.clock.advance(30)
    with pytest.raises(IdentityError) as exc:
        world.step("approve", "fred", DIGEST, "dev")
    assert reason(exc) == "release.duplicate_approval"
    with pytest.raises(IdentityError) as exc:
        world.step("promote", "dave", DIGEST, "dev")
    assert reason(exc) == "release.approvals_missing"
    assert not Releases(world.store).is_promoted(f"dev.{FIRM}", DIGEST)


def test_refused_stale_totp(world):
    world.submit()
    world.clock.advance(300)
    stale = world.totp["fred"].at(world.clock.now() - 240)
    with pytest.raises(UserError) as exc:
        world.step("approve", "fred", DIGEST, "dev", totp=stale)
    assert reason(exc) == "user.bad_totp"


def test_refused_failing_policy_tests(world):
    world.submit()
    world.tests = PolicyTestOutcome(9, 1, "1 failed")
    with pytest.raises(IdentityError) as exc:
        world.approve_and_promote("dev")
    assert reason(exc) == "release.policy_tests_failed"


def test_direct_ca_promotion_reaches_dev_only():
    check_direct_promotion(f"dev.{FIRM}")
    for env in ("test", "prod"):
        with pytest.raises(IdentityError) as exc:
            check_direct_promotion(f"{env}.{FIRM}")
        assert reason(exc) == "release.gateway_required"
