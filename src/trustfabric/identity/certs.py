"""Reading and checking workload certificates: identity, thumbprint, chain.

* :func:`read_certificate` - every field a check reads, parsed once into
  :class:`CertificateFacts`. *Any* error of the parser (a duplicate extension, an
  unsupported general name, a malformed name constraint, an unknown key type...)
  is ``cert.malformed``: no foreign exception leaves this module.
* :func:`peer_spiffe_id` - the one SPIFFE ID a certificate carries (exactly one
  URI SAN, else ``cert.san``).
* :func:`x5t_s256` - the RFC 8705 certificate thumbprint (base64url, no padding,
  SHA-256 of the DER) that binds tokens to certificates.
* :func:`check_workload_certificate` - the checks that need no chain (one SPIFFE
  ID of our trust domain, not a CA, usable for its role, validity, revocation),
  shared with the transport, whose chain OpenSSL verifies.
* :func:`chain_to` - the path from a certificate to an anchor, each link checked
  by signature (never by name alone).
* :func:`verify_chain` - the check an enforcement point makes on a presented
  certificate against *its own* trust domain's bundle: everything the TLS layer
  (OpenSSL 3 with ``VERIFY_X509_STRICT`` at security level 2) checks, so that a
  certificate ``token verify --cert`` accepts is one a listener accepts too:

  ====================================  ====================================
  check                                 refusal
  ====================================  ====================================
  validity of every certificate         ``cert.expired``, ``cert.not_yet_valid``
  chain to an anchor, by signature      ``cert.untrusted``
  issuers: basicConstraints CA, critical ``cert.basic_constraints``
  pathLenConstraint of every issuer     ``cert.path_length``
  keyUsage: keyCertSign on issuers;     ``cert.key_usage``
  digitalSignature (and no keyCertSign)
  on the leaf
  EKU clientAuth / serverAuth (the      ``cert.eku``
  ``role``) on the leaf and on any
  issuer that carries an EKU
  unknown critical extensions           ``cert.critical_extension``
  name constraints (never issued here)  ``cert.name_constraints``
  keys: RSA >= 2048, EC P-256 or        ``cert.weak_key``
  larger, Ed25519/Ed448
  signatures: SHA-256/384/512 or EdDSA  ``cert.weak_signature``
  (an anchor's self-signature is not
  checked, as in OpenSSL)
  key identifiers (authority key id on  ``cert.key_identifier``
  every non-anchor, subject key id on
  every CA), empty names                ``cert.profile``
  ====================================  ====================================

  Where OpenSSL is laxer, the fabric's listeners are made as strict as
  ``verify_chain`` by their identity step: a leaf with keyAgreement and no
  digitalSignature (:func:`check_workload_certificate`: TLS 1.3 authenticates a
  peer by a signature) and SHA-224 signatures (:func:`chain_to`). What remains
  stricter here than at a listener, deliberately: P-224 keys on CA certificates
  (OpenSSL's level 2 takes 112-bit keys), and certificate-policy and
  name-constraint extensions, which OpenSSL understands and ``verify_chain``
  refuses. No CA of trustfabric makes any of them.

The bundle may hold roots and issuing (intermediate) certificates; a
certificate found in the bundle is trusted as an anchor, so a leaf whose issuer
is an issuing CA of the bundle verifies without a separately sent chain. The
anchor's own constraints (CA, key usage, EKU, key size, validity) are checked as
OpenSSL checks them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

from trustfabric.identity.errors import CertificateError, SpiffeIdError
from trustfabric.identity.spiffe import SpiffeId

__all__ = [
    "CLIENT",
    "MAX_CHAIN_DEPTH",
    "REASONS",
    "SERVER",
    "CertificateFacts",
    "RevocationCheck",
    "certs_to_pem",
    "chain_to",
    "check_workload_certificate",
    "fingerprint_sha256",
    "load_certificate",
    "load_certificates",
    "peer_spiffe_id",
    "read_certificate",
    "verify_chain",
    "x5t_s256",
]

MAX_CHAIN_DEPTH = 4
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

# The role a certificate is presented in: the EKU it must allow.
CLIENT = "client"
SERVER = "server"
_ROLE_EKU = {CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH, SERVER: ExtendedKeyUsageOID.SERVER_AUTH}

# Every refusal reason of this module (the transport passes these on as they are).
REASONS = frozenset({
    "cert.san", "cert.wrong_trust_domain", "cert.untrusted", "cert.expired", "cert.not_yet_valid",
    "cert.revoked", "cert.malformed", "cert.basic_constraints", "cert.path_length", "cert.key_usage",
    "cert.eku", "cert.critical_extension", "cert.name_constraints", "cert.weak_key", "cert.weak_signature",
    "cert.key_identifier", "cert.profile",
})

# Extensions whose meaning the checks below enforce; any other one marked critical is refused.
_HANDLED_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
})
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_EDDSA_SIGNATURES = frozenset({"1.3.101.112", "1.3.101.113"})  # Ed25519, Ed448


class RevocationCheck(Protocol):
    def is_revoked(self, serial: int, spiffe_id: str) -> bool: ...


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def load_certificates(pem: bytes | str) -> list[x509.Certificate]:
    """All certificates of a PEM blob; ``cert.malformed`` when none or unreadable."""
    try:
        data = pem.encode() if isinstance(pem, str) else pem
        certs = x509.load_pem_x509_certificates(data)
    except Exception as exc:
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
    except Exception as exc:
        raise CertificateError(f"unreadable DER certificate: {exc}", reason="cert.malformed") from exc


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the checks read of one certificate, parsed once (see :func:`read_certificate`)."""

    ca: bool | None  # None: no basicConstraints
    path_length: int | None
    basic_constraints_critical: bool
    key_usage: x509.KeyUsage | None
    eku: frozenset[ObjectIdentifier] | None  # None: no extendedKeyUsage
    unhandled_critical: tuple[str, ...]  # dotted OIDs of critical extensions no check here enforces
    name_constraints: bool
    uris: tuple[str, ...] | None  # the URI SANs; None: no subjectAltName
    san_empty: bool
    san_critical: bool
    subject_key_id: bool
    authority_key_id: bool  # with a keyIdentifier
    subject_empty: bool
    issuer_empty: bool
    self_issued: bool
    public_key: object
    signature_hash: hashes.HashAlgorithm | None  # None: EdDSA
    eddsa_signature: bool

    def spiffe_id(self) -> SpiffeId:
        """The one SPIFFE ID: exactly one URI SAN, a valid SPIFFE ID; else ``cert.san``."""
        uris = self.uris
        if uris is None:
            raise CertificateError("certificate has no subjectAltName", reason="cert.san")
        if len(uris) != 1:
            raise CertificateError(f"certificate has {len(uris)} URI SANs, exactly one required", reason="cert.san")
        try:
            return SpiffeId.parse(uris[0])
        except SpiffeIdError as exc:
            raise CertificateError(f"URI SAN is not a valid SPIFFE ID: {exc.detail}", reason="cert.san") from exc


