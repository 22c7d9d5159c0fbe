"""Short-lived, signed, certificate-bound access tokens (JWT, EdDSA).

The identity provider signs JWTs with Ed25519 (``alg: EdDSA``, PyJWT) under a
``kid`` that is the key's RFC 7638 thumbprint; :class:`KeyRing` rotates keys and
publishes the JWKS (the retired key stays published while tokens it signed may
live). Claims: ``iss sub aud exp nbf iat jti``, ``exp`` at most 300 s after
``iat``; a workload's token carries ``cnf: {"x5t#S256": ...}`` binding it to the
client certificate (RFC 8705), a person's token ``amr`` and ``auth_time``.

:meth:`TokenVerifier.verify` refuses, each with a reason code: oversized
(> 8 KiB, ``token.oversized``), malformed segments/base64/JSON
(``token.malformed``), ``alg`` none/None (``token.alg_none``), ``jku``/``x5u``/
``jwk``/``x5c`` headers (``token.forbidden_header``), any ``crit``
(``token.unknown_crit``), unknown ``kid`` (``token.unknown_kid``), an ``alg``
other than the one pinned to that key - e.g. HS256 "signed" with the public key
(``token.alg_mismatch``), a bad or empty signature (``token.bad_signature``),
wrong ``iss``/``aud`` (``token.wrong_iss``/``token.wrong_aud``), a workload subject of
another trust domain than the audience's (``token.wrong_trust_domain``), missing ``exp``
(``token.missing_exp``) or other claim (``token.missing_claim``), expired
(``token.expired``), ``nbf``/``iat`` in the future beyond 30 s
(``token.not_yet_valid``/``token.iat_future``), lifetime over 300 s
(``token.lifetime``), a bound token without a certificate
(``token.cert_required``) or with another one (``token.cnf_mismatch``), a
workload token without binding (``token.unbound``), a certificate naming
another subject (``token.sub_mismatch``), a revoked subject (``token.revoked``)
and a replayed ``jti`` (``token.replayed``, with a :class:`ReplayCache`).

The algorithm is never taken from the header: each key carries its algorithm
and the header must match it. Time is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.audit.events import Emitter, Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.identity.ca import key_to_pem
from trustfabric.identity.certs import RevocationCheck, load_certificate, peer_spiffe_id, x5t_s256
from trustfabric.identity.errors import IdentityError, SpiffeIdError, TokenError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import IdentityStore, SigningKeyRow

__all__ = [
    "Claims",
    "KeyRing",
    "SigningKey",
    "StaticJwks",
    "TokenIssuer",
    "TokenVerifier",
    "ReplayCache",
    "TokenError",
    "jwk_thumbprint",
    "ALGORITHM",
    "MAX_TOKEN_BYTES",
    "MAX_TTL_S",
    "LEEWAY_S",
]

ALGORITHM = "EdDSA"
MAX_TOKEN_BYTES = 8192
MAX_TTL_S = 300
LEEWAY_S = 30
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_REQUIRED = ("iss", "sub", "aud", "nbf", "iat", "jti")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenError("segment is not base64url", reason="token.malformed")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"bad base64url: {exc}", reason="token.malformed") from exc


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of an Ed25519 public key (used as ``kid``)."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)
    created_at: float
    retired_at: float | None = None

    @classmethod
    def generate(cls, now: float) -> "SigningKey":
        key = Ed25519PrivateKey.generate()
        return cls(jwk_thumbprint(key.public_key()), key, now)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def to_row(self) -> SigningKeyRow:
        return SigningKeyRow(self.kid, key_to_pem(self.private_key), self.created_at, self.retired_at)

    @classmethod
    def from_row(cls, row: SigningKeyRow) -> "SigningKey":
        key = serialization.load_pem_private_key(row.private_pem, None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TokenError(f"signing key {row.kid} is not Ed25519", reason="token.bad_key")
        return cls(row.kid, key, row.created_at, row.retired_at)


@dataclass(frozen=True)
class VerificationKey:
    """A public key with the one algorithm it verifies (pinned, never from the header)."""

    kid: str
    public_key: Ed25519PublicKey
    algorithm: str = ALGORITHM


class KeySource(Protocol):
    def verification_keys(self) -> Mapping[str, VerificationKey]: ...


class KeyRing:
    """The identity provider's signing keys: one active, recently retired ones still published."""

    def __init__(self, store: IdentityStore | None = None, *, retain_s: float = 2 * MAX_TTL_S + LEEWAY_S) -> None:
        self._store = store
        self._retain_s = retain_s
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [SigningKey.from_row(r) for r in store.list_signing_keys()] if store else []

    @classmethod
    def generate(cls, now: float, store: IdentityStore | None = None) -> "KeyRing":
        ring = cls(store)
        ring.ensure(now)
        return ring

    def _save(self, key: SigningKey) -> None:
        if self._store is not None:
            self._store.put_signing_key(key.to_row())

    @property
    def active(self) -> SigningKey:
        with self._lock:
            live = [k for k in self._keys if k.retired_at is None]
        if not live:
            raise TokenError("no active token signing key", reason="token.no_key")
        return live[-1]

    def ensure(self, now: float) -> SigningKey:
        """The active key, creating the first one if none exists."""
        try:
            return self.active
        except TokenError:
            return self.rotate(now)

    def rotate(self, now: float) -> SigningKey:
        """Make a new active key; the previous one stops signing but stays published ``retain_s``."""
        fresh = SigningKey.generate(now)
        with self._lock:
            kept: list[SigningKey] = []
            for key in self._keys:
                if key.retired_at is None:
                    key = SigningKey(key.kid, key.private_key, key.created_at, now)
                    self._save(key)
                if now - (key.retired_at or now) <= self._retain_s:
                    kept.append(key)
            kept.append(fresh)
            self._keys = kept
        self._save(fresh)
        return fresh

    def published(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys)

    def verification_keys(self) -> Mapping[str, VerificationKey]:
        return {k.kid: VerificationKey(k.kid, k.public_key) for k in self.published()}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document (public keys only)."""
        return {"keys": [public_jwk(k.public_key, k.kid) for k in self.published()]}


class StaticJwks:
    """Verification keys from a JWKS document; only Ed25519 (OKP) keys are accepted."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        keys: dict[str, VerificationKey] = {}
        entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(entries, list):
            raise TokenError("JWKS has no 'keys' list", reason="token.bad_jwks")
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                raise TokenError("JWKS key is not an Ed25519 OKP key", reason="token.bad_jwks")
            if entry.get("alg", ALGORITHM) != ALGORITHM or not isinstance(entry.get("kid"), str):
                raise TokenError("JWKS key must be alg EdDSA with a kid", reason="token.bad_jwks")
            try:
                key = jwt.PyJWK(dict(entry), algorithm=ALGORITHM).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise TokenError(f"unreadable JWKS key: {exc}", reason="token.bad_jwks") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise TokenError("JWKS key is not an Ed25519 public key", reason="token.bad_jwks")
            keys[entry["kid"]] = VerificationKey(entry["kid"], key)
        self._keys = keys

    def verification_keys(self) -> Mapping[str, VerificationKey]:
        return self._keys


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: float
    nbf: float
    iat: float
    jti: str
    kid: str
    cnf_x5t_s256: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: float | None = None
    scope: str = ""

    @property
    def is_workload(self) -> bool:
        return self.sub.startswith("spiffe://")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "iss": self.iss, "sub": self.sub, "aud": list(self.aud), "exp": self.exp, "nbf": self.nbf,
            "iat": self.iat, "jti": self.jti, "kid": self.kid,
        }
        if self.cnf_x5t_s256:
            out["cnf"] = {"x5t#S256": self.cnf_x5t_s256}
        if self.amr:
            out["amr"] = list(self.amr)
        if self.auth_time is not None:
            out["auth_time"] = self.auth_time
        if self.scope:
            out["scope"] = self.scope
        return out


