"""Workload attestation: a certificate only for a promoted release on a healthy host.

Before a trust domain's CA signs a workload's CSR, :class:`AttestingIssuer`
checks, in order:

1. the CSR: its signature, and that any URI SAN it names is the requested ID;
2. the code digest (SHA-256 over the workload's code artefact, :func:`code_digest`)
   is a release *promoted to that trust domain* (``attest.unpromoted_digest``);
   a release promoted to dev is not thereby good for prod;
3. a fresh, signed posture report of the host meets what the trust domain requires
   of that host (:mod:`trustfabric.signals.posture`: the floor manifest's declared
   requirements, else the environment's built-in minimum; the verdict's first
   reason code, e.g. ``posture.stale``, ``posture.unsigned`` or
   ``posture.disk_encryption``, is the refusal's reason).

Every refusal raises :class:`AttestationError` and emits a ``CERT_REFUSED`` event;
every issuance emits ``CERT_ISSUED``. :meth:`AttestingIssuer.issue_unattested` is
the operator's explicit bypass (``ca issue --no-attest``): it is logged as an
``ADMIN_ACTION`` as well.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from cryptography import x509

from trustfabric.audit.events import Emitter, Kind
from trustfabric.identity.ca import DEFAULT_LEAF_TTL_S, CertificateAuthority
from trustfabric.identity.certs import fingerprint_sha256
from trustfabric.identity.errors import AttestationError, CaError, IdentityError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import IdentityStore, ReleaseRow
from trustfabric.signals.posture import (
    HostKeyRegistry,
    Requirements,
    SignedPostureReport,
    evaluate_posture,
    requirements_for_domain,
)

__all__ = [
    "code_digest",
    "Releases",
    "AttestationRequest",
    "AttestingIssuer",
    "minimum_for_domain",
    "validate_digest",
]

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def code_digest(artefact: bytes | Path | str) -> str:
    """Hex SHA-256 of a code artefact (bytes, or the file at a path)."""
    if isinstance(artefact, bytes):
        return hashlib.sha256(artefact).hexdigest()
    digest = hashlib.sha256()
    with open(artefact, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_digest(digest: str) -> str:
    """Lowercase hex SHA-256 or ``attest.bad_digest``."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest.lower()):
        raise AttestationError("code digest must be 64 hex characters (SHA-256)", reason="attest.bad_digest")
    return digest.lower()


def minimum_for_domain(trust_domain: str) -> Requirements:
    """The posture requirements of a trust domain: those the installation's floor manifest declares
    for its environment, else the environment's built-in minimum (unknown environments get prod's,
    the strictest); :func:`~trustfabric.signals.posture.requirements_for_domain`."""
    return requirements_for_domain(trust_domain)


class Releases:
    """Releases promoted per trust domain, kept in the identity store."""

    def __init__(self, store: IdentityStore) -> None:
        self._store = store

    def promote(self, trust_domain: str, digest: str, now: float, name: str = "") -> ReleaseRow:
        row = ReleaseRow(trust_domain, validate_digest(digest), name, now)
        self._store.add_release(row)
        return row

    def is_promoted(self, trust_domain: str, digest: str) -> bool:
        return self._store.is_promoted(trust_domain, digest.lower())

    def list(self, trust_domain: str | None = None) -> list[ReleaseRow]:
        return self._store.list_releases(trust_domain)


@dataclass(frozen=True)
class AttestationRequest:
    """What a workload presents to get a certificate."""

    spiffe_id: SpiffeId
    csr: x509.CertificateSigningRequest
    code_digest: str
    posture: SignedPostureReport | None
    ttl_s: int = DEFAULT_LEAF_TTL_S


