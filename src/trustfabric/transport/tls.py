"""mTLS contexts and the caller's identity: TLS 1.3 only, client certificate required.

Two steps, as in OPA's ``identifier/tls.go``: OpenSSL verifies the chain
(``VERIFY_X509_STRICT``: RFC 5280 profile, key identifiers, critical basic
constraints; security level 2: key sizes and signature hashes); then
:func:`peer_identity` reads the verified certificate and checks, explicitly and
against the injected clock, before any frame is read:

* it parses in full (any parser error: ``cert.malformed``, never a bare exception);
* it was issued by *our own* trust domain's CA - each link checked by its
  signature against our bundle, never by the SAN alone (``cert.wrong_trust_domain``);
* exactly one URI SAN, a valid SPIFFE ID (none or several: ``cert.san``), of our
  trust domain (``cert.wrong_trust_domain``);
* usable in its role (a client certificate at a server, a server certificate at a
  client): digitalSignature, EKU (``cert.key_usage``, ``cert.eku``);
* it is inside its validity window *now* (``cert.expired`` / ``cert.not_yet_valid``);
* its serial / SPIFFE ID are not revoked (``cert.revoked``).

Cross-trust-domain attempts are named, not only refused. Python 3.11's ``ssl``
gives no access to the chain of a peer refused in the handshake, so a refusal
by OpenSSL has a source address and no identity. A :class:`TLSConfig` may
therefore be given the CA certificates of the firm's *sibling* trust domains
(``sibling_bundle_pem``: prod's listeners hold test's and dev's): OpenSSL then
lets their chains through the handshake, with every structural check it makes,
and the identity step refuses them by the issuer check above, as
``cert.wrong_trust_domain`` carrying the presented SPIFFE ID
(:attr:`HandshakeRefused.presented`), so the refusal event names the principal
and the response engine raises a cross-trust-domain alert. A dev CA that writes
a prod SAN is refused by the same signature check. A chain of any other CA still
fails inside TLS (as an unknown CA, with its source address only).

Hostname checking is off because the identity is the SPIFFE ID, not a DNS name;
a client may still insist on a specific server ID (``expected_peer``).

Certificates rotate: :class:`TLSConfig` takes a *credentials source* (anything
with ``current() -> credentials``) and rebuilds its SSL contexts whenever the
credentials' fingerprint changes, so every new handshake presents the newest
certificate. Credentials are duck-typed on ``trustfabric.identity.workload.WorkloadCredentials``
(``cert_pem``, ``key_pem``, ``bundle_pem``, ``spiffe_id``, ``not_after``, ``fingerprint_sha256``).

``ssl`` errors raised by a handshake are translated by :func:`classify_handshake_error`
into reason codes; nothing above this module sees an ``ssl.SSLError``.
"""

from __future__ import annotations

import _ssl  # the C-level certificates of get_unverified_chain (private before Python 3.13)
import hashlib
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import TrustFabricError
from trustfabric.identity.certs import (
    CLIENT,
    REASONS,
    SERVER,
    RevocationCheck,
    chain_to,
    check_workload_certificate,
    load_certificates,
    read_certificate,
)
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.transport import errors as E
from trustfabric.transport.errors import HandshakeRefused

# OpenSSL X509_V_ERR_* codes we name.
_V_ERR_CERT_NOT_YET_VALID = 9
_V_ERR_CERT_HAS_EXPIRED = 10
_V_ERR_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21, 30, 31})  # unknown issuer / self-signed / no chain
_V_ERR_REVOKED = 23

# Refusal reasons of trustfabric.identity.certs kept as they are; any other is cert.invalid.
_PASSED_ON = REASONS


class Credentials(Protocol):
    cert_pem: bytes
    key_pem: bytes
    bundle_pem: bytes
    spiffe_id: Any
    not_after: float
    fingerprint_sha256: str


class CredentialsSource(Protocol):
    def current(self) -> Credentials: ...


RevocationLike = RevocationCheck  # anything with is_revoked(serial, spiffe_id)


