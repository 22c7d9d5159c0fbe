"""People as operators: every change of security state is made by a person proven now and allowed by Cedar.

A command that changes security state (a quarantine, a signal, a revocation, a
promotion, a kill switch) carries an :class:`OperatorCredential`; the
:class:`OperatorAuthority` of whoever applies the change (the running control
plane, or the command itself when no floor runs) turns it into an
:class:`Operator` or refuses:

1. **authenticate** - the person of the identity plane, either with password and
   TOTP in the request, or with an *operator session* (below) and a proof of
   possession of the machine key the session is bound to;
2. **step-up** - the actions in :data:`STEP_UP_ACTIONS` also need a TOTP code
   verified with the request itself, whatever the session's age
   (``user.step_up_required`` otherwise);
3. **authorize** - Cedar decides on the person's role in the identity plane, their
   live signals and what the request proved
   (:meth:`~trustfabric.policy.engine.PolicyEngine.decide_operator`, the action
   ``operator.<action>`` on the ``Control`` of :data:`ACTIONS`;
   ``operator.not_permitted`` otherwise).

Every outcome is an audit event under the person's name (``user:<name>``):
``operator.<action>`` allow or deny with the reason; session login and logout are
``session.open`` / ``session.close`` events.

Operator sessions (``trustfabric login``, cached like ``gh auth``). The person logs
in once with password and TOTP (:meth:`SessionIssuer.login`, through
:meth:`~trustfabric.identity.users.UserDirectory.login`: lockout and TOTP replay
apply). The identity plane signs a JWT with its token key ring (header ``typ``
``op+jwt``; ``aud`` ``operator``, ``sub`` ``user:NAME``, ``role``, ``auth_time``,
``amr``, ``exp`` at most :attr:`SessionPolicy.max_age_s` after login, ``jti`` the
session id) whose ``cnf.jwk`` (RFC 7800) is the public half of a per-machine
Ed25519 key. The machine key never leaves ``$TRUSTFABRIC_HOME/operator/`` (0600,
:class:`OperatorCache`). Each request then carries a proof (``typ``
``op-pop+jwt``, DPoP-like, :func:`make_proof`): a signature by the machine key over
the action, the target, a timestamp, a nonce and the session's hash. The authority
refuses, each with a reason: a session that does not verify against the store's
keys (``operator.session_invalid``), that expired (``operator.session_expired``),
sat idle too long (``operator.session_idle``), was logged out
(``operator.session_ended``) or whose person changed role
(``operator.session_stale``); a missing proof (``operator.proof_missing``), one
not signed by the session's machine key (``operator.proof_invalid``), for another
request (``operator.proof_mismatch``), outside the freshness window
(``operator.proof_stale``) or seen before (``operator.proof_replayed``). A copied
session file without the machine key is useless. Session records (last use, the
recent proof nonces, logged out or not) live in the identity store, so the same
checks hold offline and inside the control plane; both read the verification keys
from the store at each request (:class:`StoreKeys`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.audit.events import Emitter, Kind
from trustfabric.clock import FakeClock
from trustfabric.errors import TrustFabricError
from trustfabric.keyfiles import key_to_pem, write_private_file
from trustfabric.identity.errors import UserError
from trustfabric.identity.store import IdentityStore
from trustfabric.identity.tokens import ALGORITHM, KeyRing, KeySource, VerificationKey, jwk_thumbprint
from trustfabric.identity.users import Authentication, UserDirectory, valid_name

if TYPE_CHECKING:  # typing only: the identity plane does not depend on the policy engine at run time
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.policy.decision import Decision

__all__ = [
    "ACTIONS",
    "STEP_UP_ACTIONS",
    "SESSION_AUDIENCE",
    "OperatorCredential",
    "Operator",
    "OperatorAuthority",
    "OperatorRefused",
    "OperatorPolicy",
    "OperatorSession",
    "OperatorCache",
    "SessionIssuer",
    "SessionPolicy",
    "StoreKeys",
    "VerifiedSession",
    "machine_jwk",
    "make_proof",
]

# The operator actions (the CLI's state-changing commands) and the security control each changes:
# the Cedar action is ``operator.<action>`` on ``Control::"<control>"`` (policies/people.cedar grants them).
ACTIONS: dict[str, str] = {
    "quarantine": "containment",
    "release": "containment",
    "signal.quarantine": "containment",
    "signal.release": "containment",
    "signal.risk": "signals",
    "signal.intel": "signals",
    "signal.observe": "signals",
    "signal.market": "signals",
    "signal.kill": "signals",
    "signal.auth": "signals",
    "signal.posture": "signals",
    "killswitch.halt": "kill-switch",
    "killswitch.reduce": "kill-switch",
    "killswitch.resume": "kill-switch",
    "ca.init": "ca",
    "ca.issue": "ca",
    "ca.issue_unattested": "ca",
    "ca.revoke": "ca",
    "ca.promote": "ca",
    "ca.rotate": "ca",
    "ca.register_host": "ca",
    "token.issue": "tokens",
    "token.rotate_key": "tokens",
    "token.revoke_key": "tokens",
    "user.add": "people",
    "policy.bundle": "policy",
    "policy.sign": "policy",
    "policy.activate": "policy",
    "policy.rollback": "policy",
    "data.rotate": "data",
    "data.shred": "data",
    "release.submit": "releases",
    "release.approve": "releases",
    "release.promote": "releases",
    "fix.client_add": "fix-clients",
    "fix.client_renew": "fix-clients",
    "host.enrol": "hosts",
    # the web console's pages (reads; the console's actions are the operator actions above)
    "console.overview": "console",
    "console.decisions": "console",
    "console.map": "console",
    "console.incidents": "console",
    "console.killswitch": "console",
    "console.identities": "console",
    "console.audit": "console",
    "console.reports": "console",
}

# The most dangerous actions: a TOTP code verified with the request itself, whatever the session's age
# (guards.cedar holds the same list as ``guard.operator-step-up``; a test keeps the two equal).
STEP_UP_ACTIONS = frozenset({"release", "signal.release", "ca.promote", "ca.issue_unattested", "killswitch.resume",
                             "token.revoke_key", "policy.sign", "policy.activate", "policy.rollback",
                             "data.rotate", "data.shred", "release.approve", "release.promote", "host.enrol"})

SESSION_AUDIENCE = "operator"
SESSION_TYP = "op+jwt"
PROOF_TYP = "op-pop+jwt"
LOGOUT_ACTION = "session.logout"
NEVER_S = 10**9  # step-up age when there was none
MAX_JWT_CHARS = 8192
MAX_TARGET_CHARS = 4096
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SUB = "user:"


class OperatorRefused(TrustFabricError):
    """An operator request refused before anything changed (``operator.*``)."""

    reason = "operator.refused"


class OperatorCredential(msgspec.Struct, frozen=True, kw_only=True):
    """What a person's command carries: who, and the proof made now.

    Either ``password`` + ``totp`` (a login for this one request; ``totp`` also serves
    as the step-up then), or ``session`` (an operator session token from
    ``trustfabric login``) + ``proof`` (the machine key's signature over this very
    request, :func:`make_proof`). ``step_up`` is a fresh TOTP code for the actions of
    :data:`STEP_UP_ACTIONS`.
    """

    user: str
    password: str = ""
    totp: str = ""
    step_up: str = ""
    session: str = ""
    proof: str = ""


@dataclass(frozen=True)
class Operator:
    """An authenticated, authorized person, as the audit log names them."""

    name: str
    role: str
    auth_time: float
    step_up_at: float = 0.0
    session_id: str = ""  # the operator session used ("" for a password login in the request)
    policy_ids: tuple[str, ...] = ()  # the Cedar policies that allowed it

    @property
    def principal(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True)
class SessionPolicy:
    """Lifetimes of operator sessions and their proofs (seconds)."""

    max_age_s: float = 8 * 3600.0  # from login to expiry, whatever the use
    idle_s: float = 3600.0  # unused for longer than this: ended
    proof_window_s: float = 60.0  # a proof older than this (or that far in the future) is stale
    max_sessions: int = 16  # per person; the oldest are dropped at login


class OperatorSession(msgspec.Struct, frozen=True, kw_only=True):
    """A session as issued at login: also the session file (what ``trustfabric login`` leaves for the next commands)."""

    user: str
    role: str
    token: str
    session_id: str
    auth_time: float
    expires_at: float
    idle_s: float


class OperatorPolicy(Protocol):
    """The decision port (:class:`~trustfabric.policy.engine.PolicyEngine` is one)."""

    def decide_operator(self, person: str, roles: tuple[str, ...], action: str, control: str, *,
                        mfa: bool | None = None, step_up_age_s: int | None = None,
                        now: float | None = None) -> "Decision": ...


class StoreKeys:
    """The token key ring as the store holds it at each request: a key rotated, retired past its window or
    revoked by another process (a command, the control plane) is seen at once, and so are its sessions."""

    def __init__(self, store: IdentityStore) -> None:
        self._store = store

    def verification_keys(self, now: float) -> Mapping[str, VerificationKey]:
        return KeyRing(self._store, clock=FakeClock(now)).verification_keys(now)  # a clock stopped at the request


# --------------------------------------------------------------------------- encoding helpers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(segment: str, reason: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise OperatorRefused("not base64url", reason=reason)
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise OperatorRefused(f"bad base64url: {exc}", reason=reason) from exc


def _token_hash(token: str) -> str:
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


def machine_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK (RFC 8037 OKP) of a machine key, as a session's ``cnf.jwk``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def _time(payload: Mapping[str, Any], name: str, reason: str) -> float:
    """A time claim: a finite number within [0, 2**40); anything else refuses (never an overflow)."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OperatorRefused(f"claim {name!r} missing or not a number", reason=reason)
    if isinstance(value, int) and not 0 <= value < 2**40:
        raise OperatorRefused(f"claim {name!r} out of range", reason=reason)
    if isinstance(value, float) and not (math.isfinite(value) and 0 <= value < 2**40):
        raise OperatorRefused(f"claim {name!r} out of range", reason=reason)
    return float(value)


