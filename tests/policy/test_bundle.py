"""Signed policy bundles: every refusal (unsigned, tampered, under-signed, same approver twice, author approving,
stale TOTP, older than active, outside the signed history) and a passing activation that moves the epochs."""

from __future__ import annotations

import shutil

import msgspec
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.policy.lifecycle_fixtures import POLICY_DIR
from tests.people import cheap_hasher
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import OperatorAuthority, OperatorCredential, StoreKeys
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.tokens import KeyRing
from trustfabric.identity.users import UserDirectory, UserPolicy
from trustfabric.policy import bundle as B
from trustfabric.policy.bundle import PolicyVersions, SigningKeys
from trustfabric.policy.engine import PolicyEngine
from trustfabric.control.policy_lifecycle import PolicyLifecycle
from trustfabric.policy.context import StaticSignals

T0 = 1_790_000_000.0
PASSWORD = "correct horse battery"
ISSUER = "https://idp.acme.example"


class World:
    """An identity store with an author, two approvers and a security officer; a lifecycle over a live engine."""

    def __init__(self, tmp_path) -> None:
        self.clock = FakeClock(T0)
        self.sink = MemorySink()
        self.store = SqliteIdentityStore()
        self.emitter = Emitter("control-plane", self.sink, self.clock)
        self.users = UserDirectory(self.store, self.emitter, UserPolicy(max_failures=5, lockout_s=600),
                                   hasher=cheap_hasher())
        KeyRing(self.store).ensure(T0)
        self.engine = PolicyEngine.from_dir(POLICY_DIR, signals=StaticSignals(), clock=self.clock)
        self.pushed: list = []
        self.engine.bus.subscribe(self.pushed.append)
        authority = OperatorAuthority(self.users, self.emitter, self.engine, keys=StoreKeys(self.store), issuer=ISSUER)
        self.versions = PolicyVersions(tmp_path / "home" / "policy")
        self.life = PolicyLifecycle(self.versions, SigningKeys(self.store), authority, self.emitter,
                                    tmp_path / "home" / "operator" / "policy-signing")
        self.totp: dict[str, pyotp.TOTP] = {}
        for name, role in (("erin", "developer"), ("bob", "risk_officer"), ("carol", "risk_officer"),
                           ("dave", "security_officer"), ("alice", "trader")):
            self.totp[name] = pyotp.TOTP(self.users.enrol(name, role, PASSWORD, T0).totp_secret)

    def person(self, name: str, *, code_at: float | None = None) -> OperatorCredential:
        self.clock.advance(30)  # a fresh TOTP step for every request
        code = self.totp[name].at(self.clock.now() if code_at is None else code_at)
        return OperatorCredential(user=name, password=PASSWORD, totp=code)

    def now(self) -> float:
        return self.clock.now()

    def authored(self, directory=POLICY_DIR, version: int | None = None) -> B.Bundle:
        cred = self.person("erin")
        return self.life.author(directory, cred, now=self.now(), reason="onboard", version=version)

    def signed(self, bundle: B.Bundle, *names: str) -> B.Bundle:
        for name in names:
            cred = self.person(name)
            bundle = self.life.sign(bundle, cred, now=self.now(), reason="reviewed")
        return bundle

    def activate(self, bundle: B.Bundle, **kw):
        cred = self.person("dave")
        return self.life.activate(bundle, cred, now=self.now(), reason="change 42", **kw)


@pytest.fixture()
def world(tmp_path):
    return World(tmp_path)


def _refused(fn, reason: str) -> TrustFabricError:
    with pytest.raises(TrustFabricError) as exc:
        fn()
    assert exc.value.reason == reason, exc.value
    return exc.value


def _denials(world: World, action: str) -> list:
    return [e for e in world.sink.of_kind(Kind.ADMIN_ACTION) if e.action == action and e.decision == "deny"]


def test_a_bundle_signed_by_two_approvers_activates_bumps_epochs_and_is_audited(world):
    before = world.engine.global_epoch
    bundle = world.signed(world.authored(), "bob", "carol")
    done = world.activate(bundle, engine=world.engine)
    assert world.versions.active_version() == 1 and done.global_epoch == before + 1
    assert world.pushed and world.pushed[-1].principal is None and world.pushed[-1].global_epoch == before + 1
    assert world.engine.info.directory.endswith("versions/v1")
    events = {e.action: e for e in world.sink.of_kind(Kind.ADMIN_ACTION) if e.decision == "allow"}
    assert {"policy.bundle", "policy.sign", "policy.activate"} <= set(events)
    assert events["policy.activate"].principal == "user:dave" and events["policy.activate"].detail["why"] == "change 42"
    assert world.versions.history()[-1]["approvers"] == ["bob", "carol"]


def test_unsigned_is_refused_and_the_active_version_keeps_serving(world):
    first = world.signed(world.authored(), "bob", "carol")
    world.activate(first, engine=world.engine)
    digest = world.engine.info.digest
    _refused(lambda: world.activate(world.authored(), engine=world.engine), "policy.bundle.unsigned")
    assert world.versions.active_version() == 1 and world.engine.info.digest == digest
    assert _denials(world, "policy.activate")[-1].reason == "policy.bundle.unsigned"


def test_a_tampered_file_is_refused(world):
    bundle = world.signed(world.authored(), "bob", "carol")
    files = dict(bundle.files)
    files["guards.cedar"] = files["guards.cedar"].replace('@id("guard.quarantine")\nforbid', '@id("guard.quarantine")\npermit')
    _refused(lambda: world.activate(msgspec.structs.replace(bundle, files=files)), "policy.bundle.digest")
    # re-computing the digest in the manifest breaks every signature instead
    manifest = msgspec.structs.replace(bundle.manifest, files={n: B._sha256(t) for n, t in files.items()})
    forged = msgspec.structs.replace(bundle, files=files, manifest=manifest)
    _refused(lambda: world.activate(forged), "policy.bundle.signature")
    assert world.versions.active_version() == 0


