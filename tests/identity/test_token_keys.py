"""Token signing keys have a lifecycle: active, retired for a stored window, then removed (private half destroyed);
a retired key can be revoked at once, and the revocation is pushed to whoever subscribes."""

from __future__ import annotations

import json
import sqlite3

import pytest

from trustfabric.audit.events import Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.identity.ca import CertificateAuthority, key_to_pem
from trustfabric.identity.errors import TokenError
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import SigningKeyRow, SqliteIdentityStore
from trustfabric.identity.tokens import DEFAULT_RETAIN_S, KeyRing, SigningKey, StaticJwks, TokenIssuer, TokenVerifier
from trustfabric.identity.workload import issue_for_test

from .conftest import PROD, T0

ISS = "https://idp.acme.example"
AUD = "spiffe://prod.acme.example/trading/oms"
ALGO = SpiffeId.workload(PROD, "algo", "momentum")
CREDS = issue_for_test(CertificateAuthority.create(PROD, T0 - 10), ALGO, T0 - 5)


def reason(call) -> str:
    with pytest.raises(TokenError) as info:
        call()
    return info.value.reason


def kids(ring: KeyRing, now: float | None = None) -> set[str]:
    return {k["kid"] for k in ring.jwks(now)["keys"]}


def test_retired_key_verifies_inside_its_window_and_is_refused_after() -> None:
    """The window is the key's own, stored with it: a ring that reloads the store enforces it too."""
    store, clock = SqliteIdentityStore(), FakeClock(T0)
    ring = KeyRing.generate(T0, store, clock=clock, retain_s=100)
    token = TokenIssuer(ring, ISS).issue(str(ALGO), AUD, T0, cert_der=CREDS.cert_der)  # valid until T0 + 300
    old = ring.active.kid
    clock.advance(60)
    ring.rotate(clock.now())  # retired at T0 + 60: trusted until T0 + 160
    verifier = TokenVerifier(ring, ISS, clock=clock)
    assert verifier.verify(token, AUD, CREDS.cert_der, now=T0 + 159).kid == old
    assert {r.retain_s for r in store.list_signing_keys() if r.kid == old} == {100}
    reloaded = KeyRing(store, clock=clock)  # the stored window, whatever this ring's default
    assert TokenVerifier(reloaded, ISS).verify(token, AUD, CREDS.cert_der, now=T0 + 159).kid == old
    assert reason(lambda: verifier.verify(token, AUD, CREDS.cert_der, now=T0 + 160)) == "token.unknown_kid"
    assert old not in kids(ring, T0 + 160) and old not in {r.kid for r in store.list_signing_keys()}
    clock.advance(200)
    assert reason(lambda: TokenVerifier(KeyRing(store, clock=clock), ISS).verify(
        token, AUD, CREDS.cert_der, now=T0 + 200)) == "token.unknown_kid"


def test_a_services_copy_of_the_jwks_ends_a_retired_key_at_its_window_too() -> None:
    """Services verify with a copy of the JWKS: the retired key's ``exp`` ends it there without a push."""
    clock = FakeClock(T0)
    ring = KeyRing.generate(T0, clock=clock, retain_s=100)
    token = TokenIssuer(ring, ISS).issue(str(ALGO), AUD, T0, cert_der=CREDS.cert_der)
    old = ring.active.kid
    ring.rotate(T0 + 60)
    copy = StaticJwks(json.loads(json.dumps(ring.jwks())))
    verifier = TokenVerifier(copy, ISS)
    assert verifier.verify(token, AUD, CREDS.cert_der, now=T0 + 159).kid == old
    assert reason(lambda: verifier.verify(token, AUD, CREDS.cert_der, now=T0 + 160)) == "token.unknown_kid"
    assert set(copy.verification_keys(T0 + 160)) == {ring.active.kid}


@pytest.mark.parametrize("exp", [-1, 1.5, True, "soon", 10**400])
def test_a_jwks_key_with_a_bad_exp_is_refused(exp) -> None:
    ring = KeyRing.generate(T0, clock=FakeClock(T0))
    document = ring.jwks()
    document["keys"][0]["exp"] = exp
    assert reason(lambda: StaticJwks(document)) == "token.bad_jwks"


def test_a_ring_from_the_store_loads_only_the_active_key_and_keys_within_their_window() -> None:
    """The old ring loaded every key ever created; now the expired ones are removed when found."""
    store, clock = SqliteIdentityStore(), FakeClock(T0)
    ring = KeyRing.generate(T0, store, clock=clock)
    first = ring.active.kid
    ring.rotate(T0 + 10)
    second = ring.active.kid
    clock.advance(DEFAULT_RETAIN_S + 11)  # the first key's window has passed
    third = ring.rotate(clock.now()).kid
    assert kids(KeyRing(store, clock=clock)) == {second, third}
    # a key retired 11 minutes ago, written by a ring that never pruned: gone at the next load
    stale = SigningKey.generate(clock.now() - 2000).retire(clock.now() - 660, 630)
    store.put_signing_key(stale.to_row())
    assert kids(KeyRing(store, clock=clock)) == {second, third}
    assert {r.kid for r in store.list_signing_keys()} == {second, third}
    assert {r.kid for r in store.list_removed_signing_keys()} == {first, stale.kid}