def _string(payload: Mapping[str, Any], name: str, reason: str, limit: int = 256) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise OperatorRefused(f"claim {name!r} missing or not a string", reason=reason)
    return value


def _decode_jws(token: object, key_for: Any, typ: str, reason: str) -> tuple[dict, dict]:
    """Header and payload of a compact EdDSA JWS whose signature verifies with ``key_for(header)``.

    Every failure is an :class:`OperatorRefused` with ``reason``; ``key_for`` raises its own.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_JWT_CHARS or not token.isascii():
        raise OperatorRefused("not a compact JWS", reason=reason)
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise OperatorRefused("not a compact JWS", reason=reason)
    try:
        header = json.loads(_b64url_decode(parts[0], reason))
        payload = json.loads(_b64url_decode(parts[1], reason))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OperatorRefused("header or payload is not JSON", reason=reason) from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise OperatorRefused("header or payload is not a JSON object", reason=reason)
    if header.get("alg") != ALGORITHM or header.get("typ") != typ or "crit" in header:
        raise OperatorRefused(f"header must be alg {ALGORITHM}, typ {typ}, no crit", reason=reason)
    public_key = key_for(header)
    try:
        jwt.PyJWS().decode_complete(token, key=public_key, algorithms=[ALGORITHM])
    except jwt.InvalidTokenError as exc:
        raise OperatorRefused("signature does not verify", reason=reason) from exc
    return header, payload


# --------------------------------------------------------------------------- the client side


def make_proof(machine_key: Ed25519PrivateKey, session_token: str, action: str, target: str, now: float,
               nonce: str | None = None) -> str:
    """The machine key's proof of possession for one request (``action`` on ``target`` at ``now``)."""
    payload = {"act": action, "tgt": target, "iat": round(float(now), 3), "jti": nonce or uuid.uuid4().hex,
               "ath": _token_hash(session_token)}
    return jwt.encode(payload, machine_key, algorithm=ALGORITHM, headers={"typ": PROOF_TYP})


