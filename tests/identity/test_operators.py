"""Operators: sessions bound to a machine key, proofs per request, step-up, Cedar on the role - each refusal shown."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path

import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.people import cheap_hasher
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.errors import TrustFabricError
from trustfabric.control.plane import ControlPlane
from trustfabric.identity.operators import (
    ACTIONS,
    STEP_UP_ACTIONS,
    OperatorAuthority,
    OperatorCache,
    OperatorCredential,
    SessionIssuer,
    SessionPolicy,
    StoreKeys,
    make_proof,
)
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.tokens import KeyRing
from trustfabric.identity.users import UserDirectory, UserPolicy
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.policy.context import StaticSignals

from .conftest import T0

PASSWORD = "correct horse battery"
ISSUER = "https://idp.acme.example"
POLICIES = Topology.default_path().parent


class World:
    """One identity store, its people, key ring, session issuer and operator authority over real Cedar."""

    def __init__(self, signals: StaticSignals | None = None, sessions: SessionPolicy = SessionPolicy()) -> None:
        self.clock = FakeClock(T0)
        self.sink = MemorySink()
        self.store = SqliteIdentityStore()
        self.emitter = Emitter("identity", self.sink, self.clock)
        self.users = UserDirectory(self.store, self.emitter, UserPolicy(max_failures=3, lockout_s=600),
                                   hasher=cheap_hasher())
        self.keys = KeyRing(self.store)
        self.keys.ensure(T0)
        self.engine = PolicyEngine.from_dir(POLICIES, signals=signals or StaticSignals(), clock=self.clock)
        self.sessions = sessions
        self.issuer = SessionIssuer(self.users, self.keys, ISSUER, self.emitter, sessions)
        self.totp: dict[str, pyotp.TOTP] = {}
        self.machine = Ed25519PrivateKey.generate()

    def authority(self) -> OperatorAuthority:
        return OperatorAuthority(self.users, self.emitter, self.engine, keys=StoreKeys(self.store), issuer=ISSUER,
                                 sessions=self.sessions)

    def enrol(self, name: str, role: str) -> None:
        self.totp[name] = pyotp.TOTP(self.users.enrol(name, role, PASSWORD, self.clock.now()).totp_secret)

    def code(self, name: str) -> str:
        return self.totp[name].at(self.clock.now())

    def next_step(self) -> None:
        self.clock.advance(30)

    def login(self, name: str):
        return self.issuer.login(name, PASSWORD, self.code(name), self.machine.public_key(), self.clock.now())

    def request(self, session, action: str, target: str, *, key: Ed25519PrivateKey | None = None,
                step_up: str = "", proof_at: float | None = None) -> OperatorCredential:
        at = self.clock.now() if proof_at is None else proof_at
        proof = make_proof(key or self.machine, session.token, action, target, at)
        return OperatorCredential(user=session.user, session=session.token, proof=proof, step_up=step_up)

    def events(self, kind: str, action: str) -> list:
        return [e for e in self.sink.events if e.kind == kind and e.action == action]


@pytest.fixture
def world() -> World:
    w = World()
    w.enrol("dave", "security_officer")
    w.enrol("alice", "trader")
    return w


def refused(authority: OperatorAuthority, credential: OperatorCredential, action: str, target: str,
            now: float) -> str:
    with pytest.raises(TrustFabricError) as info:
        authority.authorize(credential, action, target, now)
    return info.value.reason


def test_a_session_authorizes_requests_without_password_and_audits_them(world) -> None:
    session = world.login("dave")
    world.clock.advance(5)
    operator = world.authority().authorize(world.request(session, "quarantine", "algo-meanrev"), "quarantine",
                                           "algo-meanrev", world.clock.now())
    assert (operator.principal, operator.role, operator.session_id) == ("user:dave", "security_officer",
                                                                        session.session_id)
    assert operator.policy_ids == ("security-officer.operate.containment",)
    opened = world.events(Kind.SESSION_OPEN, "operator.login")
    assert len(opened) == 1 and opened[0].principal == "user:dave" and opened[0].decision == "allow"
    allowed = world.events(Kind.ADMIN_ACTION, "operator.quarantine")
    assert [(e.principal, e.decision, e.detail["via"]) for e in allowed] == [("user:dave", "allow", "session")]


def test_the_session_token_is_bound_and_short_lived(world) -> None:
    session = world.login("dave")
    claims = json.loads(base64.urlsafe_b64decode(session.token.split(".")[1] + "=="))
    assert claims["aud"] == "operator" and claims["sub"] == "user:dave" and claims["role"] == "security_officer"
    assert claims["amr"] == ["pwd", "otp"] and claims["exp"] - claims["iat"] <= 8 * 3600
    assert claims["cnf"]["jwk"]["kty"] == "OKP" and "d" not in claims["cnf"]["jwk"]


def test_a_session_used_from_another_machine_key_is_refused(world) -> None:
    """A copied session file without the machine key: any other key's proof is refused."""
    session = world.login("dave")
    thief = Ed25519PrivateKey.generate()
    credential = world.request(session, "quarantine", "algo-meanrev", key=thief)
    assert refused(world.authority(), credential, "quarantine", "algo-meanrev", world.clock.now()) \
        == "operator.proof_invalid"
    bare = OperatorCredential(user="dave", session=session.token)
    assert refused(world.authority(), bare, "quarantine", "algo-meanrev", world.clock.now()) \
        == "operator.proof_missing"
    denied = world.events(Kind.ADMIN_ACTION, "operator.quarantine")
    assert [(e.principal, e.decision) for e in denied] == [("user:dave", "deny")] * 2