class StaticCredentials:
    """A credentials source that always returns the same credentials."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def current(self) -> Credentials:
        return self._credentials


class RotatingCredentials:
    """A credentials source whose credentials are replaced as they rotate (thread-safe)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()
        self.rotations = 0

    def current(self) -> Credentials:
        return self._credentials

    def replace(self, credentials: Credentials) -> None:
        with self._lock:
            self._credentials = credentials
            self.rotations += 1


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who is on the other end of a verified connection (what enforcement reads)."""

    spiffe_id: SpiffeId
    cert_der: bytes
    fingerprint_sha256: str  # hex SHA-256 of cert_der
    serial: int
    not_after: float  # Unix seconds
    not_before: float = 0.0

    @property
    def trust_domain(self) -> str:
        return self.spiffe_id.trust_domain


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("ascii") if isinstance(value, str) else value


def _trust_domain_of(credentials: Credentials) -> str:
    spiffe = credentials.spiffe_id
    if isinstance(spiffe, SpiffeId):
        return spiffe.trust_domain
    return SpiffeId.parse(str(spiffe)).trust_domain


def build_context(credentials: Credentials, *, server_side: bool, sibling_bundle_pem: bytes = b"") -> ssl.SSLContext:
    """An SSLContext: TLS 1.3 only, peer certificate required, strict X.509, our domain's bundle only.

    ``sibling_bundle_pem`` (the firm's other trust domains' CAs) is for a
    :class:`TLSConfig`, whose identity step refuses their certificates by name;
    a bare context never takes it.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity = SPIFFE ID, checked by peer_identity()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=_as_bytes(credentials.bundle_pem).decode("ascii"))
    if sibling_bundle_pem:
        ctx.load_verify_locations(cadata=_as_bytes(sibling_bundle_pem).decode("ascii"))
    if server_side:
        ctx.num_tickets = 0  # no resumption: every connection presents and verifies a full chain
    # load_cert_chain reads files only: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="tf-tls-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, credentials.cert_pem), (key_path, credentials.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_as_bytes(data))
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def classify_handshake_error(exc: BaseException) -> str:
    """A reason code for a failed handshake (translating ``ssl`` errors)."""
    if isinstance(exc, HandshakeRefused):
        return exc.reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == _V_ERR_CERT_HAS_EXPIRED:
            return E.CERT_EXPIRED
        if code == _V_ERR_CERT_NOT_YET_VALID:
            return E.CERT_NOT_YET_VALID
        if code == _V_ERR_REVOKED:
            return E.CERT_REVOKED
        if code in _V_ERR_UNTRUSTED_ISSUER:
            return E.CERT_WRONG_TRUST_DOMAIN
        return E.CERT_INVALID
    if isinstance(exc, ssl.SSLError):
        text = f"{getattr(exc, 'reason', '')} {exc}".upper()
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
            return E.CERT_MISSING
        if "CERTIFICATE_EXPIRED" in text:
            return E.CERT_EXPIRED
        if "UNKNOWN_CA" in text:
            return E.CERT_WRONG_TRUST_DOMAIN
        if "CERTIFICATE_REVOKED" in text:
            return E.CERT_REVOKED
        return E.HANDSHAKE_FAILED
    return E.HANDSHAKE_FAILED


def _sent_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, leaf_der: bytes) -> list[x509.Certificate]:
    """The certificates the peer sent besides its own (to find a path to our anchors); [] if unknown.

    ``get_unverified_chain`` is public from Python 3.13 and a method of the C-level
    TLS object before; its entries are DER bytes or certificates with ``public_bytes``.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    try:
        entries = getter() or []
        ders = [e if isinstance(e, bytes) else e.public_bytes(_ssl.ENCODING_DER) for e in entries]
        return [x509.load_der_x509_certificate(d) for d in ders if d != leaf_der]
    except Exception:  # noqa: BLE001 - an unreadable extra certificate only means no path through it
        return []


class IssuerCache:
    """Certificates (by SHA-256 of their DER) already found issued by our own CA: one signature check each.

    Bounded (cleared when full) and tied to one set of anchors (cleared when they change).
    Validity, revocation and the rest are still checked at every handshake.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._anchors_key = ""
        self._known: set[str] = set()

    def known(self, anchors_key: str, fingerprint: str) -> bool:
        return anchors_key == self._anchors_key and fingerprint in self._known

    def add(self, anchors_key: str, fingerprint: str) -> None:
        if anchors_key != self._anchors_key or len(self._known) >= self.capacity:
            self._anchors_key = anchors_key
            self._known = set()
        self._known.add(fingerprint)


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket,
    *,
    trust_domain: str,
    clock: Clock = SYSTEM_CLOCK,
    revocation: RevocationLike | None = None,
    anchors: list[x509.Certificate] | None = None,
    issuer_cache: IssuerCache | None = None,
    anchors_key: str = "",
) -> PeerIdentity:
    """The verified identity of a TLS peer, or :class:`HandshakeRefused` with a reason code.

    ``anchors`` (our own domain's CA certificates) turn on the issuer check (its
    positive results kept in ``issuer_cache`` under ``anchors_key``); the peer's
    role is the other side's (a server checks a client certificate).
    """
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise HandshakeRefused("the peer presented no certificate", reason=E.CERT_MISSING)
    role = CLIENT if ssl_object.server_side else SERVER
    fingerprint = hashlib.sha256(der).hexdigest()
    # Issued by our own CA, found by its signature at an earlier handshake: not checked again.
    check_issuer = anchors is not None and not (issuer_cache is not None
                                                and issuer_cache.known(anchors_key, fingerprint))
    sent = _sent_chain(ssl_object, der) if check_issuer else []
    identity = identity_from_der(der, trust_domain=trust_domain, now=clock.now(), revocation=revocation,
                                 anchors=anchors if check_issuer else None, intermediates=sent, role=role)
    if check_issuer and issuer_cache is not None:
        issuer_cache.add(anchors_key, fingerprint)
    return identity


