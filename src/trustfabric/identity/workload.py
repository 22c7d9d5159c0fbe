"""A workload's credentials: its own key, its certificate, its domain's bundle.

The workload makes its key and CSR itself (:func:`new_key_and_csr`, EC P-256 -
TLS 1.3 friendly); only the CSR goes to the CA, the key never leaves the
workload. :class:`WorkloadCredentials` is what it then holds and writes to disk
as ``cert.pem`` (leaf then issuing certificate), ``key.pem`` (0600) and
``bundle.pem`` (its trust domain's CA certificates), the files an mTLS context
loads.

:func:`issue_for_test` skips attestation; it is for tests, process launchers and
the operator's explicit ``ca issue --no-attest`` (which is logged).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustfabric.identity.ca import DEFAULT_LEAF_TTL_S, CertificateAuthority, key_to_pem, write_private_file
from trustfabric.identity.certs import certs_to_pem, fingerprint_sha256, load_certificates, peer_spiffe_id, x5t_s256
from trustfabric.identity.errors import CertificateError
from trustfabric.identity.spiffe import SpiffeId

__all__ = [
    "WorkloadCredentials", "new_key_and_csr", "issue_for_test", "key_to_pem", "CERT_FILE", "KEY_FILE", "BUNDLE_FILE",
]

CERT_FILE, KEY_FILE, BUNDLE_FILE = "cert.pem", "key.pem", "bundle.pem"


def new_key_and_csr(spiffe_id: SpiffeId | str) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A fresh EC P-256 key and a CSR naming ``spiffe_id`` as its one URI SAN."""
    sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(sid))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr


@dataclass(frozen=True)
class WorkloadCredentials:
    """Certificate chain, private key and trust bundle of one workload (PEM bytes)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes

    def __post_init__(self) -> None:
        self.certificate  # parse once: malformed PEM fails at construction  # noqa: B018

    @cached_property
    def certificate(self) -> x509.Certificate:
        """The leaf certificate (first of ``cert_pem``)."""
        return load_certificates(self.cert_pem)[0]

    @property
    def chain(self) -> list[x509.Certificate]:
        return load_certificates(self.cert_pem)

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def spiffe_id(self) -> SpiffeId:
        return peer_spiffe_id(self.certificate)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def not_before(self) -> float:
        return self.certificate.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        """Expiry, Unix seconds."""
        return self.certificate.not_valid_after_utc.timestamp()

    @property
    def not_after_datetime(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint_sha256(self) -> str:
        """Hex SHA-256 of the leaf DER."""
        return fingerprint_sha256(self.certificate)

    @property
    def x5t_s256(self) -> str:
        """RFC 8705 thumbprint of the leaf (what ``cnf`` of a bound token carries)."""
        return x5t_s256(self.cert_der)

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now <= self.not_after

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return serialization.load_pem_private_key(self.key_pem, None)  # type: ignore[return-value]

    def write(self, directory: Path | str) -> Path:
        """Write ``cert.pem``, ``key.pem`` (0600) and ``bundle.pem``; return the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(out / KEY_FILE, self.key_pem)
        (out / CERT_FILE).write_bytes(self.cert_pem)
        (out / BUNDLE_FILE).write_bytes(self.bundle_pem)
        return out

    @classmethod
    def load(cls, directory: Path | str) -> "WorkloadCredentials":
        src = Path(directory)
        try:
            return cls(
                cert_pem=(src / CERT_FILE).read_bytes(),
                key_pem=(src / KEY_FILE).read_bytes(),
                bundle_pem=(src / BUNDLE_FILE).read_bytes(),
            )
        except FileNotFoundError as exc:
            raise CertificateError(f"missing credential file {exc.filename}", reason="cert.missing") from exc


def credentials_from(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, now: float | None = None
) -> WorkloadCredentials:
    """Bundle a freshly issued certificate with its issuing chain and the domain bundle."""
    return WorkloadCredentials(
        cert_pem=certs_to_pem([cert]) + ca.chain_pem(),
        key_pem=key_to_pem(key),
        bundle_pem=ca.bundle_pem(now),
    )


def issue_for_test(
    ca: CertificateAuthority, spiffe_id: SpiffeId | str, now: float, ttl_s: int = DEFAULT_LEAF_TTL_S
) -> WorkloadCredentials:
    """Key, CSR and certificate in one step, with no attestation (tests, launchers, --no-attest)."""
    key, csr = new_key_and_csr(spiffe_id)
    cert = ca.issue(csr, spiffe_id, now, ttl_s)
    return credentials_from(ca, key, cert, now)