def read_certificate(cert: x509.Certificate) -> CertificateFacts:
    """Every field the checks read, or ``cert.malformed``: *any* parser error is a refusal.

    The parser of ``cryptography`` raises, depending on the defect,
    ``DuplicateExtension``, ``UnsupportedGeneralNameType``, ``ValueError``,
    ``TypeError`` (a malformed name constraint) or ``UnsupportedAlgorithm``; all of
    them end here, as one typed refusal. One pass over the extensions.
    """
    try:
        bc = ku = eku = san = aki = None
        ski = nc = False
        unhandled: list[str] = []
        for ext in cert.extensions:
            oid = ext.oid
            if oid == ExtensionOID.BASIC_CONSTRAINTS:
                bc = ext
            elif oid == ExtensionOID.KEY_USAGE:
                ku = ext.value
            elif oid == ExtensionOID.EXTENDED_KEY_USAGE:
                eku = frozenset(ext.value)
            elif oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
                san = ext
            elif oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                aki = ext.value
            elif oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
                ski = True
            elif oid == ExtensionOID.NAME_CONSTRAINTS:
                nc = True
            if ext.critical and oid not in _HANDLED_CRITICAL:
                unhandled.append(oid.dotted_string)
        subject, issuer = cert.subject, cert.issuer
        facts = CertificateFacts(
            ca=bc.value.ca if bc is not None else None,
            path_length=bc.value.path_length if bc is not None else None,
            basic_constraints_critical=bc is not None and bc.critical,
            key_usage=ku,
            eku=eku,
            unhandled_critical=tuple(unhandled),
            name_constraints=nc,
            uris=tuple(san.value.get_values_for_type(x509.UniformResourceIdentifier)) if san is not None else None,
            san_empty=san is not None and len(san.value) == 0,
            san_critical=san is not None and san.critical,
            subject_key_id=ski,
            authority_key_id=aki is not None and aki.key_identifier is not None,
            subject_empty=len(subject) == 0,
            issuer_empty=len(issuer) == 0,
            self_issued=subject == issuer,
            public_key=cert.public_key(),
            signature_hash=cert.signature_hash_algorithm,
            eddsa_signature=cert.signature_algorithm_oid.dotted_string in _EDDSA_SIGNATURES,
        )
        cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number  # noqa: B018 - parse them now
    except Exception as exc:  # noqa: BLE001 - any parser error is a refusal, never a crash
        raise CertificateError(f"unreadable certificate: {type(exc).__name__}: {exc}",
                               reason="cert.malformed") from None
    return facts


