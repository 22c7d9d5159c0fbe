"""mTLS contexts and the caller's identity: TLS 1.3 only, client certificate required.

Two steps, as in OPA's ``identifier/tls.go``: OpenSSL verifies the chain against
the bundle of *our own* trust domain only (``load_verify_locations`` with that
bundle and nothing else - no system roots); then :func:`peer_identity` reads the
verified certificate and checks, explicitly and against the injected clock:

* exactly one URI SAN, a valid SPIFFE ID (none or several: ``cert.san``);
* its trust domain is ours (``cert.wrong_trust_domain``);
* it is inside its validity window *now* (``cert.expired`` / ``cert.not_yet_valid``);
* its serial / SPIFFE ID are not revoked (``cert.revoked``).

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
from trustfabric.identity.certs import RevocationCheck, check_workload_certificate
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.transport import errors as E
from trustfabric.transport.errors import HandshakeRefused

# OpenSSL X509_V_ERR_* codes we name.
_V_ERR_CERT_NOT_YET_VALID = 9
_V_ERR_CERT_HAS_EXPIRED = 10
_V_ERR_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21, 30, 31})  # unknown issuer / self-signed / no chain
_V_ERR_REVOKED = 23

# Refusal reasons of trustfabric.identity.certs kept as they are; any other is cert.invalid.
_PASSED_ON = frozenset({E.CERT_SAN, E.CERT_WRONG_TRUST_DOMAIN, E.CERT_EXPIRED, E.CERT_NOT_YET_VALID, E.CERT_REVOKED})


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


def build_context(credentials: Credentials, *, server_side: bool) -> ssl.SSLContext:
    """An SSLContext: TLS 1.3 only, peer certificate required, our domain's bundle only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity = SPIFFE ID, checked by peer_identity()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_as_bytes(credentials.bundle_pem).decode("ascii"))
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


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket,
    *,
    trust_domain: str,
    clock: Clock = SYSTEM_CLOCK,
    revocation: RevocationLike | None = None,
) -> PeerIdentity:
    """The verified identity of a TLS peer, or :class:`HandshakeRefused` with a reason code."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise HandshakeRefused("the peer presented no certificate", reason=E.CERT_MISSING)
    return identity_from_der(der, trust_domain=trust_domain, now=clock.now(), revocation=revocation)


def identity_from_der(
    der: bytes, *, trust_domain: str, now: float, revocation: RevocationLike | None = None
) -> PeerIdentity:
    """The checks of :func:`peer_identity` on a DER certificate (chain already verified)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise HandshakeRefused(f"unreadable peer certificate: {exc}", reason=E.CERT_INVALID) from None
    try:
        spiffe_id = check_workload_certificate(cert, now, trust_domain, revocations=revocation)
    except TrustFabricError as exc:
        reason = exc.reason if exc.reason in _PASSED_ON else E.CERT_INVALID
        raise HandshakeRefused(exc.detail, reason=reason) from None
    return PeerIdentity(
        spiffe_id=spiffe_id,
        cert_der=der,
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc.timestamp(),
        not_before=cert.not_valid_before_utc.timestamp(),
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
    ) -> None:
        if not hasattr(credentials, "current"):
            credentials = StaticCredentials(credentials)  # type: ignore[arg-type]
        self.credentials: CredentialsSource = credentials  # type: ignore[assignment]
        self.revocation = revocation
        self.clock = clock
        self.trust_domain = trust_domain or _trust_domain_of(self.credentials.current())
        self._cache: dict[bool, tuple[str, ssl.SSLContext, Credentials]] = {}
        self._lock = threading.Lock()

    def context(self, *, server_side: bool) -> tuple[ssl.SSLContext, Credentials]:
        """The SSLContext for the current credentials, and those credentials."""
        credentials = self.credentials.current()
        cached = self._cache.get(server_side)
        if cached is not None and cached[0] == credentials.fingerprint_sha256:
            return cached[1], cached[2]
        with self._lock:
            ctx = build_context(credentials, server_side=server_side)
            self._cache[server_side] = (credentials.fingerprint_sha256, ctx, credentials)
        return ctx, credentials

    def verify_peer(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity:
        return peer_identity(ssl_object, trust_domain=self.trust_domain, clock=self.clock,
                             revocation=self.revocation)

    @property
    def spiffe_id(self) -> str:
        return str(self.credentials.current().spiffe_id)
