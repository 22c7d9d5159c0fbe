"""People: roles, argon2id passwords, TOTP MFA, lockout and step-up.

Users have one role (trader, risk_officer, security_officer, developer,
auditor). A login needs the password (argon2id, argon2-cffi) *and* a TOTP code
(RFC 6238, pyotp; one step of clock drift either way). Refusals, each with a
reason code and an event:

* unknown user or wrong password: ``user.bad_credentials`` (the same answer, and
  an argon2 verification either way, so names cannot be probed);
* wrong TOTP code: ``user.bad_totp``; a code of a step already used (or older):
  ``user.totp_replay`` - the last accepted step is stored per user;
* after ``max_failures`` consecutive failures the account is locked for
  ``lockout_s``: ``user.locked`` (``USER_LOCKED``), checked before the password.

Step-up: a privileged action (:func:`UserDirectory.require_step_up`) needs an
MFA no older than ``step_up_max_age_s``; :meth:`UserDirectory.step_up`
re-verifies a TOTP code to refresh it. Time is passed in.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace

import pyotp
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from trustfabric.audit.events import Emitter, Kind
from trustfabric.identity.errors import UserError
from trustfabric.identity.store import IdentityStore, UserRow

__all__ = [
    "ROLES",
    "PRIVILEGED_ROLES",
    "UserPolicy",
    "UserDirectory",
    "Enrolment",
    "Authentication",
    "default_hasher",
    "TOTP_ISSUER",
    "valid_name",
]

ROLES = frozenset({"trader", "risk_officer", "security_officer", "developer", "auditor"})
PRIVILEGED_ROLES = frozenset({"risk_officer", "security_officer"})
TOTP_ISSUER = "trustfabric"
TOTP_INTERVAL_S = 30
MIN_PASSWORD_LENGTH = 12


OPERATOR_SESSIONS_KEY = "operator_sessions:"


def valid_name(name: object) -> bool:
    """A user name: 1-64 letters, digits, ``-``, ``_`` and ``.``."""
    return (isinstance(name, str) and 0 < len(name) <= 64
            and name.replace("-", "").replace("_", "").replace(".", "").isalnum())


def default_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's RFC 9106 low-memory defaults."""
    return PasswordHasher(type=Type.ID)


@dataclass(frozen=True)
class UserPolicy:
    max_failures: int = 5
    lockout_s: float = 900.0
    step_up_max_age_s: float = 300.0
    totp_drift_steps: int = 1


@dataclass(frozen=True)
class Enrolment:
    name: str
    role: str
    totp_secret: str
    provisioning_uri: str


@dataclass(frozen=True)
class Authentication:
    """A successful login: what a person's token is made of."""

    name: str
    role: str
    auth_time: float
    amr: tuple[str, ...] = ("pwd", "otp")