class AttestingIssuer:
    """Issues workload certificates from the per-domain CAs, after attestation."""

    def __init__(
        self,
        cas: Mapping[str, CertificateAuthority],
        releases: Releases,
        host_keys: HostKeyRegistry,
        emitter: Emitter,
        minimums: Mapping[str, Requirements] | None = None,
        record: Callable[[x509.Certificate, SpiffeId, bool], None] | None = None,
    ) -> None:
        self._record = record  # the store's inventory of issued certificates: written before the certificate leaves
        self._cas = dict(cas)
        self._releases = releases
        self._host_keys = host_keys
        self._emitter = emitter
        self._minimums = dict(minimums or {})

    def ca_for(self, trust_domain: str) -> CertificateAuthority:
        ca = self._cas.get(trust_domain)
        if ca is None:
            raise CaError(f"no CA for trust domain {trust_domain}", reason="ca.unknown_domain")
        return ca

    def record_refusal(self, request_id: SpiffeId, exc: IdentityError, detail: dict | None = None) -> None:
        """Emit the CERT_REFUSED event of a refusal (also for evidence that could not be read)."""
        self._emitter.emit(
            Kind.CERT_REFUSED,
            principal=str(request_id),
            action="cert.issue",
            decision="deny",
            reason=exc.reason,
            segment=request_id.segment,
            trust_domain=request_id.trust_domain,
            detail={"message": exc.detail, **(detail or {})},
        )

    @staticmethod
    def _check_csr(request_id: SpiffeId, csr: x509.CertificateSigningRequest) -> None:
        if not csr.is_signature_valid:
            raise AttestationError("CSR signature does not verify", reason="cert.csr")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris and uris != [str(request_id)]:
            raise AttestationError(f"CSR names {uris}, request is for {request_id}", reason="cert.csr")

    def issue(self, request: AttestationRequest, now: float) -> x509.Certificate:
        """Attest, then issue; raise :class:`IdentityError` (and log) on any refusal."""
        sid = request.spiffe_id
        try:
            ca = self.ca_for(sid.trust_domain)
            self._check_csr(sid, request.csr)
            digest = validate_digest(request.code_digest)
            if not self._releases.is_promoted(sid.trust_domain, digest):
                raise AttestationError(
                    f"code digest {digest[:16]}... is not a release promoted to {sid.trust_domain}",
                    reason="attest.unpromoted_digest",
                )
            minimum = self._minimums.get(sid.trust_domain) or minimum_for_domain(sid.trust_domain)
            verdict = evaluate_posture(request.posture, self._host_keys, minimum, now)
            if not verdict.ok:
                raise AttestationError(
                    f"host posture fails {sid.trust_domain}'s minimum: {', '.join(verdict.reasons)}",
                    reason=verdict.reasons[0],
                )
            cert = ca.issue(request.csr, sid, now, request.ttl_s)
            if self._record is not None:
                self._record(cert, sid, True)
        except IdentityError as exc:
            self.record_refusal(sid, exc, {"code_digest": str(request.code_digest)[:64]})
            raise
        self._issued(cert, sid, attested=True, detail={"code_digest": digest, "host": verdict.host})
        return cert

    def issue_unattested(
        self, csr: x509.CertificateSigningRequest, spiffe_id: SpiffeId, now: float,
        ttl_s: int = DEFAULT_LEAF_TTL_S, *, operator: str = "operator",
    ) -> x509.Certificate:
        """The logged operator bypass (``--no-attest``)."""
        try:
            ca = self.ca_for(spiffe_id.trust_domain)
            self._check_csr(spiffe_id, csr)
            cert = ca.issue(csr, spiffe_id, now, ttl_s)
            if self._record is not None:
                self._record(cert, spiffe_id, False)
        except IdentityError as exc:
            self.record_refusal(spiffe_id, exc, {"attested": False})
            raise
        self._emitter.emit(
            Kind.ADMIN_ACTION, principal=operator, action="cert.issue_unattested", resource=str(spiffe_id),
            decision="allow", trust_domain=spiffe_id.trust_domain, reason="attest.bypassed",
        )
        self._issued(cert, spiffe_id, attested=False, detail={})
        return cert

    def _issued(self, cert: x509.Certificate, sid: SpiffeId, *, attested: bool, detail: dict) -> None:
        self._emitter.emit(
            Kind.CERT_ISSUED,
            principal=str(sid),
            action="cert.issue",
            decision="allow",
            segment=sid.segment,
            trust_domain=sid.trust_domain,
            peer_fingerprint=fingerprint_sha256(cert),
            detail={
                "serial": format(cert.serial_number, "x"),
                "not_after": cert.not_valid_after_utc.timestamp(),
                "attested": attested,
                **detail,
            },
        )