class OperatorCache:
    """The operator's files on this machine: ``machine.key`` (Ed25519, 0600) and ``session.json`` (0600)."""

    KEY_FILE = "machine.key"
    SESSION_FILE = "session.json"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _private(self, path: Path) -> bytes | None:
        """A 0600 file's bytes, ``None`` when absent; a file others can read is refused."""
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OperatorRefused(f"{path}: {exc}", reason="operator.cache_unreadable") from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise OperatorRefused(f"{path} is readable by others (chmod 600)", reason="operator.cache_exposed")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise OperatorRefused(f"{path}: {exc}", reason="operator.cache_unreadable") from exc

    def machine_key(self, create: bool = False) -> Ed25519PrivateKey | None:
        """This machine's key (generated on first use when ``create``)."""
        path = self.directory / self.KEY_FILE
        data = self._private(path)
        if data is None:
            if not create:
                return None
            key = Ed25519PrivateKey.generate()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private_file(path, key_to_pem(key))
            return key
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise OperatorRefused(f"{path}: not a private key", reason="operator.cache_unreadable") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise OperatorRefused(f"{path}: not an Ed25519 key", reason="operator.cache_unreadable")
        return key

    def save_session(self, session: OperatorSession) -> None:
        tmp = self.directory / (self.SESSION_FILE + ".tmp")
        write_private_file(tmp, msgspec.json.encode(session))
        os.replace(tmp, self.directory / self.SESSION_FILE)

    def session(self) -> OperatorSession | None:
        data = self._private(self.directory / self.SESSION_FILE)
        if data is None:
            return None
        try:
            return msgspec.json.decode(data, type=OperatorSession)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise OperatorRefused(f"session file unreadable: {exc}", reason="operator.cache_unreadable") from exc

    def clear_session(self) -> bool:
        try:
            (self.directory / self.SESSION_FILE).unlink()
            return True
        except FileNotFoundError:
            return False