def test_a_replayed_proof_is_refused_even_by_another_authority_over_the_store(world) -> None:
    session = world.login("dave")
    credential = world.request(session, "quarantine", "algo-meanrev")
    world.authority().authorize(credential, "quarantine", "algo-meanrev", world.clock.now())
    world.clock.advance(1)
    assert refused(world.authority(), credential, "quarantine", "algo-meanrev", world.clock.now()) \
        == "operator.proof_replayed"


def test_a_proof_for_another_request_or_too_old_is_refused(world) -> None:
    session = world.login("dave")
    authority = world.authority()
    now = world.clock.now()
    assert refused(authority, world.request(session, "quarantine", "algo-meanrev"), "quarantine", "oms", now) \
        == "operator.proof_mismatch"
    assert refused(authority, world.request(session, "signal.risk", "oms"), "quarantine", "oms", now) \
        == "operator.proof_mismatch"
    other = world.login  # a second session of the same person: a proof made for the first does not fit
    world.next_step()
    second = other("dave")
    wrong = OperatorCredential(user="dave", session=second.token,
                               proof=make_proof(world.machine, session.token, "quarantine", "oms", world.clock.now()))
    assert refused(authority, wrong, "quarantine", "oms", world.clock.now()) == "operator.proof_mismatch"
    stale = world.request(second, "quarantine", "oms", proof_at=world.clock.now() - 120)
    assert refused(authority, stale, "quarantine", "oms", world.clock.now()) == "operator.proof_stale"


