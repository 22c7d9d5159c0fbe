"""People as operators: every change of security state is made by a person proven now and allowed by policy.

A command that changes security state (a quarantine, a signal, a revocation, a
promotion, a kill switch) carries an :class:`OperatorCredential`; the
:class:`OperatorAuthority` of whoever applies the change (the running control
plane, or the command itself when no floor runs) turns it into an
:class:`Operator` or refuses:

1. **authenticate** - the person of the identity plane (password and TOTP);
2. **step-up** - the actions in :data:`STEP_UP_ACTIONS` also need a TOTP code
   verified *now* (``user.step_up_required`` otherwise);
3. **authorize** - the person's role must be allowed the action
   (``operator.not_permitted``).

Every outcome is an audit event under the person's name (``user:<name>``):
``operator.<action>`` allow or deny with the reason. The action names are the
vocabulary shared by the CLI, the control plane's operator endpoint and the
policies (:data:`ACTIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from trustfabric.audit.events import Emitter, Kind
from trustfabric.errors import TrustFabricError
from trustfabric.identity.users import UserDirectory

__all__ = ["ACTIONS", "STEP_UP_ACTIONS", "OperatorCredential", "Operator", "OperatorAuthority", "OperatorRefused"]

# The operator actions (the CLI's state-changing commands), by the roles that may take them.
ACTIONS: dict[str, frozenset[str]] = {
    "quarantine": frozenset({"security_officer"}),
    "release": frozenset({"security_officer"}),
    "signal.quarantine": frozenset({"security_officer"}),
    "signal.release": frozenset({"security_officer"}),
    "signal.risk": frozenset({"security_officer"}),
    "signal.intel": frozenset({"security_officer"}),
    "signal.observe": frozenset({"security_officer"}),
    "signal.market": frozenset({"risk_officer", "security_officer"}),
    "signal.kill": frozenset({"risk_officer", "security_officer"}),
    "signal.auth": frozenset({"security_officer"}),
    "signal.posture": frozenset({"security_officer"}),
    "killswitch.halt": frozenset({"risk_officer", "security_officer"}),
    "killswitch.reduce": frozenset({"risk_officer", "security_officer"}),
    "killswitch.resume": frozenset({"risk_officer", "security_officer"}),
    "ca.init": frozenset({"security_officer"}),
    "ca.issue": frozenset({"security_officer"}),
    "ca.issue_unattested": frozenset({"security_officer"}),
    "ca.revoke": frozenset({"security_officer"}),
    "ca.promote": frozenset({"security_officer"}),
    "ca.rotate": frozenset({"security_officer"}),
    "ca.register_host": frozenset({"security_officer"}),
    "token.issue": frozenset({"security_officer"}),
    "token.rotate_key": frozenset({"security_officer"}),
    "token.revoke_key": frozenset({"security_officer"}),
    "user.add": frozenset({"security_officer"}),
}

# The most dangerous actions: a TOTP code verified with the request itself, whatever the session's age.
STEP_UP_ACTIONS = frozenset({"release", "signal.release", "ca.promote", "ca.issue_unattested", "killswitch.resume",
                             "token.revoke_key"})


class OperatorRefused(TrustFabricError):
    """An operator request refused before anything changed (``operator.*``)."""

    reason = "operator.refused"


class OperatorCredential(msgspec.Struct, frozen=True, kw_only=True):
    """What a person's command carries: who, and the proof made now.

    ``password`` + ``totp`` log the person in for this one request; ``step_up`` is a
    fresh TOTP code for the actions of :data:`STEP_UP_ACTIONS` (``totp`` serves when
    the request is itself a fresh login).
    """

    user: str
    password: str = ""
    totp: str = ""
    step_up: str = ""


@dataclass(frozen=True)
class Operator:
    """An authenticated, authorized person, as the audit log names them."""

    name: str
    role: str
    auth_time: float
    step_up_at: float = 0.0

    @property
    def principal(self) -> str:
        return f"user:{self.name}"


class OperatorAuthority:
    """Authenticate, step up and authorize one operator request; audit every outcome."""

    def __init__(self, users: UserDirectory, emitter: Emitter) -> None:
        self._users = users
        self._emitter = emitter

    def authorize(self, credential: OperatorCredential, action: str, target: str, now: float) -> Operator:
        """The :class:`Operator` allowed ``action`` on ``target`` now; raises a typed refusal otherwise."""
        name = credential.user.removeprefix("user:")
        try:
            if action not in ACTIONS:
                raise OperatorRefused(f"no operator action {action!r}", reason="operator.unknown_action")
            auth = self._users.login(name, credential.password, credential.totp, now)
            step_up_at = 0.0
            if action in STEP_UP_ACTIONS:
                if credential.step_up:
                    step_up_at = self._users.step_up(name, credential.step_up, now).auth_time
                else:  # the login itself verified a TOTP code now
                    step_up_at = auth.auth_time
            if auth.role not in ACTIONS[action]:
                raise OperatorRefused(f"{auth.role} may not {action}", reason="operator.not_permitted")
        except TrustFabricError as exc:
            self._emitter.emit(Kind.ADMIN_ACTION, principal=f"user:{name}", action=f"operator.{action}",
                               resource=target[:200], decision="deny", reason=exc.reason)
            raise
        operator = Operator(name=auth.name, role=auth.role, auth_time=auth.auth_time, step_up_at=step_up_at)
        self._emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action=f"operator.{action}",
                           resource=target[:200], decision="allow", detail={"role": operator.role})
        return operator