# --------------------------------------------------------------------------- the identity plane's side


@dataclass(frozen=True)
class VerifiedSession:
    """A session that verified (claims checked, record live); not yet its proof."""

    name: str
    role: str
    session_id: str
    auth_time: float
    amr: tuple[str, ...]
    expires_at: float
    cnf: Ed25519PublicKey


class _Sessions:
    """Verification of session tokens and proofs against the store's keys and session records."""

    def __init__(self, users: UserDirectory, keys: KeySource, issuer: str, policy: SessionPolicy) -> None:
        self._users = users
        self._keys = keys
        self.issuer = issuer
        self.policy = policy
        self._lock = threading.Lock()

    def _key_for(self, header: dict, now: float) -> Ed25519PublicKey:
        kid = header.get("kid")
        keys = self._keys.verification_keys(now)
        if not isinstance(kid, str) or kid not in keys:
            raise OperatorRefused("signed by a key the identity plane does not hold",
                                  reason="operator.session_invalid")
        return keys[kid].public_key

    def verify(self, token: object, now: float) -> VerifiedSession:
        """The claims of a live session token (no proof checked); raises :class:`OperatorRefused`."""
        bad = "operator.session_invalid"
        _, claims = _decode_jws(token, lambda header: self._key_for(header, now), SESSION_TYP, bad)
        if claims.get("iss") != self.issuer or claims.get("aud") != SESSION_AUDIENCE:
            raise OperatorRefused("not an operator session of this identity plane", reason=bad)
        sub, sid, role = _string(claims, "sub", bad), _string(claims, "jti", bad), _string(claims, "role", bad)
        name = sub.removeprefix(_SUB)
        if not sub.startswith(_SUB) or not valid_name(name) or not _B64URL.fullmatch(sid):
            raise OperatorRefused("subject is not a person", reason=bad)
        iat, exp, auth_time = _time(claims, "iat", bad), _time(claims, "exp", bad), _time(claims, "auth_time", bad)
        amr = claims.get("amr")
        if not isinstance(amr, list) or not all(isinstance(a, str) for a in amr) or "otp" not in amr:
            raise OperatorRefused("a session needs a TOTP login (amr otp)", reason=bad)
        if exp - iat > self.policy.max_age_s or exp < iat or auth_time > iat:
            raise OperatorRefused("session lifetime outside the policy", reason=bad)
        cnf = claims.get("cnf")
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
                or not isinstance(jwk.get("x"), str) or not _B64URL.fullmatch(jwk["x"]):
            raise OperatorRefused("session not bound to a machine key (cnf.jwk)", reason=bad)
        try:
            machine = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"], bad))
        except ValueError as exc:
            raise OperatorRefused("cnf.jwk is not an Ed25519 key", reason=bad) from exc
        if iat > now + self.policy.proof_window_s:
            raise OperatorRefused("session issued in the future", reason=bad)
        if now >= exp:
            raise OperatorRefused(f"session of {name} expired", reason="operator.session_expired")
        record = self._users.operator_sessions(name).get(sid)
        if not isinstance(record, dict) or record.get("ended"):
            raise OperatorRefused(f"session of {name} was logged out or is unknown", reason="operator.session_ended")
        last = record.get("last_used", 0)
        if not isinstance(last, (int, float)) or now - float(last) > self.policy.idle_s:
            raise OperatorRefused(f"session of {name} idle over {self.policy.idle_s:.0f}s",
                                  reason="operator.session_idle")
        row = self._users.get(name)
        if row is None or row.role != role:
            raise OperatorRefused(f"{name}'s role changed since login; log in again", reason="operator.session_stale")
        if row.locked_until > now:
            raise UserError(f"{name}: locked", reason="user.locked")
        return VerifiedSession(name, role, sid, auth_time, tuple(amr), exp, machine)

    def use(self, token: str, proof: object, action: str, target: str, now: float) -> VerifiedSession:
        """Verify the session and this request's proof; remember the proof (no second use) and the use."""
        session = self.verify(token, now)
        if not proof:
            raise OperatorRefused("a session request needs the machine key's proof", reason="operator.proof_missing")
        _, claims = _decode_jws(proof, lambda header: session.cnf, PROOF_TYP, "operator.proof_invalid")
        ath = claims.get("ath")
        if not isinstance(ath, str) or not _B64URL.fullmatch(ath) \
                or not hmac.compare_digest(ath.encode(), _token_hash(token).encode()):
            raise OperatorRefused("proof made for another session", reason="operator.proof_mismatch")
        if claims.get("act") != action or claims.get("tgt") != target:
            raise OperatorRefused("proof made for another action or target", reason="operator.proof_mismatch")
        iat = _time(claims, "iat", "operator.proof_invalid")
        nonce = _string(claims, "jti", "operator.proof_invalid", 64)
        window = self.policy.proof_window_s
        if abs(now - iat) > window:
            raise OperatorRefused(f"proof made {now - iat:.0f}s from now, outside {window:.0f}s",
                                  reason="operator.proof_stale")
        with self._lock:
            records = self._users.operator_sessions(session.name)
            record = dict(records.get(session.session_id) or {})
            nonces = {k: v for k, v in (record.get("nonces") or {}).items()
                      if isinstance(v, (int, float)) and now - v <= 2 * window}
            if nonce in nonces:
                raise OperatorRefused("proof already used", reason="operator.proof_replayed")
            nonces[nonce] = iat
            record.update(last_used=now, nonces=nonces)
            records[session.session_id] = record
            self._users.put_operator_sessions(session.name, records)
        return session