_DUMMY_HASHES: dict[tuple, str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    """A hash of no one's password with ``hasher``'s parameters (an unknown user costs a full verify).

    Computed once per parameter set and process: the hash itself is public-safe (it matches
    no password anyone has), and a directory per request no longer pays a second argon2 run.
    """
    key = (hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.hash_len, hasher.salt_len,
           hasher.type)
    cached = _DUMMY_HASHES.get(key)
    if cached is None:
        cached = _DUMMY_HASHES[key] = hasher.hash("not a password of anyone")
    return cached


class UserDirectory:
    """Enrolment, login, MFA and step-up over an :class:`IdentityStore`."""

    def __init__(
        self,
        store: IdentityStore,
        emitter: Emitter,
        policy: UserPolicy = UserPolicy(),
        hasher: PasswordHasher | None = None,
        totp_issuer: str = TOTP_ISSUER,
    ) -> None:
        self._store = store
        self._emitter = emitter
        self.policy = policy
        self._hasher = hasher or default_hasher()
        self._issuer = totp_issuer
        self._dummy_hash = _dummy_hash(self._hasher)

    # ------------------------------------------------------------------ enrolment

    def enrol(self, name: str, role: str, password: str, now: float, *, by: str = "",
              bootstrap: bool = False) -> Enrolment:
        """Enrol a person; ``by`` names who enrolled them (``bootstrap``: the first person of an empty store)."""
        self.check_enrolment(name, role)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"password shorter than {MIN_PASSWORD_LENGTH} characters", reason="user.weak_password")
        if self._store.get_user(name) is not None:
            raise UserError(f"user {name} exists", reason="user.exists")
        secret = pyotp.random_base32()
        self._store.put_user(UserRow(name=name, role=role, password_hash=self._hasher.hash(password),
                                     totp_secret=secret))
        self._emitter.emit(Kind.ADMIN_ACTION, principal=by, action="user.enrol", resource=name, decision="allow",
                           detail={"role": role, "bootstrap": bootstrap})
        uri = pyotp.TOTP(secret, interval=TOTP_INTERVAL_S).provisioning_uri(name=name, issuer_name=self._issuer)
        return Enrolment(name, role, secret, uri)

    @staticmethod
    def check_enrolment(name: str, role: str) -> None:
        """Refuse a bad name or role (``user.bad_name``, ``user.bad_role``) before anything else happens."""
        if not valid_name(name):
            raise UserError(f"bad user name {str(name)[:64]!r}", reason="user.bad_name")
        if role not in ROLES:
            raise UserError(f"role {role!r} is not one of {sorted(ROLES)}", reason="user.bad_role")

    def get(self, name: str) -> UserRow | None:
        return self._store.get_user(name) if valid_name(name) else None

    def is_empty(self) -> bool:
        """No person enrolled yet (the one moment an enrolment needs no operator)."""
        return not self._store.list_users()

    # ------------------------------------------------------------------ operator sessions (server side)

    def operator_sessions(self, name: str) -> dict[str, dict]:
        """``name``'s operator session records by session id (:mod:`trustfabric.identity.operators`)."""
        records = self._store.get_meta(OPERATOR_SESSIONS_KEY + name, {}) if valid_name(name) else {}
        return records if isinstance(records, dict) else {}

    def put_operator_sessions(self, name: str, records: dict[str, dict]) -> None:
        if not valid_name(name):
            raise UserError(f"bad user name {str(name)[:64]!r}", reason="user.bad_name")
        self._store.set_meta(OPERATOR_SESSIONS_KEY + name, records)

    # ------------------------------------------------------------------ checks

    def _refuse(self, row: UserRow | None, name: str, reason: str, kind: str, now: float) -> UserError:
        """Count a failure (locking when over the limit), log it, and return the error to raise."""
        name = name if valid_name(name) else "(invalid name)"
        if row is not None and reason != "user.locked":
            failures = row.failed_attempts + 1
            locked_until = row.locked_until
            if failures >= self.policy.max_failures:
                locked_until = now + self.policy.lockout_s
                failures = 0
                self._emitter.emit(Kind.USER_LOCKED, principal=name, decision="deny", reason="user.locked",
                                   detail={"locked_until": locked_until})
            self._store.put_user(replace(row, failed_attempts=failures, locked_until=locked_until))
        self._emitter.emit(kind, principal=name, decision="deny", reason=reason)
        return UserError(f"{name}: {reason.split('.', 1)[1].replace('_', ' ')}", reason=reason)

    def _check_totp(self, row: UserRow, code: str, now: float) -> int:
        """The step (within the allowed drift) whose code matches, or -1."""
        totp = pyotp.TOTP(row.totp_secret, interval=TOTP_INTERVAL_S)
        code = (code or "").strip()
        current = int(now // TOTP_INTERVAL_S)
        matched = -1
        for step in range(current - self.policy.totp_drift_steps, current + self.policy.totp_drift_steps + 1):
            if hmac.compare_digest(totp.at(step * TOTP_INTERVAL_S).encode(), code.encode()):
                matched = step
        return matched

    def _locked(self, row: UserRow, now: float) -> bool:
        return row.locked_until > now

    def login(self, name: str, password: str, totp_code: str, now: float) -> Authentication:
        """Password and TOTP; raises :class:`UserError` with a reason code."""
        row = self.get(name)
        if row is not None and self._locked(row, now):
            raise self._refuse(row, name, "user.locked", Kind.USER_LOGIN, now)
        try:
            self._hasher.verify(row.password_hash if row else self._dummy_hash, password)
            password_ok = row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            password_ok = False
        if not password_ok:
            raise self._refuse(row, name, "user.bad_credentials", Kind.USER_LOGIN, now)
        assert row is not None
        if self._hasher.check_needs_rehash(row.password_hash):
            row = replace(row, password_hash=self._hasher.hash(password))
        row = self._accept_totp(row, totp_code, now, Kind.USER_MFA)
        self._store.put_user(replace(row, failed_attempts=0, last_mfa_at=now))
        self._emitter.emit(Kind.USER_LOGIN, principal=name, decision="allow", detail={"role": row.role})
        self._emitter.emit(Kind.USER_MFA, principal=name, decision="allow", detail={"method": "totp"})
        return Authentication(name=name, role=row.role, auth_time=now)

    def _accept_totp(self, row: UserRow, code: str, now: float, kind: str) -> UserRow:
        step = self._check_totp(row, code, now)
        if step < 0:
            raise self._refuse(row, row.name, "user.bad_totp", kind, now)
        if step <= row.totp_last_step:
            raise self._refuse(row, row.name, "user.totp_replay", kind, now)
        return replace(row, totp_last_step=step)

    def step_up(self, name: str, totp_code: str, now: float) -> Authentication:
        """Re-verify a TOTP code for a privileged action; refreshes the MFA time."""
        row = self.get(name)
        if row is None:
            raise self._refuse(None, name, "user.unknown", Kind.USER_STEP_UP, now)
        if self._locked(row, now):
            raise self._refuse(row, name, "user.locked", Kind.USER_STEP_UP, now)
        row = self._accept_totp(row, totp_code, now, Kind.USER_STEP_UP)
        self._store.put_user(replace(row, failed_attempts=0, last_mfa_at=now))
        self._emitter.emit(Kind.USER_STEP_UP, principal=name, decision="allow")
        return Authentication(name=name, role=row.role, auth_time=now)

    def require_step_up(self, name: str, action: str, now: float, max_age_s: float | None = None) -> None:
        """Allow ``action`` only if ``name``'s last MFA is recent enough (``user.step_up_required``)."""
        limit = self.policy.step_up_max_age_s if max_age_s is None else max_age_s
        row = self.get(name)
        if row is None or self._locked(row, now) or row.last_mfa_at <= 0 or now - row.last_mfa_at > limit:
            self._emitter.emit(Kind.USER_STEP_UP, principal=name, action=action, decision="deny",
                               reason="user.step_up_required")
            raise UserError(f"{action} needs an MFA within the last {limit:.0f}s", reason="user.step_up_required")
