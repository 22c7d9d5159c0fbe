"""Reading and checking workload certificates: identity, thumbprint, chain.

* :func:`peer_spiffe_id` - the one SPIFFE ID a certificate carries (exactly one
  URI SAN, else ``cert.san``).
* :func:`x5t_s256` - the RFC 8705 certificate thumbprint (base64url, no padding,
  SHA-256 of the DER) that binds tokens to certificates.
* :func:`check_workload_certificate` - the checks that need no chain (one SPIFFE
  ID of our trust domain, not a CA, validity, revocation), shared with the
  transport, whose chain OpenSSL verifies.
* :func:`verify_chain` - the check an enforcement point makes on a presented
  certificate against *its own* trust domain's bundle: validity window, chain to
  a trusted CA certificate of the bundle (each link's signature and validity),
  the SPIFFE ID's trust domain, and the revocation set. Any doubt is a refusal.

The bundle may hold roots and issuing (intermediate) certificates; a
certificate found in the bundle is trusted as an anchor, so a leaf whose issuer
is an issuing CA of the bundle verifies without a separately sent chain.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Iterable, Protocol, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from trustfabric.identity.errors import CertificateError, SpiffeIdError
from trustfabric.identity.spiffe import SpiffeId

__all__ = [
    "peer_spiffe_id",
    "x5t_s256",
    "fingerprint_sha256",
    "verify_chain",
    "check_workload_certificate",
    "load_certificates",
    "load_certificate",
    "certs_to_pem",
    "RevocationCheck",
    "MAX_CHAIN_DEPTH",
]

MAX_CHAIN_DEPTH = 4


class RevocationCheck(Protocol):
    def is_revoked(self, serial: int, spiffe_id: str) -> bool: ...


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def load_certificates(pem: bytes | str) -> list[x509.Certificate]:
    """All certificates of a PEM blob; ``cert.malformed`` when none or unreadable."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"unreadable certificate PEM: {exc}", reason="cert.malformed") from exc
    if not certs:
        raise CertificateError("no certificate in PEM", reason="cert.malformed")
    return certs


def load_certificate(data: bytes | str) -> x509.Certificate:
    """The first certificate of PEM, or a DER certificate."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        return load_certificates(raw)[0]
    try:
        return x509.load_der_x509_certificate(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"unreadable DER certificate: {exc}", reason="cert.malformed") from exc


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def peer_spiffe_id(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of ``cert``: exactly one URI SAN, a valid SPIFFE ID; else ``cert.san``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no subjectAltName", reason="cert.san") from exc
    except ValueError as exc:  # malformed extensions
        raise CertificateError(f"unreadable extensions: {exc}", reason="cert.malformed") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(f"certificate has {len(uris)} URI SANs, exactly one required", reason="cert.san")
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise CertificateError(f"URI SAN is not a valid SPIFFE ID: {exc.detail}", reason="cert.san") from exc


def x5t_s256(cert_der: bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url (no padding) SHA-256 of the certificate DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode("ascii")


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the DER encoding (what audit events carry)."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    moment = _utc(now)
    if moment < cert.not_valid_before_utc:
        raise CertificateError(f"{what} not valid before {cert.not_valid_before_utc.isoformat()}",
                               reason="cert.not_yet_valid")
    if moment > cert.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {cert.not_valid_after_utc.isoformat()}", reason="cert.expired")


def _is_ca(cert: x509.Certificate) -> bool:
    """True for a CA certificate; unreadable extensions are a refusal, never "not a CA"."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except ValueError as exc:
        raise CertificateError(f"unreadable extensions: {exc}", reason="cert.malformed") from exc
    return bc.ca


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject:
        return False
    try:
        if not _is_ca(issuer):
            return False
    except CertificateError:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def check_workload_certificate(
    cert: x509.Certificate,
    now: float,
    trust_domain: str,
    *,
    revocations: RevocationCheck | None = None,
) -> SpiffeId:
    """The checks of a presented workload certificate that need no chain; its SPIFFE ID or a refusal.

    Exactly one SPIFFE URI SAN (``cert.san``), of ``trust_domain``
    (``cert.wrong_trust_domain``), not a CA (``cert.untrusted``), inside its
    validity window at ``now`` (``cert.expired``/``cert.not_yet_valid``), serial and
    SPIFFE ID not revoked (``cert.revoked``; a revocation set that fails is a
    refusal too). :func:`verify_chain` adds the chain; the transport calls this
    after OpenSSL verified the chain against the same bundle.
    """
    spiffe_id = peer_spiffe_id(cert)
    if spiffe_id.trust_domain != trust_domain:
        raise CertificateError(
            f"{spiffe_id} is from trust domain {spiffe_id.trust_domain!r}, expected {trust_domain!r}",
            reason="cert.wrong_trust_domain",
        )
    if _is_ca(cert):
        raise CertificateError("a CA certificate cannot be a workload identity", reason="cert.untrusted")
    _check_validity(cert, now, "certificate")
    if revocations is not None:
        try:
            revoked = revocations.is_revoked(cert.serial_number, str(spiffe_id))
        except Exception as exc:  # noqa: BLE001 - a revocation set that cannot answer is a refusal
            raise CertificateError(f"revocation check failed: {exc!r}", reason="cert.revoked") from exc
        if revoked:
            raise CertificateError(f"{spiffe_id} (serial {cert.serial_number:x}) is revoked",
                                   reason="cert.revoked")
    return spiffe_id


def verify_chain(
    cert: x509.Certificate,
    bundle: bytes | str | Sequence[x509.Certificate],
    now: float,
    trust_domain: str,
    *,
    revocations: RevocationCheck | None = None,
    intermediates: Sequence[x509.Certificate] = (),
) -> SpiffeId:
    """Verify a presented workload certificate; return its SPIFFE ID or raise.

    Reason codes: ``cert.expired``, ``cert.not_yet_valid``, ``cert.san``,
    ``cert.wrong_trust_domain``, ``cert.untrusted``, ``cert.revoked``.
    """
    anchors = list(load_certificates(bundle)) if isinstance(bundle, (bytes, str)) else list(bundle)
    if not anchors:
        raise CertificateError("empty trust bundle", reason="cert.untrusted")
    spiffe_id = check_workload_certificate(cert, now, trust_domain, revocations=revocations)
    current = cert
    pool = list(intermediates)
    for _ in range(MAX_CHAIN_DEPTH):
        anchor = next((a for a in anchors if _signed_by(current, a)), None)
        if anchor is not None:
            _check_validity(anchor, now, "issuing CA certificate")
            break
        step = next((i for i in pool if _signed_by(current, i)), None)
        if step is None:
            raise CertificateError(f"{spiffe_id} does not chain to the {trust_domain} bundle",
                                   reason="cert.untrusted")
        _check_validity(step, now, "intermediate certificate")
        pool.remove(step)
        current = step
    else:
        raise CertificateError("chain too long", reason="cert.untrusted")
    return spiffe_id
