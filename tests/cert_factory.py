"""Hand-made certificate chains for the certificate tests: every field the checks look at, varied on demand.

A :class:`CertSpec` says how one certificate of a chain is built (key type and size,
signature hash, basic constraints and path length, key usage, EKU, an unknown critical
extension, key identifiers, validity); :func:`make_chain` builds root -> intermediates ->
leaf from specs. Keys are made once per (key type, position) and kept for the session:
RSA key generation is slow, and a key's value never matters to a check, only its kind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")  # a private OID no verifier knows

KEY_TYPES = ("ec256", "ec384", "ec521", "ed25519", "rsa2048", "rsa1024")
HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
EKUS = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH,
        "code": ExtendedKeyUsageOID.CODE_SIGNING}
CA_USAGE = ("digital_signature", "key_cert_sign", "crl_sign")
LEAF_USAGE = ("digital_signature",)

_KEYS: dict[tuple[str, int], object] = {}


def key_for(kind: str, slot: int):
    """The session's private key of ``kind`` for chain position ``slot`` (made on first use)."""
    cached = _KEYS.get((kind, slot))
    if cached is None:
        if kind.startswith("ec"):
            curve = {"ec256": ec.SECP256R1, "ec384": ec.SECP384R1, "ec521": ec.SECP521R1, "ec224": ec.SECP224R1}[kind]
            cached = ec.generate_private_key(curve())
        elif kind == "ed25519":
            cached = ed25519.Ed25519PrivateKey.generate()
        elif kind.startswith("rsa"):
            cached = rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
        else:
            raise ValueError(kind)
        _KEYS[(kind, slot)] = cached
    return cached


def _usage(names: tuple[str, ...]) -> x509.KeyUsage:
    flags = {n: n in names for n in ("digital_signature", "content_commitment", "key_encipherment",
                                     "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")}
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class CertSpec:
    key: str = "ec256"
    hash: str = "sha256"  # of this certificate's signature (ignored when the issuer's key is Ed25519)
    ca: bool | None = False  # None: no basicConstraints extension at all
    path_length: int | None = None
    bc_critical: bool = True
    key_usage: tuple[str, ...] | None = LEAF_USAGE  # None: no keyUsage extension
    eku: tuple[str, ...] | None = ("client", "server")  # None: no EKU extension
    unknown_critical: bool = False
    validity: str = "valid"  # valid | expired | not_yet_valid
    ski: bool = True
    aki: bool = True
    uris: tuple[str, ...] = field(default_factory=tuple)


def ca_spec(**kw) -> CertSpec:
    base = {"ca": True, "key_usage": CA_USAGE, "eku": None}
    base.update(kw)
    return CertSpec(**base)


def _window(validity: str, now: float) -> tuple[dt.datetime, dt.datetime]:
    utc = dt.UTC
    start, end = {"valid": (now - 3600, now + 3600), "expired": (now - 7200, now - 3600),
                  "not_yet_valid": (now + 3600, now + 7200)}[validity]
    return dt.datetime.fromtimestamp(int(start), utc), dt.datetime.fromtimestamp(int(end), utc)


def build(spec: CertSpec, subject: x509.Name, public_key, issuer_name: x509.Name, issuer_key,
          issuer_public_key, now: float) -> x509.Certificate:
    not_before, not_after = _window(spec.validity, now)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(public_key)
         .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    if spec.ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
                            critical=spec.bc_critical)
    if spec.key_usage is not None:
        b = b.add_extension(_usage(spec.key_usage), critical=True)
    if spec.eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([EKUS[e] for e in spec.eku]), critical=False)
    if spec.uris:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in spec.uris]),
                            critical=False)
    if spec.ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if spec.aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
    if spec.unknown_critical:
        b = b.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=True)
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return b.sign(issuer_key, None)
    if spec.hash == "sha1":
        return _sha1_rsa(b.sign(issuer_key, hashes.SHA256()), issuer_key)
    return b.sign(issuer_key, HASHES[spec.hash]())


_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")  # OID sha256WithRSAEncryption
_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")  # OID sha1WithRSAEncryption (same length)