# --------------------------------------------------------------------------- issuing


class TokenIssuer:
    """Signs access tokens with the key ring's active key."""

    def __init__(self, keys: KeyRing, issuer: str, *, max_ttl_s: int = MAX_TTL_S,
                 emitter: Emitter | None = None) -> None:
        self._keys = keys
        self.issuer = issuer
        self._max_ttl_s = max_ttl_s
        self._emitter = emitter

    def issue(
        self,
        sub: str,
        aud: str | Sequence[str],
        now: float,
        ttl_s: int = MAX_TTL_S,
        *,
        cert_der: bytes | None = None,
        amr: Sequence[str] | None = None,
        auth_time: float | None = None,
        scope: str = "",
    ) -> str:
        """A signed JWT. Workload subjects (``spiffe://``) must be bound to their certificate."""
        if not sub or not isinstance(sub, str):
            raise TokenError("empty subject", reason="token.missing_claim")
        if not (0 < ttl_s <= self._max_ttl_s):
            raise TokenError(f"ttl {ttl_s}s outside (0, {self._max_ttl_s}]", reason="token.lifetime")
        audiences = [aud] if isinstance(aud, str) else list(aud)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise TokenError("audience required", reason="token.wrong_aud")
        issued_at = int(now)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audiences[0] if len(audiences) == 1 else audiences,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + int(ttl_s),
            "jti": uuid.uuid4().hex,
        }
        if cert_der is not None:
            try:
                cert_id = str(peer_spiffe_id(load_certificate(cert_der)))
            except IdentityError as exc:
                raise TokenError(f"binding certificate unusable: {exc.detail}", reason="token.cert_invalid") from exc
            if cert_id != sub:
                raise TokenError(f"certificate is {cert_id}, subject is {sub}", reason="token.sub_mismatch")
            payload["cnf"] = {"x5t#S256": x5t_s256(cert_der)}
        elif sub.startswith("spiffe://"):
            raise TokenError("a workload token must be bound to its certificate", reason="token.unbound")
        else:
            if not amr or auth_time is None:
                raise TokenError("a person's token needs amr and auth_time", reason="token.missing_claim")
        if amr:
            payload["amr"] = list(amr)
        if auth_time is not None:
            payload["auth_time"] = int(auth_time)
        if scope:
            payload["scope"] = scope
        key = self._keys.active
        token = jwt.encode(payload, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"})
        if self._emitter is not None:
            self._emitter.emit(Kind.TOKEN_ISSUED, principal=sub, resource=",".join(audiences), decision="allow",
                               trace_id=payload["jti"], detail={"kid": key.kid, "exp": payload["exp"],
                                                                "bound": "cnf" in payload})
        return token


# --------------------------------------------------------------------------- replay


class ReplayCache:
    """Remembers ``jti`` values until their ``exp``; refuses a second use (``token.replayed``).

    Bounded: expired entries are dropped; if still full, new tokens are refused
    (``token.replay_cache_full``) rather than remembered imperfectly.
    """

    def __init__(self, max_entries: int = 100_000, leeway_s: float = LEEWAY_S) -> None:
        self._seen: dict[str, float] = {}
        self._max = max_entries
        self._leeway = leeway_s
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, jti: str, exp: float, now: float) -> None:
        with self._lock:
            expiry = self._seen.get(jti)
            if expiry is not None and expiry >= now:
                raise TokenError(f"token {jti[:12]} already used", reason="token.replayed")
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
                if len(self._seen) >= self._max:
                    raise TokenError("replay cache full", reason="token.replay_cache_full")
            self._seen[jti] = exp + self._leeway