def test_one_approver_is_not_enough(world):
    _refused(lambda: world.activate(world.signed(world.authored(), "bob")), "policy.bundle.under_signed")


def test_the_same_person_twice_is_refused_at_signing_and_at_activation(world):
    once = world.signed(world.authored(), "bob")
    _refused(lambda: world.signed(once, "bob"), "policy.bundle.same_approver")
    twice = msgspec.structs.replace(once, signatures=once.signatures + (once.signatures[-1],))
    _refused(lambda: world.activate(twice), "policy.bundle.same_approver")


def test_the_author_may_not_approve(world):
    bundle = world.authored()  # erin is a developer: she may author, and may not sign (Cedar)
    _refused(lambda: world.signed(bundle, "erin"), "operator.not_permitted")
    by_dave = world.life.author(POLICY_DIR, world.person("dave"), now=world.now())  # dave may author and sign
    _refused(lambda: world.signed(by_dave, "dave"), "policy.bundle.author_signed")
    # a forged approver signature by the author, with the author's own registered key
    key = B.personal_key(world.life.key_dir, "dave", create=False)
    forged = msgspec.structs.replace(by_dave, signatures=by_dave.signatures + (B.Signature(
        signer="dave", role=B.APPROVER, key_id=B.key_id(key.public_key()), signed_at=world.now(),
        signature=__import__("base64").b64encode(key.sign(B.signed_bytes(by_dave.manifest))).decode()),))
    forged = world.signed(forged, "bob")
    _refused(lambda: world.activate(forged), "policy.bundle.author_signed")


def test_a_stale_totp_is_refused(world):
    bundle = world.authored()
    old = world.clock.now() - 600
    _refused(lambda: world.life.sign(bundle, world.person("bob", code_at=old), now=world.now()), "user.bad_totp")
    assert bundle.approvers() == ()


def test_a_person_without_the_duty_may_not_sign(world):
    _refused(lambda: world.signed(world.authored(), "alice"), "operator.not_permitted")


def test_a_signature_by_an_unregistered_key_is_refused(world):
    bundle = world.signed(world.authored(), "bob")
    stranger = Ed25519PrivateKey.generate()
    forged = B.sign(bundle, "carol", B.APPROVER, stranger, world.now())
    _refused(lambda: world.activate(forged), "policy.bundle.signature")


def test_older_than_active_is_refused_and_rollback_is_explicit(world):
    v1 = world.signed(world.authored(), "bob", "carol")
    v2 = world.signed(world.authored(), "bob", "dave")
    assert (v1.version, v2.version) == (1, 1)  # nothing active yet: both are "the next"
    world.activate(v1, engine=world.engine)
    v2 = world.signed(world.authored(), "bob", "dave")
    world.activate(v2, engine=world.engine)
    _refused(lambda: world.activate(v1, engine=world.engine), "policy.bundle.stale")
    assert world.versions.active_version() == 2
    epoch = world.engine.global_epoch
    _refused(lambda: world.life.rollback(7, world.person("dave"), now=world.now(), engine=world.engine),
             "policy.bundle.not_in_history")
    done = world.life.rollback(None, world.person("dave"), now=world.now(), reason="bad fills", engine=world.engine)
    assert world.versions.active_version() == 1 and done.global_epoch == epoch + 1
    assert world.versions.history()[-1]["kind"] == "rollback"
    rolled = [e for e in world.sink.of_kind(Kind.ADMIN_ACTION) if e.action == "policy.rollback" and e.decision == "allow"]
    assert rolled[-1].principal == "user:dave" and rolled[-1].detail["why"] == "bad fills"
    _refused(lambda: world.life.rollback(None, world.person("bob"), now=world.now()), "operator.not_permitted")


def test_a_bundle_whose_tests_fail_is_refused(world, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(POLICY_DIR, broken)
    text = (broken / "workloads.cedar").read_text()
    start = text.index('@id("venue-b.fills")')
    (broken / "workloads.cedar").write_text(text[:start] + text[text.index(";", start) + 1:])
    bundle = world.signed(world.authored(broken), "bob", "carol")
    _refused(lambda: world.activate(bundle, engine=world.engine), "policy.bundle.tests_failed")
    assert world.versions.active_version() == 0


def test_a_bundle_naming_another_floor_is_refused_live(world, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(POLICY_DIR, other)
    manifest = other / "floor.toml"
    manifest.write_text(manifest.read_text().replace(
        "# ---------------------------------------------------------------- people",
        '[[service]]\nname = "analytics2"\nsegment = "analytics"\n\n'
        "# ---------------------------------------------------------------- people", 1))  # one more service
    bundle = world.signed(world.authored(other), "bob", "carol")
    _refused(lambda: world.activate(bundle, engine=world.engine), "policy.bundle.topology_mismatch")


def test_malformed_documents_are_refused():
    for data in (b"", b"{}", b"[1]", b'{"manifest": 1}', b"x" * 100):
        _refused(lambda d=data: B.decode(d), "policy.bundle.malformed")


def test_an_altered_store_is_refused_at_start(world):
    world.activate(world.signed(world.authored(), "bob", "carol"))
    keys = SigningKeys(world.store).all()
    assert world.versions.active_bundle(keys)[0].version == 1
    path = world.versions.directory / "versions" / "v1" / "guards.cedar"
    path.write_text(path.read_text() + "\n// edited by hand\n")
    _refused(lambda: world.versions.active_bundle(keys), "policy.bundle.digest")
