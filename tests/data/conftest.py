"""A key service over the real floor policies, real certificates and the identity plane's real token verifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from tests.people import cheap_hasher
from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.data.keyservice import KeyService, Vault, key_service_id
from trustfabric.data.keystore import KekStore
from trustfabric.data.lifecycle import KeyLifecycle, four_eyes, lifecycle_target
from trustfabric.data.objects import ObjectStore
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.operators import OperatorAuthority, OperatorCredential
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier
from trustfabric.identity.users import UserDirectory
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.policy.context import StaticSignals

T0 = 1_790_000_000.0
FIRM = "acme.example"
ISSUER = "https://idp.acme.example"
PASSWORD = "correct horse battery"
POLICIES = Topology.default_path().parent


@dataclass(frozen=True)
class Peer:
    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int


class World:
    def __init__(self, tmp: Path, cas: dict[str, CertificateAuthority]) -> None:
        self.clock = FakeClock(T0)
        self.sink = MemorySink()
        self.emitter = Emitter("vault-test", self.sink, self.clock)
        self.store = SqliteIdentityStore()
        self.keyring = KeyRing(self.store)
        self.keyring.ensure(T0)
        self.tokens = TokenIssuer(self.keyring, ISSUER)
        self.cas = cas
        self.engine = PolicyEngine.from_dir(POLICIES, signals=StaticSignals(), clock=self.clock)
        self.audience = key_service_id(f"prod.{FIRM}")
        self.pep = EnforcementPoint(self.audience, self.engine,
                                    TokenVerifier(self.keyring, ISSUER, clock=self.clock, replay_cache=ReplayCache()),
                                    clock=self.clock, sink=self.sink)
        self.keys = KekStore(tmp / "vault-keys")
        self.objects = ObjectStore(tmp / "vault")
        self.service = KeyService(self.pep, self.keys, "prod")
        self.vault = Vault(self.service, self.objects)
        self.users = UserDirectory(self.store, self.emitter,
                                   hasher=cheap_hasher())
        self.totp: dict[str, pyotp.TOTP] = {}
        self.authority = OperatorAuthority(self.users, self.emitter, self.engine)
        self.lifecycle = KeyLifecycle(self.keys, self.objects, self.emitter)

    def peer(self, service: str, env: str = "prod") -> Peer:
        topo = self.engine.topology
        svc = topo.services[service]
        sid = f"spiffe://{env}.{FIRM}/{svc.segment}/{svc.name}"
        creds = issue_for_test(self.cas[env], sid, T0 - 60)
        return Peer(sid, creds.cert_der, creds.fingerprint_sha256, creds.serial)

    def session(self, service: str, env: str = "prod"):
        peer = self.peer(service, env)
        token = self.tokens.issue(peer.spiffe_id, self.audience, self.clock.now(), 120, cert_der=peer.cert_der)
        return self.service.open_session(peer, token)

    def enrol(self, name: str, role: str) -> None:
        self.totp[name] = pyotp.TOTP(self.users.enrol(name, role, PASSWORD, self.clock.now()).totp_secret)

    def lifecycle_step(self, action: str, first: OperatorCredential, second: OperatorCredential | None,
                       segment: str = "oms", env: str = "prod"):
        """What the command does: both people through the operator authority, then the lifecycle."""
        now = self.clock.now()
        target = lifecycle_target(segment, env)
        if second is None:
            a, b = self.authority.authorize(first, f"data.{action}", target, now), None
        else:
            a, b = four_eyes(self.authority, f"data.{action}", target, first, second, now)
        return getattr(self.lifecycle, action)(segment, env, a, b, now)

    def credential(self, name: str, *, totp: str | None = None) -> OperatorCredential:
        return OperatorCredential(user=name, password=PASSWORD, totp=totp or self.totp[name].at(self.clock.now()))


@pytest.fixture(scope="module")
def cas() -> dict[str, CertificateAuthority]:
    return {env: CertificateAuthority.create(f"{env}.{FIRM}", T0 - 600) for env in ("prod", "dev")}


@pytest.fixture
def world(tmp_path, cas) -> World:
    w = World(tmp_path, cas)
    yield w
    w.pep.flush_decisions()
    assert w.pep.fail_open == 0
