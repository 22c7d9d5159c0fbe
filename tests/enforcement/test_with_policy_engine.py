"""The enforcement point over the real policy engine (Cedar, the floor's policies, epochs on its bus)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.remote import LoopbackTableSource
from trustfabric.policy.engine import PolicyEngine

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.decision import QUARANTINE, RELEASE

from .fakes import FakePeer

ISSUER = "https://idp.prod.acme.example"
KEYS = KeyRing.generate(SYSTEM_CLOCK.now())
TOKENS = TokenIssuer(KEYS, ISSUER)
_CA: list[CertificateAuthority] = []
_CREDS: dict[str, object] = {}


def verifier() -> TokenVerifier:
    """The identity plane's real verifier: EdDSA signature, audience, cnf binding, replay."""
    return TokenVerifier(KEYS, ISSUER, replay_cache=ReplayCache())


def credentials(principal: str):
    """A real workload certificate for ``principal`` (one CA per test module)."""
    if principal not in _CREDS:
        if not _CA:
            _CA.append(CertificateAuthority.create(principal.split("/")[2], SYSTEM_CLOCK.now() - 60))
        _CREDS[principal] = issue_for_test(_CA[0], principal, SYSTEM_CLOCK.now() - 60)
    return _CREDS[principal]

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def engine():
    return PolicyEngine.from_dir(POLICIES, assume_healthy=True)


@pytest.fixture
def risk_pep(engine):
    audience = engine.topology.spiffe_id("pre-trade-risk")
    pep = EnforcementPoint(audience, engine, verifier())
    unsubscribe = engine.bus.subscribe(pep.on_invalidation)
    yield pep
    unsubscribe()
    pep.flush_decisions()
    assert pep.fail_open == 0


def _open(pep, principal):
    creds = credentials(str(principal))
    peer = FakePeer(str(creds.spiffe_id), creds.cert_der, creds.fingerprint_sha256, creds.serial)
    token = TOKENS.issue(str(principal), pep.audience, SYSTEM_CLOCK.now(), 60, cert_der=creds.cert_der)
    return pep.open_session(peer, token)


def test_floor_orders_enforced_with_cedar_obligations(engine, risk_pep):
    algo = engine.topology.spiffe_id("algo-momentum")
    s = _open(risk_pep, algo)
    assert risk_pep.check(s, "submit_order", "risk/orders", 10_000, "AAPL") == (True, E.ALLOW)
    assert risk_pep.check(s, "submit_order", "risk/orders", 10_000, "JPM") == (False, E.SYMBOL)
    assert risk_pep.check(s, "submit_order", "risk/orders", 10_000_000, "AAPL") == (False, E.NOTIONAL)
    assert risk_pep.check(s, "read", "settlement/ledger")[0] is False


def test_engine_bump_redecides_and_quarantine_closes(engine, risk_pep):
    algo = engine.topology.spiffe_id("algo-meanrev")
    s = _open(risk_pep, algo)
    epoch = s.table_epoch
    engine.bump([algo], "signal.posture", "test")
    assert risk_pep.check(s, "submit_order", "risk/orders", 1000, "JPM") == (True, E.ALLOW)
    assert s.table_epoch == epoch + 1
    engine.bump([algo], "quarantine.test", "test", QUARANTINE)
    assert not s.open
    with pytest.raises(SessionRefused) as exc:
        _open(risk_pep, algo)
    assert exc.value.reason == E.SESSION_PEER_QUARANTINED
    engine.bump([algo], "release.test", "test", RELEASE)


def test_unknown_principal_refused(risk_pep):
    with pytest.raises(SessionRefused) as exc:
        _open(risk_pep, "spiffe://prod.acme.example/rogue/unknown")
    assert exc.value.reason == "policy.request.unknown_principal"


@pytest.mark.slow
def test_real_engine_process_killed_fails_closed(engine):
    proc = subprocess.Popen([sys.executable, "-m", "trustfabric.enforcement.remote", "--policies", str(POLICIES),
                             "--assume-healthy"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        audience = engine.topology.spiffe_id("pre-trade-risk")
        pep = EnforcementPoint(audience, LoopbackTableSource("127.0.0.1", port, 0.5), verifier())
        s = _open(pep, engine.topology.spiffe_id("algo-momentum"))
        assert pep.check(s, "submit_order", "risk/orders", 10, "AAPL") == (True, E.ALLOW)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        with pytest.raises(SessionRefused) as exc:
            _open(pep, engine.topology.spiffe_id("algo-meanrev"))
        assert exc.value.reason == E.SESSION_ENGINE_UNREACHABLE
        pep.flush_decisions()
        assert pep.fail_open == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_engine_without_signal_source_denies_and_refuses_sessions() -> None:
    """A missing signal source never becomes an allow: decisions deny, tables are refused."""
    engine = PolicyEngine.from_dir(POLICIES)  # no signals, no assume_healthy opt-in
    algo = engine.topology.spiffe_id("algo-momentum")
    decision = engine.decide(algo, "submit_order", "risk/orders", {"notional": 10})
    assert decision.allowed is False
    assert any("signal" in e for e in decision.errors)
    healthy = PolicyEngine.from_dir(POLICIES, assume_healthy=True)
    assert healthy.decide(algo, "submit_order", "risk/orders", {"notional": 10}).allowed is True
    pep = EnforcementPoint(engine.topology.spiffe_id("pre-trade-risk"), engine, verifier())
    with pytest.raises(SessionRefused) as exc:
        _open(pep, algo)
    assert exc.value.reason == "signal.unavailable"
    assert pep.fail_open == 0
