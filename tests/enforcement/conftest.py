"""Shared fixtures: a PEP for the risk service with a FakeClock and fake identity/policy ports."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import MemorySink
from trustfabric.clock import FakeClock
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.policy.decision import Obligations

from .fakes import FakeTokenVerifier, RuleTableSource, make_peer, make_token

RISK = "spiffe://prod.acme/risk/risk-engine"
ALGO = "spiffe://prod.acme/algo/momentum"
OMS = "spiffe://prod.acme/oms/oms"


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sink = MemorySink()
        self.tables = RuleTableSource(self.clock, {
            ALGO: {
                ("submit_order", "risk/orders"): Obligations(max_notional=1_000_000, symbols=frozenset({"AAPL", "MSFT"}),
                                                             max_rate=10, burst=5),
                ("read", "risk/limits"): Obligations(),
                ("cancel_all", "risk/orders"): None,  # an explicit forbid
            },
            OMS: {("read", "risk/limits"): Obligations()},
        }, ttl_s=300)
        self.tokens = FakeTokenVerifier()
        self.pep = EnforcementPoint(RISK, self.tables, self.tokens, clock=self.clock, sink=self.sink)
        self.tables.bus.subscribe(self.pep.on_invalidation)

    def token(self, peer, *, aud: str = RISK, ttl: float = 120.0, jti: str | None = None, cert: bytes | None = None):
        return make_token(peer.spiffe_id, aud, cert or peer.cert_der, self.clock.now() + ttl, jti)

    def open(self, principal: str = ALGO, **kw):
        peer = make_peer(principal)
        return peer, self.pep.open_session(peer, self.token(peer, **kw))


@pytest.fixture
def world():
    w = World()
    yield w
    w.pep.flush_decisions()
    assert w.pep.fail_open == 0
