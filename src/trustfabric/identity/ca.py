"""A certificate authority per trust domain, issuing short-lived workload certificates.

Each trust domain (``prod.<firm>``, ``test.<firm>``, ``dev.<firm>``) has its own CA,
so an enforcement point of prod, which trusts only prod's bundle, trusts no dev
certificate. A CA *generation* is a self-signed root plus an issuing
(intermediate) certificate signed by it; workload certificates are signed by the
issuing key. :meth:`CertificateAuthority.rotate` starts a new generation and keeps
the previous one in the bundle for an overlap window, so certificates issued just
before the rotation keep verifying until they are renewed under the new one.

Workload certificates (X.509-SVIDs): exactly one URI SAN (the SPIFFE ID), EKU
clientAuth+serverAuth, basic constraints CA false, key usage digitalSignature
(+keyEncipherment for RSA keys), TTL one hour by default and never beyond
``max_leaf_ttl_s`` or the issuing certificate. The workload makes its own key;
the CA sees only the CSR. Time is passed in (``now``, Unix seconds).

Keys are persisted by :meth:`save` as PEM files created 0600.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustfabric.identity.certs import certs_to_pem, load_certificates
from trustfabric.identity.errors import CaError, CertificateError
from trustfabric.identity.spiffe import SpiffeId, validate_trust_domain
from trustfabric.keyfiles import key_to_pem, write_private_file

__all__ = [
    "CertificateAuthority",
    "CaGeneration",
    "DEFAULT_LEAF_TTL_S",
    "DEFAULT_MAX_LEAF_TTL_S",
    "DEFAULT_CA_TTL_S",
    "write_private_file",
    "key_to_pem",
]

DEFAULT_LEAF_TTL_S = 3600
DEFAULT_MAX_LEAF_TTL_S = 3600
DEFAULT_CA_TTL_S = 365 * 24 * 3600
_MIN_RSA_BITS = 2048
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.timezone.utc)


@dataclass(frozen=True)
class CaGeneration:
    """One root + issuing pair; ``trusted_until`` is set when a newer generation replaced it."""

    number: int
    root_cert: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    issuing_cert: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    trusted_until: float | None = None

    def trusted_at(self, now: float) -> bool:
        if self.trusted_until is not None and now >= self.trusted_until:
            return False
        return now <= self.root_cert.not_valid_after_utc.timestamp()


def _new_generation(trust_domain: str, number: int, now: float, ttl_s: int) -> CaGeneration:
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} root CA g{number}"),
    ])
    issuing_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} issuing CA g{number}"),
    ])
    ca_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )
    not_before, not_after = _utc(now), _utc(now + ttl_s)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    issuing_cert = (
        x509.CertificateBuilder()
        .subject_name(issuing_name)
        .issuer_name(root_name)
        .public_key(issuing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return CaGeneration(number, root_cert, root_key, issuing_cert, issuing_key)


class CertificateAuthority:
    """The CA of one trust domain. Build with :meth:`create` or :meth:`load`."""

    def __init__(
        self,
        trust_domain: str,
        generations: list[CaGeneration],
        *,
        ca_ttl_s: int = DEFAULT_CA_TTL_S,
        max_leaf_ttl_s: int = DEFAULT_MAX_LEAF_TTL_S,
    ) -> None:
        validate_trust_domain(trust_domain)
        if not generations:
            raise CaError(f"CA of {trust_domain} has no key generation", reason="ca.missing")
        self.trust_domain = trust_domain
        self._generations = list(generations)
        self.ca_ttl_s = ca_ttl_s
        self.max_leaf_ttl_s = max_leaf_ttl_s

    @classmethod
    def create(
        cls,
        trust_domain: str,
        now: float,
        ttl_s: int = DEFAULT_CA_TTL_S,
        *,
        max_leaf_ttl_s: int = DEFAULT_MAX_LEAF_TTL_S,
    ) -> "CertificateAuthority":
        validate_trust_domain(trust_domain)
        return cls(trust_domain, [_new_generation(trust_domain, 1, now, ttl_s)],
                   ca_ttl_s=ttl_s, max_leaf_ttl_s=max_leaf_ttl_s)

    # -- generations -------------------------------------------------------------------

    @property
    def current(self) -> CaGeneration:
        return self._generations[-1]

    @property
    def generations(self) -> tuple[CaGeneration, ...]:
        return tuple(self._generations)

    def rotate(self, now: float, overlap_s: float) -> CaGeneration:
        """Start a new root+issuing generation; the previous ones stay trusted ``overlap_s`` more."""
        if overlap_s < 0:
            raise CaError("overlap must not be negative", reason="ca.bad_overlap")
        until = now + overlap_s
        self._generations = [
            g if g.trusted_until is not None and g.trusted_until <= until else replace(g, trusted_until=until)
            for g in self._generations
            if g.trusted_until is None or g.trusted_until > now
        ]
        fresh = _new_generation(self.trust_domain, self.current.number + 1, now, self.ca_ttl_s)
        self._generations.append(fresh)
        return fresh

    def trusted_certificates(self, now: float | None = None) -> list[x509.Certificate]:
        """Root and issuing certificates of every generation trusted at ``now``.

        ``now=None`` means every generation not yet pruned by a rotation.
        """
        certs: list[x509.Certificate] = []
        for g in self._generations:
            if now is None or g.trusted_at(now):
                certs.extend((g.root_cert, g.issuing_cert))
        return certs

    def bundle_pem(self, now: float | None = None) -> bytes:
        """The trust bundle of this domain (PEM): current and overlapping generations."""
        return certs_to_pem(self.trusted_certificates(now))

    # -- issuance ----------------------------------------------------------------------

    def issue_web_server(self, public_key: ec.EllipticCurvePublicKey, spiffe_id: SpiffeId | str,
                         names: list[str], now: float, ttl_s: int = DEFAULT_LEAF_TTL_S) -> x509.Certificate:
        """A TLS server certificate a browser accepts for a loopback console: the console's SPIFFE ID and
        DNS / IP names (``localhost``, ``127.0.0.1``...) as SANs, server authentication only."""
        import ipaddress

        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise CertificateError(f"the {self.trust_domain} CA does not issue for {sid.trust_domain}",
                                   reason="cert.wrong_trust_domain")
        if not (0 < ttl_s <= self.max_leaf_ttl_s):
            raise CertificateError(f"ttl {ttl_s}s outside (0, {self.max_leaf_ttl_s}]", reason="cert.ttl")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(sid))]
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        gen = self.current
        not_after = min(int(now) + int(ttl_s), int(gen.issuing_cert.not_valid_after_utc.timestamp()))
        issuing_ski = gen.issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "console")]))
            .issuer_name(gen.issuing_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 60))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuing_ski),
                           critical=False)
            .sign(gen.issuing_key, hashes.SHA256())
        )

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        spiffe_id: SpiffeId | str,
        now: float,
        ttl_s: int = DEFAULT_LEAF_TTL_S,
    ) -> x509.Certificate:
        """Sign a workload certificate for ``spiffe_id`` over the CSR's public key."""
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise CertificateError(
                f"the {self.trust_domain} CA does not issue for {sid.trust_domain}", reason="cert.wrong_trust_domain"
            )
        if not sid.path:
            raise CertificateError("a workload SPIFFE ID needs a path", reason="cert.csr")
        if not (0 < ttl_s <= self.max_leaf_ttl_s):
            raise CertificateError(f"ttl {ttl_s}s outside (0, {self.max_leaf_ttl_s}]", reason="cert.ttl")
        if not csr.is_signature_valid:
            raise CertificateError("CSR signature does not verify", reason="cert.csr")
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, _ALLOWED_CURVES):
                raise CertificateError(f"curve {public_key.curve.name} not accepted", reason="cert.csr")
            rsa_key = False
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < _MIN_RSA_BITS:
                raise CertificateError("RSA key shorter than 2048 bits", reason="cert.csr")
            rsa_key = True
        else:
            raise CertificateError("workload keys must be EC P-256/P-384 or RSA", reason="cert.csr")
        gen = self.current
        issuing_not_after = gen.issuing_cert.not_valid_after_utc.timestamp()
        if now >= issuing_not_after:
            raise CaError(f"the {self.trust_domain} issuing CA expired; rotate it", reason="ca.expired")
        not_after = min(int(now) + int(ttl_s), int(issuing_not_after))
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=rsa_key, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        )
        issuing_ski = gen.issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, sid.trust_domain),
            ]))
            .issuer_name(gen.issuing_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(sid))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuing_ski),
                           critical=False)
            .sign(gen.issuing_key, hashes.SHA256())
        )

    def chain_pem(self) -> bytes:
        """The current issuing certificate (sent after the leaf in ``cert.pem``)."""
        return certs_to_pem([self.current.issuing_cert])

    # -- persistence -------------------------------------------------------------------

    def to_files(self) -> dict[str, bytes]:
        """The CA's state as named files: keys (PEM), certificates, ``ca.json`` and ``bundle.pem``."""
        meta = {
            "trust_domain": self.trust_domain,
            "ca_ttl_s": self.ca_ttl_s,
            "max_leaf_ttl_s": self.max_leaf_ttl_s,
            "generations": [],
        }
        files: dict[str, bytes] = {}
        for g in self._generations:
            prefix = f"g{g.number}"
            files[f"{prefix}-root.key"] = key_to_pem(g.root_key)
            files[f"{prefix}-issuing.key"] = key_to_pem(g.issuing_key)
            files[f"{prefix}-root.pem"] = certs_to_pem([g.root_cert])
            files[f"{prefix}-issuing.pem"] = certs_to_pem([g.issuing_cert])
            meta["generations"].append({"number": g.number, "trusted_until": g.trusted_until})
        files["ca.json"] = json.dumps(meta, indent=2).encode()
        files["bundle.pem"] = self.bundle_pem()
        return files

    def save(self, directory: Path | str) -> Path:
        """Write keys (0600) and certificates under ``directory``; return it."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in self.to_files().items():
            if name.endswith(".key"):
                write_private_file(root / name, data)
            else:
                (root / name).write_bytes(data)
        return root

    @classmethod
    def from_files(cls, files: dict[str, bytes], where: str = "the store") -> "CertificateAuthority":
        """A CA from :meth:`to_files`'s named files (``ca.missing`` / ``ca.corrupt`` when incomplete or unreadable)."""
        try:
            meta = json.loads(files["ca.json"])
            generations = []
            for entry in meta["generations"]:
                prefix = f"g{int(entry['number'])}"
                root_key = serialization.load_pem_private_key(files[f"{prefix}-root.key"], None)
                issuing_key = serialization.load_pem_private_key(files[f"{prefix}-issuing.key"], None)
                generations.append(CaGeneration(
                    number=int(entry["number"]),
                    root_cert=load_certificates(files[f"{prefix}-root.pem"])[0],
                    root_key=root_key,  # type: ignore[arg-type]
                    issuing_cert=load_certificates(files[f"{prefix}-issuing.pem"])[0],
                    issuing_key=issuing_key,  # type: ignore[arg-type]
                    trusted_until=entry.get("trusted_until"),
                ))
            return cls(meta["trust_domain"], generations, ca_ttl_s=int(meta["ca_ttl_s"]),
                       max_leaf_ttl_s=int(meta["max_leaf_ttl_s"]))
        except KeyError as exc:
            raise CaError(f"no CA at {where}: {exc.args[0]} missing", reason="ca.missing") from exc
        except (ValueError, TypeError) as exc:
            raise CaError(f"CA state at {where} unreadable: {exc}", reason="ca.corrupt") from exc

    @classmethod
    def load(cls, directory: Path | str) -> "CertificateAuthority":
        """Load a saved CA; refuses (``ca.key_exposed``) key files readable by group or others."""
        root = Path(directory)
        for key_file in root.glob("*.key"):
            if key_file.stat().st_mode & 0o077:
                raise CaError(f"{key_file} is readable by others; chmod 600 it", reason="ca.key_exposed")
        if not (root / "ca.json").is_file():
            raise CaError(f"no CA at {root}: ca.json", reason="ca.missing")
        return cls.from_files({path.name: path.read_bytes() for path in root.iterdir() if path.is_file()}, str(root))