def test_a_removed_key_keeps_only_its_public_half_and_its_private_bytes_are_gone(tmp_path) -> None:
    clock = FakeClock(T0)
    store = SqliteIdentityStore(tmp_path / "identity.db")
    ring = KeyRing.generate(T0, store, clock=clock)
    old = ring.active
    private_body = b"".join(key_to_pem(old.private_key).splitlines()[1:-1])
    ring.rotate(T0 + 1)
    clock.advance(DEFAULT_RETAIN_S + 2)
    assert ring.prune(clock.now()) == [old.kid]
    removed = store.list_removed_signing_keys()
    assert [(r.kid, r.reason, r.retired_at) for r in removed] == [(old.kid, "key.window_passed", T0 + 1)]
    assert removed[0].public_pem == old.public_pem() and b"PRIVATE" not in removed[0].public_pem
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("identity.db*"))
    assert private_body not in on_disk.replace(b"\n", b"")


def test_revoke_removes_a_retired_key_at_once_and_refuses_the_active_one() -> None:
    store, clock = SqliteIdentityStore(), FakeClock(T0)
    ring = KeyRing.generate(T0, store, clock=clock)
    token = TokenIssuer(ring, ISS).issue(str(ALGO), AUD, T0, cert_der=CREDS.cert_der)
    old = ring.active.kid
    assert reason(lambda: ring.revoke(old, T0)) == "token.key_active"  # rotate first
    ring.rotate(T0 + 5)
    assert reason(lambda: ring.revoke("no-such-kid", T0 + 5)) == "token.unknown_kid"
    jwks_before = StaticJwks(ring.jwks())
    ring.revoke(old, T0 + 6)
    assert old not in kids(ring) and old not in {r.kid for r in store.list_signing_keys()}
    assert [r.reason for r in store.list_removed_signing_keys()] == ["key.revoked"]
    assert reason(lambda: TokenVerifier(ring, ISS).verify(token, AUD, CREDS.cert_der, now=T0 + 7)) \
        == "token.unknown_kid"
    # a service's copy of the JWKS drops it on the push
    assert TokenVerifier(jwks_before, ISS).verify(token, AUD, CREDS.cert_der, now=T0 + 7).kid == old
    assert jwks_before.revoke(old) and not jwks_before.revoke(old)
    assert reason(lambda: TokenVerifier(jwks_before, ISS).verify(token, AUD, CREDS.cert_der, now=T0 + 7)) \
        == "token.unknown_kid"


def test_identity_plane_revocation_is_recorded_pushed_and_audited(tmp_path) -> None:
    sink = MemorySink()
    clock = FakeClock(T0)
    with IdentityPlane(tmp_path, clock=clock, sink=sink) as plane:
        plane.init("acme.example")
        old = plane.keys.active.kid
        pushed = []
        plane.revocations.subscribe(pushed.append)
        assert reason(lambda: plane.revoke_token_key(old, "user:dave")) == "token.key_active"
        assert pushed == []
        plane.rotate_token_key("user:dave")
        entry = plane.revoke_token_key(old, "user:dave")
        assert (entry.kind, entry.value) == ("token_key", old) and pushed == [entry]
        assert plane.revocations.is_token_key_revoked(old)
        assert old not in kids(plane.keys)
    with IdentityPlane(tmp_path, clock=clock, sink=sink) as plane:  # persisted
        assert plane.revocations.is_token_key_revoked(old) and old not in kids(plane.keys)
    actions = [(e.action, e.decision, e.reason) for e in sink.of_kind(Kind.ADMIN_ACTION)
               if e.action.startswith("token")]
    assert actions == [("token.revoke_key", "deny", "token.key_active"), ("token.rotate_key", "allow", ""),
                       ("token.key_removed", "allow", "key.revoked"), ("token.revoke_key", "allow", "")]


def test_a_store_made_before_key_windows_is_migrated(tmp_path) -> None:
    """Retired keys of an old store get the window the old ring used in memory (630 s)."""
    path = tmp_path / "identity.db"
    key = SigningKey.generate(T0)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_pem BLOB NOT NULL, "
               "created_at REAL NOT NULL, retired_at REAL)")
    db.execute("INSERT INTO signing_keys VALUES (?, ?, ?, ?)", (key.kid, key.to_row().private_pem, T0, T0 + 10))
    db.commit()
    db.close()
    store = SqliteIdentityStore(path)
    assert store.list_signing_keys() == [SigningKeyRow(key.kid, key.to_row().private_pem, T0, T0 + 10, 630.0)]
    assert kids(KeyRing(store, clock=FakeClock(T0 + 600))) == {key.kid}
    assert kids(KeyRing(store, clock=FakeClock(T0 + 641))) == set()
    assert store.list_signing_keys() == []


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "630"])
def test_a_retain_window_must_be_a_finite_number(bad) -> None:
    assert reason(lambda: KeyRing(retain_s=bad)) == "token.bad_key"
