"""The key service of one machine, wired to ``$TRUSTFABRIC_HOME`` (the thin shell the CLI and the floor use).

:func:`local_vault` builds a :class:`~trustfabric.data.keyservice.Vault` from the identity
plane (its token verifier, with the revocation set), a policy engine and the home's
directories: keys under ``vault-keys/``, sealed objects under ``vault/``, the key
service's decisions in its own audit spool ``spool/key-service/``.
:func:`workload_session` is how a workload with credentials on disk (``ca issue --out``)
opens a session: its certificate is checked against its trust domain's bundle (what the
mTLS handshake checks), the identity plane issues it a token bound to that certificate,
and the key service verifies it like any session open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trustfabric.audit.spool import Spool
from trustfabric.data.keyservice import KeyService, Vault, key_service_id
from trustfabric.data.keystore import KekStore
from trustfabric.data.objects import ObjectStore
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.session import Session
from trustfabric.identity.certs import verify_chain
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.tokens import ReplayCache
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.policy.engine import PolicyEngine

AUDIT_SOURCE = "key-service"
KEYS_DIR = "vault-keys"
OBJECTS_DIR = "vault"


@dataclass(frozen=True)
class PresentedPeer:
    """What the TLS layer would say about the caller."""

    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int


def local_vault(plane: IdentityPlane, engine: PolicyEngine, home: Path, spool: Spool) -> Vault:
    environment = engine.topology.environment
    audience = key_service_id(engine.topology.trust_domain)
    pep = EnforcementPoint(audience, engine, plane.token_verifier(ReplayCache()), clock=plane.clock, sink=spool,
                           source=AUDIT_SOURCE)
    service = KeyService(pep, KekStore(home / KEYS_DIR), environment)
    return Vault(service, ObjectStore(home / OBJECTS_DIR))


def open_spool(home: Path) -> Spool:
    return Spool(home / "spool" / AUDIT_SOURCE, AUDIT_SOURCE)


def workload_session(vault: Vault, plane: IdentityPlane, credentials: WorkloadCredentials) -> Session:
    now = plane.clock.now()
    sid = credentials.spiffe_id
    verify_chain(credentials.certificate, plane.ca(sid.trust_domain).bundle_pem(now), now, sid.trust_domain,
                 revocations=plane.revocations)
    token = plane.token_issuer().issue(str(sid), vault.service.pep.audience, now, 60, cert_der=credentials.cert_der)
    peer = PresentedPeer(str(sid), credentials.cert_der, credentials.fingerprint_sha256, credentials.serial)
    return vault.service.open_session(peer, token)
