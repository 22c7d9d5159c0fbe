"""Session open and renewal: the rigorous checks, each shown refusing."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import Kind
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionClosed, SessionRefused
from trustfabric.policy.decision import QUARANTINE, RELEASE

from .conftest import ALGO, OMS, RISK
from .fakes import make_peer, make_token


def test_open_pulls_table_and_logs(world):
    peer, s = world.open()
    assert s.open and s.principal == ALGO
    assert ("submit_order", "risk/orders") in s.entries
    assert world.tables.pulls == 1
    [ev] = world.sink.of_kind(Kind.SESSION_OPEN)
    assert ev.principal == ALGO and ev.peer_fingerprint == peer.fingerprint_sha256


def test_token_for_another_audience_refused(world):
    peer = make_peer(ALGO)
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, world.token(peer, aud=OMS))
    assert exc.value.reason == "token.wrong_audience"
    assert world.sink.of_kind(Kind.SESSION_REFUSED)[0].reason == "token.wrong_audience"
    assert world.pep.sessions() == []


def test_token_bound_to_another_certificate_refused(world):
    peer = make_peer(ALGO)
    stolen = world.token(peer, cert=b"CERT:someone-else")
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, stolen)
    assert exc.value.reason == "token.cnf_mismatch"


def test_token_of_another_subject_refused(world):
    peer = make_peer(ALGO)
    token = make_token(OMS, RISK, peer.cert_der, world.clock.now() + 60)
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, token)
    assert exc.value.reason == E.SESSION_TOKEN_WRONG_SUBJECT


def test_replayed_token_refused(world):
    peer = make_peer(ALGO)
    token = world.token(peer)
    world.pep.open_session(peer, token)
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, token)
    assert exc.value.reason == E.SESSION_TOKEN_REPLAYED
    assert len(world.pep.sessions(ALGO)) == 1


def test_expired_token_refused_at_open(world):
    peer = make_peer(ALGO)
    token = world.token(peer, ttl=5)
    world.clock.advance(6)
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, token)
    assert exc.value.reason in ("token.expired", E.SESSION_TOKEN_EXPIRED)


def test_identity_provider_unreachable_refuses(world):
    world.tokens.down = True
    peer = make_peer(ALGO)
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, world.token(peer))
    assert exc.value.reason == E.SESSION_IDENTITY_UNREACHABLE


def test_engine_unreachable_without_cache_refuses(world):
    world.tables.failure = TimeoutError("engine timed out")
    with pytest.raises(SessionRefused) as exc:
        world.open()
    assert exc.value.reason == E.SESSION_ENGINE_UNREACHABLE


def test_engine_unreachable_opens_only_from_still_valid_cache(world):
    world.open()
    world.tables.failure = ConnectionRefusedError("engine down")
    _, s2 = world.open()  # the cached table is still valid: covered
    assert world.pep.check(s2, "read", "risk/limits") == (True, E.ALLOW)
    world.clock.advance(301)  # past the cached table's hard TTL
    with pytest.raises(SessionRefused) as exc:
        world.open()
    assert exc.value.reason == E.SESSION_ENGINE_UNREACHABLE
    assert world.pep.check(s2, "read", "risk/limits") == (False, E.ENGINE_UNREACHABLE)


def test_stale_table_from_engine_refused(world):
    world.open()
    world.tables.bump(ALGO)  # the PEP now knows epoch 2
    world.tables.epochs[ALGO] = 1  # an engine answering with an older epoch
    with pytest.raises(SessionRefused) as exc:
        world.open()
    assert exc.value.reason == E.SESSION_TABLE_INVALID


def test_renewal_keeps_session_and_rechecks(world):
    peer, s = world.open(ttl=30)
    world.clock.advance(25)
    world.pep.renew(s, world.token(peer, ttl=30))
    world.clock.advance(20)  # past the first token's exp
    assert world.pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    assert s.renewals == 1 and world.tables.pulls == 2
    assert len(world.sink.of_kind(Kind.SESSION_RENEW)) == 1


def test_renewal_with_bad_token_refused_and_old_deadline_holds(world):
    peer, s = world.open(ttl=30)
    with pytest.raises(SessionRefused):
        world.pep.renew(s, world.token(peer, aud=OMS))
    assert s.open
    world.clock.advance(31)
    assert world.pep.check(s, "read", "risk/limits") == (False, E.TOKEN_EXPIRED)


def test_renew_closed_session_refused(world):
    peer, s = world.open()
    world.pep.close(s, "session.closed_by_peer")
    with pytest.raises(SessionClosed):
        world.pep.renew(s, world.token(peer))
    assert world.sink.of_kind(Kind.SESSION_CLOSE)[0].reason == "session.closed_by_peer"


def test_quarantine_closes_all_sessions_and_refuses_next_handshake(world):
    dropped = []
    sessions = [world.open()[1] for _ in range(3)]
    for s in sessions:
        s.on_close = dropped.append
    _, other = world.open(OMS)
    world.tables.bump(ALGO, reason="quarantine.operator", kind=QUARANTINE)
    assert all(not s.open for s in sessions) and other.open
    assert dropped == ["quarantine.operator"] * 3
    with pytest.raises(SessionRefused) as exc:
        world.open()
    assert exc.value.reason == E.SESSION_PEER_QUARANTINED
    assert world.pep.check(sessions[0], "read", "risk/limits") == (False, E.NO_SESSION)
    world.tables.bump(ALGO, reason="release.operator", kind=RELEASE)
    assert world.open()[1].open


def test_the_invalidation_kind_decides_not_the_reason_text(world):
    # A reason is for people and the log: an epoch invalidation worded like a quarantine
    # closes nothing, and one worded like a release lifts nothing.
    _, s = world.open()
    world.tables.bump(ALGO, reason="quarantine.looks_like_one")
    assert s.open
    world.tables.bump(ALGO, reason="signal.changed", kind=QUARANTINE)
    assert not s.open
    world.tables.bump(ALGO, reason="release.looks_like_one")
    with pytest.raises(SessionRefused):
        world.open()


def test_revoked_certificate_closes_sessions_and_refuses(world):
    peer, s = world.open()
    assert world.pep.revoke_certificate(peer.fingerprint_sha256) == 1
    assert not s.open
    with pytest.raises(SessionRefused) as exc:
        world.pep.open_session(peer, world.token(peer))
    assert exc.value.reason == E.SESSION_PEER_REVOKED


def test_revocation_check_failure_refuses(world):
    from trustfabric.enforcement.pep import EnforcementPoint

    def broken(peer):
        raise OSError("revocation store unreachable")

    pep = EnforcementPoint(RISK, world.tables, world.tokens, clock=world.clock, is_revoked=broken)
    peer = make_peer(ALGO)
    with pytest.raises(SessionRefused) as exc:
        pep.open_session(peer, world.token(peer))
    assert exc.value.reason == E.SESSION_IDENTITY_UNREACHABLE
    assert pep.fail_open == 0
