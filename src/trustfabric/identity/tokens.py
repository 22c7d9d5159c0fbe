"""Short-lived, signed, certificate-bound access tokens (JWT, EdDSA).

The identity provider signs JWTs with Ed25519 (``alg: EdDSA``, PyJWT) under a
``kid`` that is the key's RFC 7638 thumbprint. Claims: ``iss sub aud exp nbf iat
jti``, ``exp`` at most 300 s after ``iat``. Every token is bound (RFC 8705,
``cnf: {"x5t#S256": ...}``): a workload's to its own client certificate, a
person's (``amr`` and ``auth_time`` too) to the certificate of the desk device
(``spiffe://<td>/desk/<host>``) they signed in at, so it opens sessions from that
device only.

Key lifecycle (:class:`KeyRing`): one active key signs; :meth:`KeyRing.rotate`
retires it with a retain window stored with the key (``retired_at + retain_s``)
during which the tokens it signed still verify; after it the key leaves the ring
and the JWKS and its private half is destroyed (the store keeps the public half for
audit). :meth:`KeyRing.revoke` removes a retired key at once (the active one must
be rotated out first).

:meth:`TokenVerifier.verify` refuses, each with a reason code: oversized
(> 8 KiB, ``token.oversized``), malformed segments/base64/JSON
(``token.malformed``), ``alg`` none/None (``token.alg_none``), ``jku``/``x5u``/
``jwk``/``x5c`` headers (``token.forbidden_header``), any ``crit``
(``token.unknown_crit``), unknown, retired-and-expired or revoked ``kid``
(``token.unknown_kid``), an ``alg`` other than the one pinned to that key - e.g.
HS256 "signed" with the public key (``token.alg_mismatch``), a bad or empty
signature (``token.bad_signature``), wrong ``iss``/``aud``
(``token.wrong_iss``/``token.wrong_aud``), a workload subject of another trust
domain than the audience's (``token.wrong_trust_domain``), missing ``exp``
(``token.missing_exp``) or another claim missing or of the wrong type
(``token.missing_claim``: dates are whole seconds in [0, year 9999], never floats,
booleans, strings or ``10**400``), text that is no Unicode (a lone surrogate) or
a malformed ``aud``/``cnf`` (``token.malformed``), expired (``token.expired``),
``nbf``/``iat`` in the future beyond 30 s (``token.not_yet_valid``/
``token.iat_future``), lifetime over 300 s (``token.lifetime``), a token without
binding (``token.unbound``), presented without a certificate
(``token.cert_required``) or with another one (``token.cnf_mismatch``), a
certificate naming another workload (``token.sub_mismatch``) or, for a person, no
desk device (``token.not_desk_device``), a revoked subject or device
(``token.revoked``) and a replayed ``jti`` (``token.replayed``, with a
:class:`ReplayCache`). Whatever the claims hold, the verifier raises
:class:`TokenError` and nothing else.

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
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol, Sequence

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.audit.events import Emitter, Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.keyfiles import key_to_pem
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
    "is_desk_device",
    "DEFAULT_RETAIN_S",
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
DEFAULT_RETAIN_S = 2 * MAX_TTL_S + LEEWAY_S  # a retired key outlives every token it signed, plus leeway
KEY_WINDOW_PASSED = "key.window_passed"
KEY_REVOKED = "key.revoked"
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z: any larger date is no date this issuer writes
DESK_SEGMENT = "desk"  # people sign in at desk terminals whose certificates name the device
_X5T_S256 = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest


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


def public_jwk(public_key: Ed25519PublicKey, kid: str, until: int | None = None) -> dict[str, Any]:
    """The public JWK; a retired key carries ``exp`` (the end of its retain window, as OpenID
    Federation's JWK ``exp``): no token verifies with it from then on, whoever holds the copy."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}
    if until is not None:
        jwk["exp"] = until
    return jwk


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)
    created_at: float
    retired_at: float | None = None
    retain_s: float = 0.0

    @classmethod
    def generate(cls, now: float) -> "SigningKey":
        key = Ed25519PrivateKey.generate()
        return cls(jwk_thumbprint(key.public_key()), key, now)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def trusted_at(self, now: float) -> bool:
        """Active, or retired less than its retain window ago."""
        return self.retired_at is None or now < self.retired_at + self.retain_s

    @property
    def trusted_until(self) -> int | None:
        """The whole second the retain window ends (``None`` while active)."""
        return None if self.retired_at is None else math.floor(self.retired_at + self.retain_s)

    def retire(self, now: float, retain_s: float) -> "SigningKey":
        return replace(self, retired_at=now, retain_s=retain_s)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    def to_row(self) -> SigningKeyRow:
        return SigningKeyRow(self.kid, key_to_pem(self.private_key), self.created_at, self.retired_at, self.retain_s)

    @classmethod
    def from_row(cls, row: SigningKeyRow) -> "SigningKey":
        try:
            key = serialization.load_pem_private_key(row.private_pem, None)
        except (ValueError, TypeError) as exc:
            raise TokenError(f"signing key {row.kid} is unreadable", reason="token.bad_key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise TokenError(f"signing key {row.kid} is not Ed25519", reason="token.bad_key")
        return cls(row.kid, key, row.created_at, row.retired_at, row.retain_s)


@dataclass(frozen=True)
class VerificationKey:
    """A public key with the one algorithm it verifies (pinned, never from the header)."""

    kid: str
    public_key: Ed25519PublicKey
    algorithm: str = ALGORITHM
    until: int | None = None  # a retired key: verifies nothing from this time on


REFRESH_MIN_S = 1.0  # a key ring re-reads a shared store at most this often on an unknown kid


class KeySource(Protocol):
    def verification_keys(self, now: float) -> Mapping[str, VerificationKey]: ...


class KeyRing:
    """The identity provider's signing keys: one active, recently retired ones still published.

    Lifecycle: a key signs while active; :meth:`rotate` retires it with the ring's
    ``retain_s`` window, stored with the key (``retired_at + retain_s``), during which
    tokens it signed still verify; once the window has passed the key leaves the ring
    and the JWKS and is removed from the store (private half destroyed, public half kept
    for audit). :meth:`revoke` removes a retired key at once. A ring built from the
    store loads only the active key and retired keys still within their window; the
    others it finds are removed then.

    Several control-plane replicas share one store (PostgreSQL): :meth:`refresh` re-reads it
    (a key another replica made), at most once per ``REFRESH_MIN_S`` so that tokens naming
    unknown kids cannot drive the database; :meth:`ensure` reads it before making a first key.
    """

    def __init__(self, store: IdentityStore | None = None, *, retain_s: float = DEFAULT_RETAIN_S,
                 clock: Clock = SYSTEM_CLOCK, emitter: Emitter | None = None) -> None:
        if not (isinstance(retain_s, (int, float)) and 0 <= retain_s < math.inf):
            raise TokenError(f"retain window {retain_s!r} is not a finite number of seconds", reason="token.bad_key")
        self._store = store
        self._retain_s = float(retain_s)
        self._clock = clock
        self._emitter = emitter
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [SigningKey.from_row(r) for r in store.list_signing_keys()] if store else []
        self._refreshed_at = clock.monotonic()
        self.prune(clock.now())

    @classmethod
    def generate(cls, now: float, store: IdentityStore | None = None, **kwargs: Any) -> "KeyRing":
        ring = cls(store, **kwargs)
        ring.ensure(now)
        return ring

    @property
    def retain_s(self) -> float:
        return self._retain_s

    def _save(self, key: SigningKey) -> None:
        if self._store is not None:
            self._store.put_signing_key(key.to_row())

    def _remove(self, key: SigningKey, now: float, reason: str) -> None:
        """Destroy a key that left the ring: the store keeps its public half only; audited."""
        if self._store is not None:
            self._store.remove_signing_key(key.kid, key.public_pem(), now, reason)
        if self._emitter is not None:
            self._emitter.emit(Kind.ADMIN_ACTION, action="token.key_removed", resource=key.kid, decision="allow",
                               reason=reason, detail={"retired_at": key.retired_at, "retain_s": key.retain_s})

    @property
    def active(self) -> SigningKey:
        with self._lock:
            live = [k for k in self._keys if k.retired_at is None]
        if not live:
            raise TokenError("no active token signing key", reason="token.no_key")
        return live[-1]

    def ensure(self, now: float) -> SigningKey:
        """The active key, creating the first one if none exists (in the store: another replica's counts)."""
        try:
            return self.active
        except TokenError:
            self.refresh(force=True)
        try:
            return self.active
        except TokenError:
            return self.rotate(now)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the keys from the store (another replica rotated); False when it was read under
        ``REFRESH_MIN_S`` ago (and not ``force``) or there is no store."""
        if self._store is None:
            return False
        mono = self._clock.monotonic()
        if not force and mono - self._refreshed_at < REFRESH_MIN_S:
            return False
        self._refreshed_at = mono
        keys = [SigningKey.from_row(r) for r in self._store.list_signing_keys()]
        with self._lock:
            self._keys = keys
        self.prune(self._clock.now())
        return True

    def rotate(self, now: float) -> SigningKey:
        """Make a new active key; the previous one stops signing and verifies for ``retain_s`` more."""
        fresh = SigningKey.generate(now)
        with self._lock:
            retired = [k.retire(now, self._retain_s) for k in self._keys if k.retired_at is None]
            self._keys = [k for k in self._keys if k.retired_at is not None] + retired + [fresh]
        for key in retired:
            self._save(key)
        self._save(fresh)
        self.prune(now)
        return fresh

    def prune(self, now: float) -> list[str]:
        """Remove every retired key whose window has passed at ``now``; returns their kids."""
        with self._lock:
            gone = [k for k in self._keys if not k.trusted_at(now)]
            if not gone:
                return []
            self._keys = [k for k in self._keys if k.trusted_at(now)]
        for key in gone:
            self._remove(key, now, KEY_WINDOW_PASSED)
        return [k.kid for k in gone]

    def revoke(self, kid: str, now: float) -> SigningKey:
        """Remove a retired key at once (``token.key_active`` for the signing key: rotate first)."""
        with self._lock:
            key = next((k for k in self._keys if k.kid == kid), None)
            if key is None:
                raise TokenError(f"no signing key {str(kid)[:64]!r} in the ring", reason="token.unknown_kid")
            if key.retired_at is None:
                raise TokenError(f"{kid} is the active signing key: rotate first, then revoke it",
                                 reason="token.key_active")
            self._keys = [k for k in self._keys if k.kid != kid]
        self._remove(key, now, KEY_REVOKED)
        return key

    def published(self, now: float | None = None) -> list[SigningKey]:
        """The keys trusted at ``now`` (the ring's clock when omitted); expired ones are removed first."""
        self.prune(self._clock.now() if now is None else now)
        with self._lock:
            return list(self._keys)

    def verification_keys(self, now: float | None = None) -> Mapping[str, VerificationKey]:
        return {k.kid: VerificationKey(k.kid, k.public_key) for k in self.published(now)}

    def jwks(self, now: float | None = None) -> dict[str, list[dict[str, str]]]:
        """The JWKS document (public keys only) of the keys trusted at ``now``."""
        return {"keys": [public_jwk(k.public_key, k.kid, k.trusted_until) for k in self.published(now)]}


class StaticJwks:
    """Verification keys from a JWKS document; only Ed25519 (OKP) keys are accepted.

    A service's copy of the identity provider's JWKS: a retired key verifies only until
    its ``exp`` (the end of its retain window), and :meth:`revoke` drops a key the
    identity provider revoked (pushed as a ``token_key`` revocation).
    """

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
            until = entry.get("exp")
            if until is not None and (type(until) is not int or not 0 <= until <= MAX_NUMERIC_DATE):
                raise TokenError("JWKS key exp is not a whole number of seconds", reason="token.bad_jwks")
            keys[entry["kid"]] = VerificationKey(entry["kid"], key, until=until)
        self._keys = keys

    def verification_keys(self, now: float | None = None) -> Mapping[str, VerificationKey]:
        """The keys trusted at ``now``: a retired key's ``exp`` ends it here too, with no push needed."""
        keys = self._keys
        if now is None or all(k.until is None or now < k.until for k in keys.values()):
            return keys
        return {kid: k for kid, k in keys.items() if k.until is None or now < k.until}

    def revoke(self, kid: str) -> bool:
        """Stop trusting ``kid`` (a copy-on-write swap: a verification in flight keeps its snapshot)."""
        if kid not in self._keys:
            return False
        self._keys = {k: v for k, v in self._keys.items() if k != kid}
        return True


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
        """A signed JWT bound to ``cert_der`` (RFC 8705): a workload's own certificate, or for a person
        (any subject that is not ``spiffe://``, with ``amr`` and ``auth_time``) the desk device's."""
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
        person = not sub.startswith("spiffe://")
        if person and (not amr or auth_time is None):
            raise TokenError("a person's token needs amr and auth_time", reason="token.missing_claim")
        if cert_der is None:
            raise TokenError("a person's token must be bound to the desk device's certificate" if person
                             else "a workload token must be bound to its certificate", reason="token.unbound")
        try:
            cert_id = str(peer_spiffe_id(load_certificate(cert_der)))
        except IdentityError as exc:
            raise TokenError(f"binding certificate unusable: {exc.detail}", reason="token.cert_invalid") from exc
        if person and not is_desk_device(cert_id):
            raise TokenError(f"a person's token binds to a desk device, not {cert_id}", reason="token.not_desk_device")
        if not person and cert_id != sub:
            raise TokenError(f"certificate is {cert_id}, subject is {sub}", reason="token.sub_mismatch")
        payload["cnf"] = {"x5t#S256": x5t_s256(cert_der)}
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


def _numeric_date(payload: Mapping[str, Any], name: str) -> int:
    """A NumericDate as this issuer writes it: a whole number of seconds in [0, :data:`MAX_NUMERIC_DATE`].

    Floats, booleans, strings, negatives and integers too large for a float (``10**400``)
    are refused (``token.missing_claim``), never converted.
    """
    value = payload.get(name)
    if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
        raise TokenError(f"claim {name!r} missing or not a whole number of seconds in [0, {MAX_NUMERIC_DATE}]",
                         reason="token.missing_claim")
    return value


def _text(value: Any, name: str) -> str:
    """A claim's string value: non-empty (``token.missing_claim``) and encodable text (``token.malformed``:
    a lone surrogate such as ``"\\ud800"`` decodes from JSON but is no Unicode text)."""
    if not isinstance(value, str) or not value:
        raise TokenError(f"claim {name!r} missing or not a non-empty string", reason="token.missing_claim")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TokenError(f"claim {name!r} is not valid Unicode text", reason="token.malformed") from None
    return value


def is_desk_device(spiffe_id: str) -> bool:
    """``spiffe://<td>/desk/<host>``: a desk terminal's device certificate, the one a person's token binds to."""
    parts = spiffe_id.split("/")
    return len(parts) == 5 and parts[0] == "spiffe:" and parts[3] == DESK_SEGMENT and bool(parts[4])


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
        keys = self._keys.verification_keys(now)
        if isinstance(kid, str) and kid not in keys and getattr(self._keys, "refresh", None) is not None \
                and self._keys.refresh():  # type: ignore[attr-defined]  # a key another replica made
            keys = self._keys.verification_keys(now)
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
        exp = _numeric_date(payload, "exp")
        for name in _REQUIRED:
            if name not in payload:
                raise TokenError(f"no {name} claim", reason="token.missing_claim")
        nbf, iat = _numeric_date(payload, "nbf"), _numeric_date(payload, "iat")
        iss, sub, jti = (_text(payload[name], name) for name in ("iss", "sub", "jti"))
        if not hmac.compare_digest(iss.encode(), self.issuer.encode()):
            raise TokenError(f"issuer {iss[:64]!r} is not {self.issuer!r}", reason="token.wrong_iss")
        aud_claim = payload["aud"]
        audiences = (aud_claim,) if isinstance(aud_claim, str) else aud_claim
        if not isinstance(audiences, (list, tuple)) or not audiences or not all(isinstance(a, str) for a in audiences):
            raise TokenError("aud must be a string or a non-empty list of strings", reason="token.malformed")
        audiences = tuple(_text(a, "aud") for a in audiences)
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
            raise TokenError(f"lifetime {exp - iat}s exceeds {self._max_ttl}s", reason="token.lifetime")
        amr: tuple[str, ...] = ()
        auth_time: int | None = None
        if not sub.startswith("spiffe://"):  # a person: MFA evidence is part of the token
            raw_amr = payload.get("amr")
            if not isinstance(raw_amr, list) or not raw_amr or "auth_time" not in payload:
                raise TokenError("a person's token needs amr and auth_time", reason="token.missing_claim")
            amr = tuple(_text(a, "amr") for a in raw_amr)
            auth_time = _numeric_date(payload, "auth_time")
        scope = _text(payload["scope"], "scope") if payload.get("scope", "") != "" else ""
        cnf_thumb = self._check_binding(payload, sub, cert_der)
        if self._replay is not None:
            self._replay.check_and_remember(jti, exp, now)
        return Claims(iss=iss, sub=sub, aud=audiences, exp=float(exp), nbf=float(nbf), iat=float(iat), jti=jti,
                      kid=kid, cnf_x5t_s256=cnf_thumb, amr=amr,
                      auth_time=float(auth_time) if auth_time is not None else None, scope=scope)

    def _check_binding(self, payload: dict[str, Any], sub: str, cert_der: bytes | None) -> str:
        """Every token is bound (RFC 8705): a workload's to its own certificate, a person's to the
        certificate of the desk device they signed in at. Returns the bound thumbprint."""
        cnf = payload.get("cnf")
        if cnf is None:
            raise TokenError("token is not bound to a certificate", reason="token.unbound")
        if not isinstance(cnf, dict) or "x5t#S256" not in cnf:
            raise TokenError("cnf without x5t#S256", reason="token.malformed")
        thumb = _text(cnf["x5t#S256"], "cnf.x5t#S256")
        if not _X5T_S256.fullmatch(thumb):
            raise TokenError("cnf x5t#S256 is not a base64url SHA-256 thumbprint", reason="token.malformed")
        if cert_der is None:
            raise TokenError("bound token presented without a client certificate", reason="token.cert_required")
        if not hmac.compare_digest(thumb.encode(), x5t_s256(cert_der).encode()):
            raise TokenError("token is bound to another certificate", reason="token.cnf_mismatch")
        try:
            cert = load_certificate(cert_der)
            cert_id = str(peer_spiffe_id(cert))
        except IdentityError as exc:
            raise TokenError(f"presented certificate unusable: {exc.detail}", reason="token.cert_invalid") from exc
        if sub.startswith("spiffe://"):
            if cert_id != sub:
                raise TokenError(f"certificate is {cert_id}, token subject {sub}", reason="token.sub_mismatch")
        elif not is_desk_device(cert_id):
            raise TokenError(f"a person's token is bound to {cert_id}, not a desk device",
                             reason="token.not_desk_device")
        self._refuse_revoked(cert.serial_number, cert_id)
        if cert_id != sub:  # a person: the person may be revoked too, whatever the device
            self._refuse_revoked(-1, sub)
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