def test_an_expired_or_idle_session_is_refused(world) -> None:
    session = world.login("dave")
    world.clock.advance(2 * 3600)  # over the idle limit (1 h)
    assert refused(world.authority(), world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_idle"
    busy = World(sessions=SessionPolicy(max_age_s=3600, idle_s=3600))
    busy.enrol("dave", "security_officer")
    session = busy.login("dave")
    for _ in range(3):  # used every 25 minutes, never idle, but the session ends at its exp
        busy.clock.advance(25 * 60)
        try:
            busy.authority().authorize(busy.request(session, "signal.risk", "oms"), "signal.risk", "oms",
                                       busy.clock.now())
        except TrustFabricError as exc:
            assert exc.reason == "operator.session_expired" and busy.clock.now() >= T0 + 3600
            break
    else:
        pytest.fail("the session outlived its exp")


def test_a_tampered_or_foreign_session_is_refused(world) -> None:
    world.enrol("mallory", "trader")
    world.next_step()
    session = world.login("mallory")
    header, payload, signature = session.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "security_officer"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = OperatorCredential(user="mallory", session=f"{header}.{forged_payload}.{signature}",
                                  proof=make_proof(world.machine, f"{header}.{forged_payload}.{signature}",
                                                   "quarantine", "oms", world.clock.now()))
    assert refused(world.authority(), tampered, "quarantine", "oms", world.clock.now()) \
        == "operator.session_invalid"
    elsewhere = World()  # another identity plane's session, for a person of the same name
    elsewhere.enrol("dave", "security_officer")
    foreign = elsewhere.login("dave")
    credential = OperatorCredential(user="dave", session=foreign.token,
                                    proof=make_proof(world.machine, foreign.token, "quarantine", "oms",
                                                     world.clock.now()))
    assert refused(world.authority(), credential, "quarantine", "oms", world.clock.now()) \
        == "operator.session_invalid"
    not_mine = world.request(session, "quarantine", "oms")
    assert refused(world.authority(), OperatorCredential(user="dave", session=not_mine.session,
                                                         proof=not_mine.proof),
                   "quarantine", "oms", world.clock.now()) == "operator.session_invalid"


@pytest.mark.parametrize("token", ["a.b", "a.b.c", "x" * 9000, "\ud800.e30.e30", "é.é.é",
                                   jwt.encode({"sub": "user:dave"}, "k" * 32, algorithm="HS256")])
def test_garbage_sessions_are_refused_not_crashed(world, token) -> None:
    credential = OperatorCredential(user="dave", session=token, proof="p.q.r")
    assert refused(world.authority(), credential, "quarantine", "oms", world.clock.now()) \
        == "operator.session_invalid"


def test_claims_that_would_crash_a_verifier_are_refused(world) -> None:
    """Huge numbers and lone surrogates in a validly signed session are refusals."""
    signing = world.keys.active
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}
    base = {"iss": ISSUER, "sub": "user:dave", "aud": "operator", "iat": int(T0), "exp": int(T0) + 60,
            "jti": "abc", "role": "security_officer", "auth_time": int(T0), "amr": ["pwd", "otp"], "cnf": {"jwk": jwk}}
    for change in ({"exp": 10**400}, {"iat": 1e308}, {"sub": "user:\ud800"}, {"jti": "\udcff"},
                   {"cnf": {"jwk": dict(jwk, x="\ud800")}}, {"amr": "otp"}, {"role": ["x"]}):
        payload = json.dumps(dict(base, **change)).encode()
        header = json.dumps({"alg": "EdDSA", "typ": "op+jwt", "kid": signing.kid}).encode()
        b64 = [base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in (header, payload)]
        signature = signing.private_key.sign(f"{b64[0]}.{b64[1]}".encode())
        token = f"{b64[0]}.{b64[1]}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
        credential = OperatorCredential(user="dave", session=token, proof="p.q.r")
        assert refused(world.authority(), credential, "quarantine", "oms", world.clock.now()) \
            == "operator.session_invalid", change


def test_bad_names_and_targets_are_refusals(world) -> None:
    authority = world.authority()
    for user in ("\ud800", "", "user:", "a b"):
        assert refused(authority, OperatorCredential(user=user, password=PASSWORD, totp="000000"), "quarantine",
                       "oms", T0) == "operator.unauthenticated"
    credential = OperatorCredential(user="dave", password=PASSWORD, totp=world.code("dave"))
    assert refused(authority, credential, "quarantine", "\ud800" * 5000, T0) == "operator.bad_target"
    assert refused(authority, credential, "floor.delete", "oms", T0) == "operator.unknown_action"
    assert refused(authority, credential, ["quarantine"], "oms", T0) == "operator.unknown_action"
    assert refused(authority, credential, "quarantine", None, T0) == "operator.bad_target"