def _sha1_rsa(cert: x509.Certificate, issuer_key) -> x509.Certificate:
    """The same certificate signed with SHA-1 (``cryptography`` no longer builds such; servers must refuse them)."""
    return patch_rsa_signed(cert, issuer_key, _SHA256_RSA, _SHA1_RSA, hashes.SHA1(), everywhere=True)


def patch_rsa_signed(cert: x509.Certificate, issuer_key, old: bytes, new: bytes,
                     algorithm: hashes.HashAlgorithm | None = None, *, everywhere: bool = False) -> x509.Certificate:
    """``cert`` with the bytes ``old`` of its TBS part replaced by ``new`` (same length), re-signed.

    For what no builder makes (a duplicate extension, a SHA-1 signature): only for an
    RSA issuer, whose signature keeps its size, so the DER is patched in place.
    ``everywhere`` also patches the outer signature algorithm.
    """
    if not isinstance(issuer_key, rsa.RSAPrivateKey) or len(old) != len(new):
        raise ValueError("in-place patches need an RSA issuer and a same-length replacement")
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    assert old in tbs
    new_tbs = tbs.replace(old, new)
    signature = issuer_key.sign(new_tbs, padding.PKCS1v15(), algorithm or hashes.SHA256())
    assert len(signature) == len(cert.signature)
    patched = der.replace(tbs, new_tbs)
    if everywhere:
        patched = patched.replace(old, new)
    patched = patched[: len(patched) - len(signature)] + signature
    return x509.load_der_x509_certificate(patched)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric-test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Chain:
    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]  # nearest the leaf first
    leaf: x509.Certificate
    leaf_key: object


def make_chain(root: CertSpec, intermediates: tuple[CertSpec, ...], leaf: CertSpec, now: float) -> Chain:
    """root (self-signed) -> intermediates (first one under the root) -> leaf."""
    root_key = key_for(root.key, 0)
    root_name = name("test root CA")
    root_cert = build(root, root_name, root_key.public_key(), root_name, root_key, root_key.public_key(), now)
    issuer_key, issuer_name = root_key, root_name
    chain: list[x509.Certificate] = []
    for depth, spec in enumerate(intermediates, start=1):
        key = key_for(spec.key, depth)
        subject = name(f"test intermediate CA {depth}")
        chain.append(build(spec, subject, key.public_key(), issuer_name, issuer_key, issuer_key.public_key(), now))
        issuer_key, issuer_name = key, subject
    leaf_key = key_for(leaf.key, 9)
    leaf_subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustfabric-test")])
    leaf_cert = build(leaf, leaf_subject, leaf_key.public_key(), issuer_name, issuer_key, issuer_key.public_key(), now)
    return Chain(root_cert, tuple(reversed(chain)), leaf_cert, leaf_key)


# -- certificates the parser chokes on (self-signed is enough) ---------------------------

def _self_signed(extensions: list[tuple[x509.ExtensionType, bool]], now: float) -> tuple[x509.Certificate, object]:
    key = key_for("rsa2048", 5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(7).not_valid_before(dt.datetime.fromtimestamp(now - 60, dt.UTC))
               .not_valid_after(dt.datetime.fromtimestamp(now + 600, dt.UTC)))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()), key


def duplicate_extension_certificate(now: float, uri: str) -> x509.Certificate:
    """Two subjectAltName extensions (no builder makes it: patched from a private OID of the same length)."""
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
    cert, key = _self_signed([(san, False)], now)
    san_value = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.public_bytes()
    twin = x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.99"), san_value)
    cert, key = _self_signed([(san, False), (twin, False)], now)
    return patch_rsa_signed(cert, key, bytes.fromhex("0603551d63"), bytes.fromhex("0603551d11"))


def malformed_name_constraint_certificate(now: float, uri: str) -> x509.Certificate:
    """Name constraints whose iPAddress subtree is an address, not a network (the parser raises TypeError)."""
    raw = bytes.fromhex("300aa0083006870400000001")
    nc = x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.30"), raw)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
    return _self_signed([(san, False), (nc, True)], now)[0]