class SessionIssuer:
    """Login and logout of operator sessions: the identity plane's half of ``trustfabric login``."""

    def __init__(self, users: UserDirectory, keys: KeyRing, issuer: str, emitter: Emitter,
                 policy: SessionPolicy = SessionPolicy()) -> None:
        self._users = users
        self._keys = keys
        self._emitter = emitter
        self._sessions = _Sessions(users, keys, issuer, policy)
        self.issuer = issuer
        self.policy = policy

    @classmethod
    def for_plane(cls, plane: "IdentityPlane", policy: SessionPolicy = SessionPolicy()) -> "SessionIssuer":
        return cls(plane.users(), plane.keys, plane.issuer_name, plane.emitter, policy)

    def login(self, name: str, password: str, totp: str, machine_key: Ed25519PublicKey,
              now: float) -> OperatorSession:
        """Password and TOTP now (lockout, replay), then a session bound to ``machine_key``."""
        auth: Authentication = self._users.login(name, password, totp, now)
        signing = self._keys.ensure(now)
        sid = uuid.uuid4().hex
        exp = int(now + self.policy.max_age_s)
        jwk = machine_jwk(machine_key)
        payload = {"iss": self.issuer, "sub": _SUB + auth.name, "aud": SESSION_AUDIENCE, "iat": int(now),
                   "nbf": int(now), "exp": exp, "jti": sid, "role": auth.role, "auth_time": int(auth.auth_time),
                   "amr": list(auth.amr), "cnf": {"jwk": jwk}}
        token = jwt.encode(payload, signing.private_key, algorithm=ALGORITHM,
                           headers={"kid": signing.kid, "typ": SESSION_TYP})
        records = {k: v for k, v in self._users.operator_sessions(auth.name).items()
                   if isinstance(v, dict) and not v.get("ended") and v.get("exp", 0) > now}
        records[sid] = {"exp": exp, "last_used": now, "nonces": {}, "machine": jwk_thumbprint(machine_key)}
        while len(records) > self.policy.max_sessions:
            records.pop(min(records, key=lambda k: records[k].get("last_used", 0)))
        self._users.put_operator_sessions(auth.name, records)
        self._emitter.emit(Kind.SESSION_OPEN, principal=_SUB + auth.name, action="operator.login",
                           resource=SESSION_AUDIENCE, decision="allow", trace_id=sid,
                           detail={"role": auth.role, "exp": exp, "idle_s": self.policy.idle_s,
                                   "machine": jwk_thumbprint(machine_key)})
        return OperatorSession(user=auth.name, role=auth.role, token=token, session_id=sid,
                               auth_time=auth.auth_time, expires_at=float(exp), idle_s=self.policy.idle_s)

    def logout(self, token: str, proof: str, now: float) -> str:
        """End a session (the machine key's proof over ``session.logout`` of its id); returns the person."""
        try:
            session = self._sessions.use(token, proof, LOGOUT_ACTION, self._sessions.verify(token, now).session_id,
                                         now)
        except TrustFabricError as exc:
            self._emitter.emit(Kind.SESSION_CLOSE, action="operator.logout", resource=SESSION_AUDIENCE,
                               decision="deny", reason=exc.reason)
            raise
        records = self._users.operator_sessions(session.name)
        records[session.session_id] = dict(records.get(session.session_id) or {}, ended=now, nonces={})
        self._users.put_operator_sessions(session.name, records)
        self._emitter.emit(Kind.SESSION_CLOSE, principal=_SUB + session.name, action="operator.logout",
                           resource=SESSION_AUDIENCE, decision="allow", trace_id=session.session_id)
        return session.name

    def inspect(self, token: str, now: float) -> VerifiedSession:
        """The session's verified claims (``whoami``); refuses like a request would, uses nothing."""
        return self._sessions.verify(token, now)