# --------------------------------------------------------------------------- verifying


def _trust_domain(spiffe_id: str) -> str:
    """The trust domain of a SPIFFE ID, parsed strictly (:meth:`SpiffeId.parse`); malformed: ``token.malformed``."""
    try:
        return SpiffeId.parse(spiffe_id).trust_domain
    except SpiffeIdError as exc:
        raise TokenError(f"malformed SPIFFE ID {spiffe_id[:64]!r}: {exc.detail}", reason="token.malformed") from None


def _number(payload: Mapping[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError(f"claim {name!r} missing or not a finite number", reason="token.missing_claim")
    return float(value)


class TokenVerifier:
    """Verifies tokens for one audience set; pure apart from the injected clock."""

    def __init__(
        self,
        keys: KeySource,
        issuer: str,
        *,
        leeway_s: float = LEEWAY_S,
        max_ttl_s: int = MAX_TTL_S,
        clock: Clock = SYSTEM_CLOCK,
        replay_cache: ReplayCache | None = None,
        revocations: RevocationCheck | None = None,
        emitter: Emitter | None = None,
    ) -> None:
        self._keys = keys
        self.issuer = issuer
        self._leeway = leeway_s
        self._max_ttl = max_ttl_s
        self._clock = clock
        self._replay = replay_cache
        self._revocations = revocations
        self._emitter = emitter
        self._jws = jwt.PyJWS()

    def verify(
        self, token: str | bytes, audience: str, presented_cert_der: bytes | None = None, now: float | None = None
    ) -> Claims:
        """Return the claims of a valid token or raise :class:`TokenError`."""
        moment = self._clock.now() if now is None else now
        try:
            return self._verify(token, audience, presented_cert_der, moment)
        except TokenError as exc:
            if self._emitter is not None:
                self._emitter.emit(Kind.TOKEN_REFUSED, resource=str(audience), decision="deny", reason=exc.reason,
                                   detail={"message": exc.detail[:200]})
            raise

    def _header(self, header_segment: str) -> dict[str, Any]:
        try:
            header = json.loads(_b64url_decode(header_segment))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise TokenError("header is not JSON", reason="token.malformed") from exc
        if not isinstance(header, dict):
            raise TokenError("header is not a JSON object", reason="token.malformed")
        return header

    def _verify(self, token: str | bytes, audience: str, cert_der: bytes | None, now: float) -> Claims:
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError as exc:
                raise TokenError("token is not ASCII", reason="token.malformed") from exc
        if not isinstance(token, str):
            raise TokenError("token must be a string", reason="token.malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token of {len(token)} characters exceeds {MAX_TOKEN_BYTES}", reason="token.oversized")
        if not token.isascii():
            raise TokenError("token is not ASCII", reason="token.malformed")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError(f"token has {len(parts)} segments, expected 3", reason="token.malformed")
        header_seg, payload_seg, signature_seg = parts
        for seg in parts:
            if not _B64URL.fullmatch(seg):
                raise TokenError("segment is not base64url", reason="token.malformed")
        header = self._header(header_seg)
        alg = header.get("alg")
        if alg is None or (isinstance(alg, str) and alg.strip().lower() == "none"):
            raise TokenError("unsigned token (alg none)", reason="token.alg_none")
        forbidden = [h for h in FORBIDDEN_HEADERS if h in header]
        if forbidden:
            raise TokenError(f"header carries key-location field(s) {forbidden}", reason="token.forbidden_header")
        if "crit" in header:
            raise TokenError(f"unknown critical header(s) {header['crit']!r}", reason="token.unknown_crit")
        kid = header.get("kid")
        keys = self._keys.verification_keys()
        if not isinstance(kid, str) or kid not in keys:
            raise TokenError(f"unknown kid {str(kid)[:64]!r}", reason="token.unknown_kid")
        key = keys[kid]
        if alg != key.algorithm:
            raise TokenError(f"alg {str(alg)[:16]!r} is not {key.algorithm}, pinned to kid {kid}",
                             reason="token.alg_mismatch")
        if not signature_seg:
            raise TokenError("empty signature", reason="token.bad_signature")
        _b64url_decode(payload_seg)
        _b64url_decode(signature_seg)
        try:
            verified = self._jws.decode_complete(token, key=key.public_key, algorithms=[key.algorithm])
        except jwt.InvalidSignatureError as exc:
            raise TokenError("signature does not verify", reason="token.bad_signature") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError(str(exc), reason="token.alg_mismatch") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"undecodable token: {exc}", reason="token.malformed") from exc
        try:
            payload = json.loads(verified["payload"])
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise TokenError("payload is not JSON", reason="token.malformed") from exc
        if not isinstance(payload, dict):
            raise TokenError("payload is not a JSON object", reason="token.malformed")
        return self._claims(payload, kid, audience, cert_der, now)

    def _claims(self, payload: dict[str, Any], kid: str, audience: str, cert_der: bytes | None, now: float) -> Claims:
        if "exp" not in payload:
            raise TokenError("no exp claim", reason="token.missing_exp")
        exp = _number(payload, "exp")
        for name in _REQUIRED:
            if name not in payload:
                raise TokenError(f"no {name} claim", reason="token.missing_claim")
        nbf, iat = _number(payload, "nbf"), _number(payload, "iat")
        iss, sub, jti = payload["iss"], payload["sub"], payload["jti"]
        if not all(isinstance(v, str) and v for v in (iss, sub, jti)):
            raise TokenError("iss, sub and jti must be non-empty strings", reason="token.missing_claim")
        if not hmac.compare_digest(iss.encode(), self.issuer.encode()):
            raise TokenError(f"issuer {iss[:64]!r} is not {self.issuer!r}", reason="token.wrong_iss")
        aud_claim = payload["aud"]
        audiences = (aud_claim,) if isinstance(aud_claim, str) else aud_claim
        if not isinstance(audiences, (list, tuple)) or not all(isinstance(a, str) for a in audiences):
            raise TokenError("aud must be a string or a list of strings", reason="token.malformed")
        if audience not in audiences:
            raise TokenError(f"token is not for {audience!r}", reason="token.wrong_aud")
        if sub.startswith("spiffe://") and audience.startswith("spiffe://"):  # a workload: served in its domain only
            sub_domain, audience_domain = _trust_domain(sub), _trust_domain(audience)
            if sub_domain != audience_domain:
                raise TokenError(f"subject's trust domain {sub_domain!r} is not the audience's {audience_domain!r}",
                                 reason="token.wrong_trust_domain")
        if now > exp + self._leeway:
            raise TokenError("token expired", reason="token.expired")
        if nbf > now + self._leeway:
            raise TokenError("token not valid yet (nbf)", reason="token.not_yet_valid")
        if iat > now + self._leeway:
            raise TokenError("token issued in the future (iat)", reason="token.iat_future")
        if exp - iat > self._max_ttl or exp < iat:
            raise TokenError(f"lifetime {exp - iat:.0f}s exceeds {self._max_ttl}s", reason="token.lifetime")
        cnf_thumb = self._check_binding(payload, sub, cert_der)
        amr = payload.get("amr", [])
        auth_time = payload.get("auth_time")
        if not sub.startswith("spiffe://"):
            if not isinstance(amr, list) or not amr or isinstance(auth_time, bool) or \
                    not isinstance(auth_time, (int, float)):
                raise TokenError("a person's token needs amr and auth_time", reason="token.missing_claim")
        if self._replay is not None:
            self._replay.check_and_remember(jti, exp, now)
        return Claims(
            iss=iss, sub=sub, aud=tuple(audiences), exp=exp, nbf=nbf, iat=iat, jti=jti, kid=kid,
            cnf_x5t_s256=cnf_thumb,
            amr=tuple(str(a) for a in amr) if isinstance(amr, list) else (),
            auth_time=float(auth_time) if isinstance(auth_time, (int, float)) else None,
            scope=payload.get("scope", "") if isinstance(payload.get("scope", ""), str) else "",
        )

    def _check_binding(self, payload: dict[str, Any], sub: str, cert_der: bytes | None) -> str | None:
        cnf = payload.get("cnf")
        if cnf is None:
            if sub.startswith("spiffe://"):
                raise TokenError("workload token is not bound to a certificate", reason="token.unbound")
            self._refuse_revoked(-1, sub)
            return None
        thumb = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(thumb, str) or not thumb:
            raise TokenError("cnf without x5t#S256", reason="token.malformed")
        if cert_der is None:
            raise TokenError("bound token presented without a client certificate", reason="token.cert_required")
        if not hmac.compare_digest(thumb.encode(), x5t_s256(cert_der).encode()):
            raise TokenError("token is bound to another certificate", reason="token.cnf_mismatch")
        try:
            cert = load_certificate(cert_der)
            cert_id = str(peer_spiffe_id(cert))
        except IdentityError as exc:
            raise TokenError(f"presented certificate unusable: {exc.detail}", reason="token.cert_invalid") from exc
        if cert_id != sub:
            raise TokenError(f"certificate is {cert_id}, token subject {sub}", reason="token.sub_mismatch")
        self._refuse_revoked(cert.serial_number, sub)
        return thumb

    def _refuse_revoked(self, serial: int, sub: str) -> None:
        """``token.revoked`` when ``sub`` (or the serial) is revoked, or when the set cannot answer."""
        if self._revocations is None:
            return
        try:
            revoked = self._revocations.is_revoked(serial, sub)
        except Exception as exc:  # noqa: BLE001 - a revocation set that cannot answer is a refusal
            raise TokenError(f"revocation check failed: {exc!r}", reason="token.revoked") from exc
        if revoked:
            raise TokenError(f"{sub} is revoked", reason="token.revoked")
