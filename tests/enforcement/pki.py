"""A throwaway two-domain PKI for sidecar tests (CA per trust domain, leaves with a SPIFFE URI SAN)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    der: bytes
    serial: int


@dataclass(frozen=True)
class TestPeer:
    __test__ = False

    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int
    not_after: float


class TestCA:
    __test__ = False

    def __init__(self, trust_domain: str, out: Path) -> None:
        self.trust_domain = trust_domain
        self.out = out
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} CA")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = out / f"{trust_domain}-bundle.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, path: str, name: str) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(minutes=30))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain}/{path}")]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path = self.out / f"{name}.crt"
        key_path = self.out / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Leaf(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER), serial)


def peer_from_ssl_object(ssl_object) -> TestPeer:
    der = ssl_object.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError("need exactly one URI SAN")
    return TestPeer(uris[0], der, hashlib.sha256(der).hexdigest(), cert.serial_number,
                    cert.not_valid_after_utc.timestamp())