def _event_name(name: object) -> str:
    return f"user:{name}" if valid_name(name) else "user:(invalid name)"


def _event_text(text: object) -> str:
    return str(text)[:200].encode("utf-8", "replace").decode("utf-8")


class OperatorAuthority:
    """Authenticate, step up and authorize (Cedar) one operator request; audit every outcome."""

    def __init__(self, users: UserDirectory, emitter: Emitter, policy: OperatorPolicy | None = None, *,
                 keys: KeySource | None = None, issuer: str = "",
                 sessions: SessionPolicy = SessionPolicy()) -> None:
        self._users = users
        self._emitter = emitter
        self._policy = policy
        self._sessions = _Sessions(users, keys, issuer, sessions) if keys is not None and issuer else None

    @classmethod
    def for_plane(cls, plane: "IdentityPlane", policy: OperatorPolicy, *, emitter: Emitter | None = None,
                  sessions: SessionPolicy = SessionPolicy()) -> "OperatorAuthority":
        """The authority over an identity plane's people and keys (as the store holds them) and ``policy``.

        The control plane: ``OperatorAuthority.for_plane(self.identity, self.engine, emitter=self.emitter)``;
        a command with no floor running: :func:`trustfabric.commands.common.offline_operator_authority`.
        """
        return cls(plane.users(), emitter or plane.emitter, policy, keys=StoreKeys(plane.store),
                   issuer=plane.issuer_name, sessions=sessions)

    def _authenticate(self, credential: OperatorCredential, action: str, target: str,
                      now: float) -> tuple[str, str, float, tuple[str, ...], str]:
        """(name, role, auth_time, amr, session id) of the person behind the request."""
        if credential.session:
            if self._sessions is None:
                raise OperatorRefused("this authority takes no sessions", reason="operator.session_invalid")
            session = self._sessions.use(credential.session, credential.proof, action, target, now)
            if session.name != credential.user.removeprefix(_SUB):
                raise OperatorRefused("the session is another person's", reason="operator.session_invalid")
            return session.name, session.role, session.auth_time, session.amr, session.session_id
        auth = self._users.login(credential.user.removeprefix(_SUB), credential.password, credential.totp, now)
        return auth.name, auth.role, auth.auth_time, auth.amr, ""

    def permitted(self, name: str, role: str, action: str, now: float) -> bool:
        """Whether Cedar lets a person of ``role`` ``action`` with a fresh step-up (to show a control, not to
        act: the request itself is authorized by :meth:`authorize`). Not audited; False when unknown."""
        if action not in ACTIONS or self._policy is None:
            return False
        try:
            decision = self._policy.decide_operator(name, (role,), f"operator.{action}", ACTIONS[action], mfa=True,
                                                    step_up_age_s=0, now=now)
        except TrustFabricError:
            return False
        return bool(decision.allowed)

    def authorize(self, credential: OperatorCredential, action: str, target: str, now: float) -> Operator:
        """The :class:`Operator` allowed ``action`` on ``target`` now; raises a typed refusal otherwise."""
        user = credential.user if isinstance(credential.user, str) else ""
        name = user.removeprefix(_SUB)
        detail: dict[str, Any] = {}
        try:
            if not isinstance(action, str) or action not in ACTIONS:
                raise OperatorRefused(f"no operator action {_event_text(action)!r}", reason="operator.unknown_action")
            if not isinstance(target, str) or len(target) > MAX_TARGET_CHARS:
                raise OperatorRefused("target must be a string", reason="operator.bad_target")
            if not valid_name(name):
                raise OperatorRefused("a person must run this (a valid user name)", reason="operator.unauthenticated")
            if self._policy is None:
                raise OperatorRefused("no policy engine to decide operator actions", reason="operator.no_policy")
            name, role, auth_time, amr, sid = self._authenticate(credential, action, target, now)
            detail = {"role": role, "via": "session" if sid else "password"}
            step_up_at = 0.0
            if credential.step_up:
                step_up_at = self._users.step_up(name, credential.step_up, now).auth_time
            elif not sid:  # the login of this request verified a TOTP code now
                step_up_at = auth_time
            if action in STEP_UP_ACTIONS and step_up_at != now:
                raise UserError(f"{action} needs a TOTP code verified with the request (--totp)",
                                reason="user.step_up_required")
            decision = self._policy.decide_operator(
                name, (role,), f"operator.{action}", ACTIONS[action], mfa="otp" in amr,
                step_up_age_s=int(math.ceil(now - step_up_at)) if step_up_at else NEVER_S, now=now)
            detail["policies"] = list(decision.policy_ids)
            if not decision.allowed:
                raise OperatorRefused(f"{role} may not {action} ({decision.reason}"
                                      f"{': ' + ', '.join(decision.policy_ids) if decision.policy_ids else ''}"
                                      f"{'; ' + '; '.join(decision.errors) if decision.errors else ''})",
                                      reason="operator.not_permitted")
        except TrustFabricError as exc:
            self._emitter.emit(Kind.ADMIN_ACTION, principal=_event_name(name), action=f"operator.{_event_text(action)}",
                               resource=_event_text(target), decision="deny", reason=exc.reason, detail=detail)
            raise
        operator = Operator(name=name, role=role, auth_time=auth_time, step_up_at=step_up_at, session_id=sid,
                            policy_ids=decision.policy_ids)
        self._emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action=f"operator.{action}",
                           resource=_event_text(target), decision="allow", trace_id=sid, detail=detail)
        return operator