def peer_spiffe_id(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of ``cert``: exactly one URI SAN, a valid SPIFFE ID; else ``cert.san``."""
    return read_certificate(cert).spiffe_id()


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
    return bool(read_certificate(cert).ca)


def _check_key(facts: CertificateFacts, what: str) -> None:
    key = facts.public_key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(f"{what}: RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})",
                                   reason="cert.weak_key")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise CertificateError(f"{what}: EC curve {key.curve.name} (P-256 or larger)", reason="cert.weak_key")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise CertificateError(f"{what}: key type {type(key).__name__} not accepted", reason="cert.weak_key")


def _check_signature_algorithm(cert: x509.Certificate, what: str) -> None:
    """SHA-256/384/512 or EdDSA (``cert.weak_signature``); unreadable: ``cert.malformed``."""
    try:
        if cert.signature_algorithm_oid.dotted_string in _EDDSA_SIGNATURES:
            return
        algorithm = cert.signature_hash_algorithm
    except Exception as exc:  # noqa: BLE001 - an unknown algorithm: a refusal, never a crash
        raise CertificateError(f"{what}: unreadable signature algorithm: {exc}", reason="cert.weak_signature") from None
    if not isinstance(algorithm, _STRONG_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise CertificateError(f"{what}: signed with {name} (SHA-256 or stronger)", reason="cert.weak_signature")


def _check_extensions(facts: CertificateFacts, what: str) -> None:
    if facts.unhandled_critical:
        raise CertificateError(f"{what}: unknown critical extension {', '.join(facts.unhandled_critical)}",
                               reason="cert.critical_extension")
    if facts.name_constraints:
        raise CertificateError(f"{what}: name constraints are not accepted", reason="cert.name_constraints")


def _check_names(facts: CertificateFacts, what: str) -> None:
    """RFC 5280 name rules OpenSSL's strict mode enforces (4.1.2.4, 4.1.2.6, 4.2.1.6)."""
    if facts.issuer_empty:
        raise CertificateError(f"{what}: empty issuer name", reason="cert.profile")
    if facts.subject_empty and (facts.ca or facts.uris is None or not facts.san_critical):
        raise CertificateError(f"{what}: empty subject name", reason="cert.profile")
    if facts.san_empty:
        raise CertificateError(f"{what}: empty subjectAltName", reason="cert.profile")


def _check_eku(facts: CertificateFacts, role: str, what: str) -> None:
    wanted = _ROLE_EKU.get(role)
    if wanted is None:
        raise CertificateError(f"unknown certificate role {role!r}", reason="cert.eku")
    if facts.eku is not None and wanted not in facts.eku:
        raise CertificateError(f"{what}: extendedKeyUsage does not allow {role} authentication", reason="cert.eku")


def _check_leaf_profile(facts: CertificateFacts, role: str) -> None:
    """A leaf usable as a TLS 1.3 ``role`` certificate: it signs, it is no CA, it allows the role."""
    if facts.ca:
        raise CertificateError("a CA certificate cannot be a workload identity", reason="cert.untrusted")
    ku = facts.key_usage
    if ku is not None and not ku.digital_signature:
        raise CertificateError("keyUsage lacks digitalSignature", reason="cert.key_usage")
    if ku is not None and ku.key_cert_sign:
        raise CertificateError("keyUsage keyCertSign on a certificate that is no CA", reason="cert.key_usage")
    _check_eku(facts, role, "certificate")


def _check_issuer_profile(facts: CertificateFacts, role: str, below: int, what: str) -> None:
    """An issuer: a CA (critical basicConstraints), keyCertSign, EKU allows the role, path length.

    ``below`` is the number of CA certificates between it and the leaf that are not
    self-issued (RFC 5280 6.1.4 (l)).
    """
    if not facts.ca:
        raise CertificateError(f"{what} is not a CA (basicConstraints)", reason="cert.basic_constraints")
    if not facts.basic_constraints_critical:
        raise CertificateError(f"{what}: basicConstraints not critical", reason="cert.basic_constraints")
    if facts.key_usage is None or not facts.key_usage.key_cert_sign:
        raise CertificateError(f"{what}: keyUsage lacks keyCertSign", reason="cert.key_usage")
    if not facts.subject_key_id:
        raise CertificateError(f"{what}: no subjectKeyIdentifier", reason="cert.key_identifier")
    _check_eku(facts, role, what)
    if facts.path_length is not None and below > facts.path_length:
        raise CertificateError(f"{what}: {below} CA certificate(s) below a pathLenConstraint of "
                               f"{facts.path_length}", reason="cert.path_length")


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - InvalidSignature, UnsupportedAlgorithm, a malformed key: not its issuer
        return False
    return True


def chain_to(
    cert: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    *,
    climb: bool = True,
) -> list[x509.Certificate]:
    """The path ``[cert, ..., anchor]``, each link checked by its signature; ``cert.untrusted`` if none.

    Signatures below the anchor must use SHA-256 or stronger, or EdDSA
    (``cert.weak_signature``); an anchor's self-signature is not checked.

    Anchors are preferred at each step (as OpenSSL's trusted-first). Once an anchor
    is reached the path still climbs through the anchors to a self-issued root
    when the bundle holds it, so the root's constraints are checked too
    (``climb=False``: stop at the first anchor - enough to know who issued it).
    """
    path = [cert]
    pool = list(intermediates)
    current = cert
    reached = False
    for _ in range(MAX_CHAIN_DEPTH + 1):
        if reached and (not climb or current.subject == current.issuer):
            return path
        if not reached:  # its signature is checked below: with a strong algorithm only
            _check_signature_algorithm(current, "certificate" if current is cert else "intermediate CA")
        anchor = next((a for a in anchors if a is not current and _signed_by(current, a)), None)
        if anchor is None and reached:
            return path  # an anchor whose own issuer the bundle does not hold
        step = anchor if anchor is not None else next((i for i in pool if _signed_by(current, i)), None)
        if step is None:
            raise CertificateError("no chain to the trust bundle", reason="cert.untrusted")
        if anchor is not None:
            reached = True
        else:
            pool.remove(step)
        if step in path:
            return path  # a self-signed anchor (or a loop): nothing further up
        path.append(step)
        current = step
    raise CertificateError("chain too long", reason="cert.untrusted")


def check_workload_certificate(
    cert: x509.Certificate,
    now: float,
    trust_domain: str,
    *,
    revocations: RevocationCheck | None = None,
    role: str = CLIENT,
    facts: CertificateFacts | None = None,
) -> SpiffeId:
    """The checks of a presented workload certificate that need no chain; its SPIFFE ID or a refusal.

    Parsed in full first (``cert.malformed``); exactly one SPIFFE URI SAN
    (``cert.san``), of ``trust_domain`` (``cert.wrong_trust_domain``), not a CA
    (``cert.untrusted``), usable as a TLS 1.3 ``role`` certificate (keyUsage with
    digitalSignature and without keyCertSign: ``cert.key_usage``; EKU allowing the
    role: ``cert.eku``), inside its validity window at ``now``
    (``cert.expired``/``cert.not_yet_valid``), serial and SPIFFE ID not revoked
    (``cert.revoked``; a revocation set that fails is a refusal too).
    :func:`verify_chain` adds the chain; the transport calls this after OpenSSL
    verified the chain against the same bundle. ``facts``: :func:`read_certificate` of
    ``cert`` when the caller already read it.
    """
    facts = facts if facts is not None else read_certificate(cert)
    spiffe_id = facts.spiffe_id()
    if spiffe_id.trust_domain != trust_domain:
        raise CertificateError(
            f"{spiffe_id} is from trust domain {spiffe_id.trust_domain!r}, expected {trust_domain!r}",
            reason="cert.wrong_trust_domain",
        )
    _check_leaf_profile(facts, role)
    _check_validity(cert, now, "certificate")
    if revocations is not None:
        try:
            revoked = revocations.is_revoked(cert.serial_number, str(spiffe_id))
        except Exception as exc:
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
    role: str = CLIENT,
) -> SpiffeId:
    """Verify a certificate presented in ``role`` (client or server); return its SPIFFE ID or raise.

    What the TLS layer checks, and the workload checks (see the module's table).
    Reason codes: ``cert.malformed``, ``cert.san``, ``cert.wrong_trust_domain``,
    ``cert.untrusted``, ``cert.expired``, ``cert.not_yet_valid``, ``cert.revoked``,
    ``cert.basic_constraints``, ``cert.path_length``, ``cert.key_usage``,
    ``cert.eku``, ``cert.critical_extension``, ``cert.name_constraints``,
    ``cert.weak_key``, ``cert.weak_signature``, ``cert.key_identifier``,
    ``cert.profile``.
    """
    anchors = list(load_certificates(bundle)) if isinstance(bundle, (bytes, str)) else list(bundle)
    if not anchors:
        raise CertificateError("empty trust bundle", reason="cert.untrusted")
    spiffe_id = check_workload_certificate(cert, now, trust_domain, revocations=revocations, role=role)
    try:
        path = chain_to(cert, anchors, intermediates)
    except CertificateError as exc:
        if exc.reason != "cert.untrusted":
            raise
        raise CertificateError(f"{spiffe_id}: {exc.detail} of {trust_domain}", reason=exc.reason) from None
    below = 0
    for depth, link in enumerate(path):
        is_anchor = any(link is a for a in anchors)
        kind = "anchor" if is_anchor else "intermediate"
        what = "certificate" if depth == 0 else f"{kind} CA {link.subject.rfc4514_string()}"
        facts = read_certificate(link)
        _check_extensions(facts, what)
        _check_names(facts, what)
        _check_key(facts, what)
        if not is_anchor and not facts.authority_key_id:
            raise CertificateError(f"{what}: no authorityKeyIdentifier", reason="cert.key_identifier")
        if depth > 0:
            _check_issuer_profile(facts, role, below, what)
            _check_validity(link, now, what)
            if not facts.self_issued:
                below += 1
    return spiffe_id
