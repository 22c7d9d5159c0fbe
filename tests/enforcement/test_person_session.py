"""People at the enforcement point: a desk terminal's certificate plus the person's MFA login token.

The session is the person's (``user:<name>``); every weaker combination is refused, at open
and at renewal, and containing the desk terminal closes the people's sessions opened from it.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest

from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.identity.revocation import RevocationSet
from trustfabric.policy.decision import Obligations

from .conftest import ALGO, RISK
from .fakes import make_peer, x5t

DESK = "spiffe://prod.acme/desk/desk-1"
ALICE = "user:alice"
_jti = itertools.count(1)
MFA = ("pwd", "otp")


@pytest.fixture
def desk_world(world):
    world.tables.rules[ALICE] = {("read", "risk/limits"): Obligations()}
    world.tables.rules[DESK] = {}
    return world


def person_token(world, peer, sub: str = ALICE, *, amr=MFA, auth_time: float | None = 0.0,
                 ttl: float = 120.0) -> str:
    now = world.clock.now()
    claims = {"sub": sub, "aud": RISK, "exp": now + ttl, "jti": f"person-{next(_jti)}",
              "cnf": {"x5t#S256": x5t(peer.cert_der)}}
    if amr is not None:
        claims["amr"] = list(amr)
    if auth_time is not None:
        claims["auth_time"] = now + auth_time
    return msgspec.json.encode(claims).decode()


def on_desk(world, desk_id: str = DESK):
    """A desk terminal's peer and the MFA session its person opened from it."""
    desk = make_peer(desk_id)
    return desk, world.pep.open_session(desk, person_token(world, desk))


def refusal(call) -> str:
    """The reason ``call()`` is refused with."""
    with pytest.raises(SessionRefused) as err:
        call()
    return err.value.reason


def test_mfa_token_from_a_desk_opens_the_persons_session(desk_world):
    _, session = on_desk(desk_world)
    assert session.principal == ALICE and session.peer_id == DESK
    assert desk_world.pep.check(session, "read", "risk/limits") == (True, E.ALLOW)
    assert desk_world.pep.check(session, "submit_order", "risk/orders")[0] is False


@pytest.mark.parametrize("weaker", [{"amr": None}, {"amr": ()}, {"auth_time": None}])
def test_person_token_without_mfa_evidence_refused(desk_world, weaker):
    desk = make_peer(DESK)
    token = person_token(desk_world, desk, **weaker)
    assert refusal(lambda: desk_world.pep.open_session(desk, token)) == E.SESSION_TOKEN_WRONG_SUBJECT
    assert desk_world.pep.sessions(ALICE) == []


def test_person_token_from_a_workload_certificate_refused(desk_world):
    algo = make_peer(ALGO)
    token = person_token(desk_world, algo)
    assert refusal(lambda: desk_world.pep.open_session(algo, token)) == E.SESSION_TOKEN_WRONG_SUBJECT


def test_person_renewal_needs_mfa_evidence_too(desk_world):
    desk, session = on_desk(desk_world)
    token = person_token(desk_world, desk, amr=None)
    assert refusal(lambda: desk_world.pep.renew(session, token)) == E.SESSION_TOKEN_WRONG_SUBJECT
    assert session.renewals == 0
    desk_world.pep.renew(session, person_token(desk_world, desk))
    assert session.renewals == 1 and session.principal == ALICE


def test_renewal_cannot_switch_person_or_fall_back_to_the_device(desk_world):
    desk, session = on_desk(desk_world)
    for token in (person_token(desk_world, desk, sub="user:mallory"),
                  desk_world.token(desk)):  # another person; the desk's own workload token
        assert refusal(lambda: desk_world.pep.renew(session, token)) == E.SESSION_TOKEN_WRONG_SUBJECT
    assert session.principal == ALICE and session.renewals == 0


def test_quarantined_desk_closes_the_people_on_it_and_refuses_them(desk_world):
    _, session = on_desk(desk_world)
    assert desk_world.pep.quarantine(DESK, "quarantine.response") == 1
    assert not session.open
    assert desk_world.pep.check(session, "read", "risk/limits") == (False, E.NO_SESSION)
    assert refusal(lambda: on_desk(desk_world)) == E.SESSION_PEER_QUARANTINED


def test_quarantined_person_refused_on_any_desk(desk_world):
    _, session = on_desk(desk_world)
    desk_world.pep.quarantine(ALICE, "quarantine.response")
    assert not session.open
    other_desk = "spiffe://prod.acme/desk/desk-2"
    assert refusal(lambda: on_desk(desk_world, other_desk)) == E.SESSION_PEER_QUARANTINED


def test_person_revoked_at_the_identity_provider_refused(desk_world):
    desk = make_peer(DESK)
    pep = EnforcementPoint(RISK, desk_world.tables, desk_world.tokens, clock=desk_world.clock,
                           is_revoked=lambda peer: str(peer.spiffe_id) == ALICE)
    token = person_token(desk_world, desk)
    assert refusal(lambda: pep.open_session(desk, token)) == E.SESSION_PEER_REVOKED
    assert pep.refused == 1 and pep.sessions() == []


class _VerifierBlindToBinding:
    """A token check that verifies nothing about the binding: the PEP must still refuse another device."""

    def verify(self, token, audience, presented_cert_der=None, now=None):
        return msgspec.json.decode(token)


def test_pep_itself_refuses_a_persons_token_from_another_device(desk_world):
    desk, other = make_peer(DESK), make_peer("spiffe://prod.acme/desk/desk-2")
    pep = EnforcementPoint(RISK, desk_world.tables, _VerifierBlindToBinding(), clock=desk_world.clock)
    token = person_token(desk_world, desk)
    assert refusal(lambda: pep.open_session(other, token)) == "token.cnf_mismatch"
    assert pep.open_session(desk, token).principal == ALICE


def test_revoked_token_key_closes_the_sessions_it_admitted_and_refuses_its_tokens(desk_world):
    """Sessions keep the kid of their token; a key revocation closes exactly those (claims carry ``kid``)."""
    desk = make_peer(DESK)
    pep = desk_world.pep

    def token_of(kid: str) -> str:
        claims = msgspec.json.decode(person_token(desk_world, desk))
        return msgspec.json.encode({**claims, "kid": kid}).decode()

    old = pep.open_session(desk, token_of("k-old"))
    new = pep.open_session(desk, token_of("k-new"))
    assert (old.kid, new.kid) == ("k-old", "k-new")
    assert pep.revoke_token_key("k-old") == 1
    assert not old.open and old.close_reason == "token.key_revoked" and new.open
    assert pep.check(old, "read", "risk/limits") == (False, E.NO_SESSION)
    assert refusal(lambda: pep.open_session(desk, token_of("k-old"))) == "token.key_revoked"
    assert refusal(lambda: pep.renew(new, token_of("k-old"))) == "token.key_revoked"


def test_a_token_key_revocation_pushed_by_the_revocation_set_closes_the_sessions(desk_world):
    desk = make_peer(DESK)
    pep = desk_world.pep
    revocations = RevocationSet()
    pep.attach_revocations(revocations)
    claims = msgspec.json.decode(person_token(desk_world, desk))
    session = pep.open_session(desk, msgspec.json.encode({**claims, "kid": "k-old"}).decode())
    revocations.revoke_token_key("k-old", desk_world.clock.now())
    assert not session.open and session.close_reason == "token.key_revoked"