def identity_from_der(
    der: bytes, *, trust_domain: str, now: float, revocation: RevocationLike | None = None,
    anchors: list[x509.Certificate] | None = None, intermediates: list[x509.Certificate] | tuple = (),
    role: str = CLIENT,
) -> PeerIdentity:
    """The checks of :func:`peer_identity` on a DER certificate (chain already verified by OpenSSL).

    A refusal carries the presented SPIFFE ID whenever the certificate names one.
    """
    presented = ""
    try:
        cert = x509.load_der_x509_certificate(der)
        facts = read_certificate(cert)  # every field now: an unparseable certificate is cert.malformed
        try:
            presented = str(facts.spiffe_id())
        except TrustFabricError:
            presented = ""
        if anchors is not None:
            try:
                chain_to(cert, anchors, intermediates, climb=False)
            except TrustFabricError as exc:
                if exc.reason != "cert.untrusted":
                    raise  # e.g. a signature algorithm too weak: its own reason
                raise HandshakeRefused(f"{presented or 'the certificate'} is not issued by the {trust_domain} CA "
                                       f"({exc.detail})", reason=E.CERT_WRONG_TRUST_DOMAIN,
                                       presented=presented) from None
        spiffe_id = check_workload_certificate(cert, now, trust_domain, revocations=revocation, role=role,
                                               facts=facts)
        serial, not_after = cert.serial_number, cert.not_valid_after_utc.timestamp()
        not_before = cert.not_valid_before_utc.timestamp()
    except HandshakeRefused:
        raise
    except TrustFabricError as exc:
        reason = exc.reason if exc.reason in _PASSED_ON else E.CERT_INVALID
        raise HandshakeRefused(exc.detail, reason=reason, presented=presented) from None
    except Exception as exc:  # noqa: BLE001 - any parser error is a refusal, never a bare exception
        raise HandshakeRefused(f"unreadable peer certificate: {type(exc).__name__}: {exc}",
                               reason=E.CERT_MALFORMED, presented=presented) from None
    return PeerIdentity(
        spiffe_id=spiffe_id,
        cert_der=der,
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        serial=serial,
        not_after=not_after,
        not_before=not_before,
    )


class TLSConfig:
    """One workload's mTLS setup: its (rotating) credentials, its trust domain, revocation, clock.

    ``context(server_side)`` returns an SSLContext for the *current* credentials,
    rebuilt only when they change; ``verify_peer`` is :func:`peer_identity` for
    this workload's trust domain.
    """

    def __init__(
        self,
        credentials: CredentialsSource | Credentials,
        *,
        revocation: RevocationLike | None = None,
        clock: Clock = SYSTEM_CLOCK,
        trust_domain: str | None = None,
        sibling_bundle_pem: bytes = b"",
    ) -> None:
        if not hasattr(credentials, "current"):
            credentials = StaticCredentials(credentials)  # type: ignore[arg-type]
        self.credentials: CredentialsSource = credentials  # type: ignore[assignment]
        self.revocation = revocation
        self.clock = clock
        self.trust_domain = trust_domain or _trust_domain_of(self.credentials.current())
        self.sibling_bundle_pem = _as_bytes(sibling_bundle_pem)
        if self.sibling_bundle_pem:
            load_certificates(self.sibling_bundle_pem)  # unreadable: refused now, not at the first handshake
        self._cache: dict[bool, tuple[str, ssl.SSLContext, Credentials]] = {}
        self._anchors: tuple[str, list[x509.Certificate]] = ("", [])
        self._issuers = IssuerCache()
        self._lock = threading.Lock()

    def context(self, *, server_side: bool) -> tuple[ssl.SSLContext, Credentials]:
        """The SSLContext for the current credentials, and those credentials."""
        credentials = self.credentials.current()
        cached = self._cache.get(server_side)
        if cached is not None and cached[0] == credentials.fingerprint_sha256:
            return cached[1], cached[2]
        with self._lock:
            ctx = build_context(credentials, server_side=server_side, sibling_bundle_pem=self.sibling_bundle_pem)
            self._cache[server_side] = (credentials.fingerprint_sha256, ctx, credentials)
        return ctx, credentials

    def own_anchors(self) -> list[x509.Certificate]:
        """Our own trust domain's CA certificates (of the current credentials' bundle), parsed once each."""
        credentials = self.credentials.current()
        fingerprint, anchors = self._anchors
        if fingerprint != credentials.fingerprint_sha256:
            anchors = load_certificates(_as_bytes(credentials.bundle_pem))
            self._anchors = (credentials.fingerprint_sha256, anchors)
        return anchors

    def remembers_issuer(self, fingerprint_sha256: str) -> bool:
        """Whether the certificate with this fingerprint was already found issued by our own CA."""
        return self._issuers.known(self._anchors[0], fingerprint_sha256)

    def verify_peer(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity:
        """The identity step: :func:`peer_identity` for this workload's trust domain, issuer included."""
        anchors = self.own_anchors()
        return peer_identity(ssl_object, trust_domain=self.trust_domain, clock=self.clock,
                             revocation=self.revocation, anchors=anchors, issuer_cache=self._issuers,
                             anchors_key=self._anchors[0])

    @property
    def spiffe_id(self) -> str:
        return str(self.credentials.current().spiffe_id)