def test_logout_ends_the_session_for_every_copy(world) -> None:
    session = world.login("dave")
    world.clock.advance(1)
    name = world.issuer.logout(session.token, make_proof(world.machine, session.token, "session.logout",
                                                         session.session_id, world.clock.now()), world.clock.now())
    assert name == "dave"
    assert refused(world.authority(), world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_ended"
    closed = world.events(Kind.SESSION_CLOSE, "operator.logout")
    assert [(e.principal, e.decision) for e in closed] == [("user:dave", "allow")]
    with pytest.raises(TrustFabricError) as info:  # a thief without the machine key cannot log the owner out
        world.next_step()
        again = world.login("dave")
        thief = Ed25519PrivateKey.generate()
        world.issuer.logout(again.token, make_proof(thief, again.token, "session.logout", again.session_id,
                                                    world.clock.now()), world.clock.now())
    assert info.value.reason == "operator.proof_invalid"


def test_wrong_totp_is_refused_and_counts_toward_lockout(world) -> None:
    wrong = "000000" if world.code("dave") != "000000" else "111111"
    for _ in range(2):
        with pytest.raises(TrustFabricError) as info:
            world.issuer.login("dave", PASSWORD, wrong, world.machine.public_key(), world.clock.now())
        assert info.value.reason == "user.bad_totp"
    assert refused(world.authority(), OperatorCredential(user="dave", password=PASSWORD, totp=wrong), "quarantine",
                   "oms", world.clock.now()) == "user.bad_totp"
    with pytest.raises(TrustFabricError) as info:  # locked now, even with the right code
        world.issuer.login("dave", PASSWORD, world.code("dave"), world.machine.public_key(), world.clock.now())
    assert info.value.reason == "user.locked"


def test_a_locked_person_s_session_stops_working(world) -> None:
    session = world.login("dave")
    wrong = "000000" if world.code("dave") != "000000" else "111111"
    for _ in range(3):
        with pytest.raises(TrustFabricError):
            world.users.step_up("dave", wrong, world.clock.now())
    assert refused(world.authority(), world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "user.locked"


def test_a_trader_may_not_quarantine(world) -> None:
    session = world.login("alice")
    assert refused(world.authority(), world.request(session, "quarantine", "algo-meanrev"), "quarantine",
                   "algo-meanrev", world.clock.now()) == "operator.not_permitted"
    world.next_step()  # a password login in the request is refused the same way
    credential = OperatorCredential(user="alice", password=PASSWORD, totp=world.code("alice"))
    assert refused(world.authority(), credential, "quarantine", "algo-meanrev", world.clock.now()) \
        == "operator.not_permitted"
    denied = world.events(Kind.ADMIN_ACTION, "operator.quarantine")
    assert [(e.principal, e.decision, e.reason) for e in denied] == [("user:alice", "deny",
                                                                      "operator.not_permitted")] * 2


def test_step_up_actions_need_a_totp_code_verified_with_the_request(world) -> None:
    session = world.login("dave")
    world.next_step()
    assert refused(world.authority(), world.request(session, "release", "algo-meanrev"), "release",
                   "algo-meanrev", world.clock.now()) == "user.step_up_required"
    wrong = "000000" if world.code("dave") != "000000" else "111111"
    assert refused(world.authority(), world.request(session, "release", "algo-meanrev", step_up=wrong), "release",
                   "algo-meanrev", world.clock.now()) == "user.bad_totp"
    operator = world.authority().authorize(world.request(session, "release", "algo-meanrev",
                                                         step_up=world.code("dave")),
                                           "release", "algo-meanrev", world.clock.now())
    assert operator.step_up_at == world.clock.now()
    # the same code again (same step): replay, so no second release on it
    assert refused(world.authority(), world.request(session, "release", "oms", step_up=world.code("dave")),
                   "release", "oms", world.clock.now()) == "user.totp_replay"


def test_the_step_up_list_is_the_cedar_guard_s(world) -> None:
    """Every action a security officer may take; exactly the step-up ones need a fresh TOTP in Cedar too."""
    for action, control in ACTIONS.items():
        fresh = world.engine.decide_operator("dave", ("security_officer",), f"operator.{action}", control,
                                             mfa=True, step_up_age_s=0, now=T0)
        assert fresh.allowed, action
        stale = world.engine.decide_operator("dave", ("security_officer",), f"operator.{action}", control,
                                             mfa=True, step_up_age_s=10**9, now=T0)
        assert stale.allowed == (action not in STEP_UP_ACTIONS), action
        if action in STEP_UP_ACTIONS:
            assert stale.policy_ids == ("guard.operator-step-up",)


def test_roles_come_from_the_identity_plane_not_the_floor_manifest(world) -> None:
    """zoe is in no floor.toml; the store makes her a security officer. dave's role change ends his session."""
    world.enrol("zoe", "security_officer")
    world.next_step()
    credential = OperatorCredential(user="zoe", password=PASSWORD, totp=world.code("zoe"))
    assert world.authority().authorize(credential, "signal.intel", "bundle", world.clock.now()).role \
        == "security_officer"
    session = world.login("dave")
    world.store.put_user(dataclasses.replace(world.store.get_user("dave"), role="trader"))
    assert refused(world.authority(), world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_stale"


def test_a_quarantined_officer_operates_nothing() -> None:
    w = World(signals=StaticSignals({"user:dave": {"quarantined": True}}))
    w.enrol("dave", "security_officer")
    session = w.login("dave")
    with pytest.raises(TrustFabricError) as info:
        w.authority().authorize(w.request(session, "quarantine", "oms"), "quarantine", "oms", w.clock.now())
    assert info.value.reason == "operator.not_permitted" and "guard.quarantine" in info.value.detail


def test_an_authority_without_policy_or_sessions_refuses(world) -> None:
    session = world.login("dave")
    bare = OperatorAuthority(world.users, world.emitter)
    assert refused(bare, world.request(session, "quarantine", "oms"), "quarantine", "oms", world.clock.now()) \
        == "operator.no_policy"
    no_sessions = OperatorAuthority(world.users, world.emitter, world.engine)
    assert refused(no_sessions, world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_invalid"


def test_a_rotated_key_ring_is_read_from_the_store(world) -> None:
    """A key created after the authority was built (another process rotated) still verifies its sessions."""
    authority = world.authority()
    KeyRing(world.store).rotate(world.clock.now())
    issuer = SessionIssuer(world.users, KeyRing(world.store), ISSUER, world.emitter)
    session = issuer.login("dave", PASSWORD, world.code("dave"), world.machine.public_key(), world.clock.now())
    assert authority.authorize(world.request(session, "quarantine", "oms"), "quarantine", "oms",
                               world.clock.now()).name == "dave"


def test_the_cache_keeps_its_files_private(tmp_path: Path) -> None:
    cache = OperatorCache(tmp_path / "operator")
    assert cache.machine_key() is None and cache.session() is None
    key = cache.machine_key(create=True)
    path = tmp_path / "operator" / OperatorCache.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cache.machine_key().public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    os.chmod(path, 0o644)
    with pytest.raises(TrustFabricError) as info:
        cache.machine_key()
    assert info.value.reason == "operator.cache_exposed"
    (tmp_path / "operator" / OperatorCache.SESSION_FILE).write_bytes(b"{not json")
    os.chmod(tmp_path / "operator" / OperatorCache.SESSION_FILE, 0o600)
    with pytest.raises(TrustFabricError) as info:
        cache.session()
    assert info.value.reason == "operator.cache_unreadable"


def test_a_cli_login_is_verified_by_the_running_control_plane(tmp_path) -> None:
    """The control plane started first; the login and a key rotation happen in another process's store
    connection; the plane's authority (its IdentityPlane, its live engine and hub) accepts the session, and
    its hub's quarantine of the person refuses them."""
    clock = FakeClock(T0)
    plane = ControlPlane(tmp_path, clock=clock)
    try:
        machine = Ed25519PrivateKey.generate()
        with IdentityPlane(tmp_path, clock=clock) as cli:
            totp = pyotp.TOTP(cli.users().enrol("dave", "security_officer", PASSWORD, T0).totp_secret)
            cli.keys.rotate(T0)
            session = SessionIssuer.for_plane(cli).login("dave", PASSWORD, totp.at(T0), machine.public_key(), T0)
        authority = OperatorAuthority.for_plane(plane.identity, plane.engine)
        clock.advance(2)
        proof = make_proof(machine, session.token, "quarantine", "algo-meanrev", clock.now())
        credential = OperatorCredential(user="dave", session=session.token, proof=proof)
        assert authority.authorize(credential, "quarantine", "algo-meanrev", clock.now()).principal == "user:dave"
        plane.hub.quarantine("user:dave", reason="test", origin="test")
        clock.advance(1)
        proof = make_proof(machine, session.token, "signal.risk", "oms", clock.now())
        with pytest.raises(TrustFabricError) as info:
            authority.authorize(OperatorCredential(user="dave", session=session.token, proof=proof), "signal.risk",
                                "oms", clock.now())
        assert info.value.reason == "operator.not_permitted" and "guard.quarantine" in info.value.detail
    finally:
        plane.close()


def test_the_engine_refuses_malformed_operator_requests(world) -> None:
    engine = world.engine
    ok = dict(mfa=True, step_up_age_s=0, now=T0)
    assert engine.decide_operator("dave", ("security_officer",), "operator.quarantine", "containment", **ok).allowed
    for args in [("dave", "security_officer", "operator.quarantine", "containment"),  # roles not a tuple
                 ("dave", ("security_officer",), "quarantine", "containment"),  # not an operator action
                 ("", ("security_officer",), "operator.quarantine", "containment"),
                 ("dave", ("security_officer",), "operator.quarantine", ""),
                 ("dave", (1,), "operator.quarantine", "containment")]:
        decision = engine.decide_operator(*args, **ok)
        assert not decision.allowed and decision.errors[0].startswith("policy.request.malformed"), args
    unknown_role = engine.decide_operator("dave", ("root",), "operator.quarantine", "containment", **ok)
    assert not unknown_role.allowed and unknown_role.reason == "policy.no_permit"
    blind = PolicyEngine.from_dir(POLICIES, clock=world.clock)  # no signal source: every read fails
    refused_blind = blind.decide_operator("dave", ("security_officer",), "operator.quarantine", "containment", **ok)
    assert not refused_blind.allowed and refused_blind.errors[0].startswith("signal.unavailable")
    empty = PolicyEngine(engine.topology, StaticSignals(), clock=world.clock)  # no policy set loaded
    assert empty.decide_operator("dave", ("security_officer",), "operator.quarantine", "containment",
                                 **ok).errors[0].startswith("policy.no_active_set")
    assert not engine.decide("algo-meanrev", "operator.quarantine", "containment").allowed
    assert not engine.decide("user:dave", "operator.quarantine", "containment", {"notional": 1}).allowed


def test_a_session_dies_with_its_signing_key(world) -> None:
    """Rotated out: the session lives through the key's retain window, not after; a revoked key ends it at once."""
    session = world.login("dave")
    world.keys.rotate(world.clock.now())
    world.clock.advance(10)
    assert world.authority().authorize(world.request(session, "quarantine", "oms"), "quarantine", "oms",
                                       world.clock.now()).name == "dave"
    world.clock.advance(world.keys.retain_s)
    assert refused(world.authority(), world.request(session, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_invalid"
    world.next_step()
    second = world.login("dave")
    world.keys.rotate(world.clock.now())
    world.keys.revoke(jwt.get_unverified_header(second.token)["kid"], world.clock.now())
    assert refused(world.authority(), world.request(second, "quarantine", "oms"), "quarantine", "oms",
                   world.clock.now()) == "operator.session_invalid"
