"""Fakes for enforcement tests: a peer, a token verifier that really checks, a table source.

These are working in-memory implementations of the ports (no mocks): the token
verifier checks audience, expiry and the ``cnf.x5t#S256`` binding exactly as the
identity provider's verifier does, minus signatures; the table source compiles
tables from plain rules with epochs and publishes invalidations on a real bus.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass

import msgspec

from trustfabric.errors import IdentityError
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.decision import (
    EPOCH,
    REASON_ALLOW, REASON_FORBID, Decision, DecisionTable, Invalidation, Obligations,
)

_jti = itertools.count(1)


@dataclass(frozen=True)
class FakePeer:
    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int = 1


def make_peer(spiffe_id: str, seed: bytes | None = None, serial: int = 1) -> FakePeer:
    cert = b"CERT:" + (seed or spiffe_id.encode())
    return FakePeer(spiffe_id, cert, hashlib.sha256(cert).hexdigest(), serial)


def x5t(cert_der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode()


def make_token(sub: str, aud: str, cert_der: bytes, exp: float, jti: str | None = None) -> str:
    claims = {"sub": sub, "aud": aud, "exp": exp, "jti": jti or f"jti-{next(_jti)}",
              "cnf": {"x5t#S256": x5t(cert_der)}}
    return msgspec.json.encode(claims).decode()


class FakeTokenVerifier:
    """Checks audience, expiry and certificate binding of JSON 'tokens'; raises IdentityError."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def verify(self, token, audience, presented_cert_der=None, now=None):
        self.calls += 1
        if self.down:
            raise ConnectionError("identity provider unreachable")
        try:
            claims = msgspec.json.decode(token)
        except msgspec.DecodeError:
            raise IdentityError("not a token", reason="token.malformed") from None
        if claims.get("aud") != audience:
            raise IdentityError("wrong audience", reason="token.wrong_audience")
        if presented_cert_der is None or claims.get("cnf", {}).get("x5t#S256") != x5t(presented_cert_der):
            raise IdentityError("bound to another certificate", reason="token.cnf_mismatch")
        if now is not None and now >= claims["exp"]:
            raise IdentityError("expired", reason="token.expired")
        return claims


class RuleTableSource:
    """Compiles decision tables from plain rules; ``bump`` moves an epoch and publishes it."""

    def __init__(self, clock, rules: dict[str, dict[tuple[str, str], Obligations | None]],
                 ttl_s: float = 60.0, bus: InProcessBus | None = None) -> None:
        self.clock = clock
        self.rules = rules
        self.ttl_s = ttl_s
        self.bus = bus or InProcessBus()
        self.epochs: dict[str, int] = {}
        self.global_epoch = 1
        self.pulls = 0
        self.failure: Exception | None = None

    def decision_table(self, principal: str, now: float) -> DecisionTable:
        self.pulls += 1
        if self.failure is not None:
            raise self.failure
        epoch = self.epochs.setdefault(principal, 1)
        entries = {}
        for key, ob in self.rules.get(principal, {}).items():
            if ob is None:
                entries[key] = Decision(False, principal, key[0], key[1], REASON_FORBID, ("forbid-1",), epoch=epoch)
            else:
                entries[key] = Decision(True, principal, key[0], key[1], REASON_ALLOW, ("permit-1",),
                                        obligations=ob, epoch=epoch)
        return DecisionTable(principal, epoch, self.global_epoch, now, now + self.ttl_s, entries)

    def bump(self, principal: str, reason: str = "signal.changed", kind: str = EPOCH) -> None:
        self.epochs[principal] = self.epochs.get(principal, 1) + 1
        self.bus.publish(Invalidation(principal, self.epochs[principal], self.global_epoch, reason, kind=kind))
