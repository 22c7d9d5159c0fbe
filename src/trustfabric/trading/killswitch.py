"""Kill switch: ACTIVE / REDUCING / HALTED per agent, account and firm, behind MFA and four-eyes.

State is kept per scope: the firm as a whole, each account, each agent. An order's
effective state is the most severe of its firm, account and agent states
(HALTED > REDUCING > ACTIVE).

* ``halt`` or ``reduce`` needs one privileged operator with fresh MFA. Halting
  returns the working orders in its scope, which the caller must cancel.
* Re-enabling (back to ACTIVE) is four-eyes: one privileged operator with fresh
  MFA requests it, a *different* privileged operator with fresh MFA approves it
  within ``request_ttl_s``. The requester may not approve their own request.

Who is privileged is decided elsewhere (the policy engine, a role check); MFA is
a fact from the identity plane. Both arrive here as plain data in
:class:`Operator`, so this module stays pure and exact.

Time: every ``now`` and ``Operator.mfa_at`` are on ONE clock, the caller's
monotonic clock (pre-trade-risk moves the identity plane's MFA time onto it at
receipt), so the MFA age and the resume request's TTL are durations a wall-clock
step cannot stretch or shrink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import msgspec

from trustfabric.trading.errors import KillSwitchRefused

ACTIVE = "ACTIVE"
REDUCING = "REDUCING"
HALTED = "HALTED"
_SEVERITY = {ACTIVE: 0, REDUCING: 1, HALTED: 2}

FIRM = "firm"
ACCOUNT = "account"
AGENT = "agent"
SCOPES = (FIRM, ACCOUNT, AGENT)

NOT_PRIVILEGED = "killswitch.not_privileged"
MFA_MISSING = "killswitch.mfa_missing"
MFA_STALE = "killswitch.mfa_stale"
FOUR_EYES = "killswitch.four_eyes"
NO_REQUEST = "killswitch.no_request"
BAD_SCOPE = "killswitch.bad_scope"


class Operator(msgspec.Struct, frozen=True):
    """A person acting on the kill switch, with facts established elsewhere.

    ``privileged``: the outcome of the role/policy check for this action.
    ``mfa_at``: this person's last successful MFA, on the clock the kill switch is given ``now`` on, or ``None``.
    """

    principal: str
    privileged: bool
    mfa_at: float | None = None


class WorkingOrderRef(msgspec.Struct, frozen=True):
    """A working order that a halt must cancel."""

    cl_ord_id: str
    account: str
    agent: str
    symbol: str


class KillSwitchChange(msgspec.Struct, frozen=True):
    """The outcome of an accepted command."""

    scope: str
    target: str
    state: str
    operator: str
    time: float
    cancels: tuple[WorkingOrderRef, ...] = ()
    pending: bool = False  # a resume request waiting for its second approver


@dataclass(slots=True)
class _ResumeRequest:
    requester: str
    at: float


class KillSwitch:
    """The three-level kill switch state and its authorization rules."""

    __slots__ = ("mfa_max_age_s", "request_ttl_s", "_states", "_requests", "firm_state", "history")

    def __init__(self, *, mfa_max_age_s: float = 300.0, request_ttl_s: float = 600.0) -> None:
        self.mfa_max_age_s = mfa_max_age_s
        self.request_ttl_s = request_ttl_s
        self.firm_state = ACTIVE
        self._states: dict[tuple[str, str], str] = {}
        self._requests: dict[tuple[str, str], _ResumeRequest] = {}
        self.history: list[KillSwitchChange] = []

    # --- reading ---------------------------------------------------------------------------
    def state_of(self, scope: str, target: str = "") -> str:
        if scope == FIRM:
            return self.firm_state
        return self._states.get((scope, target), ACTIVE)

    def effective_state(self, account: str, agent: str) -> str:
        """The most severe of firm, account and agent states (hot path: two dict lookups)."""
        firm = self.firm_state
        if firm == HALTED:
            return HALTED
        states = self._states
        if not states:
            return firm
        acc = states.get((ACCOUNT, account), ACTIVE)
        agt = states.get((AGENT, agent), ACTIVE)
        if acc == HALTED or agt == HALTED:
            return HALTED
        if firm == REDUCING or acc == REDUCING or agt == REDUCING:
            return REDUCING
        return ACTIVE

    def not_active(self) -> list[tuple[str, str, str]]:
        """(scope, target, state) for every scope that is not ACTIVE, firm first."""
        out = [(FIRM, "", self.firm_state)] if self.firm_state != ACTIVE else []
        out += [(scope, target, state) for (scope, target), state in sorted(self._states.items())]
        return out

    def resume_requested(self, scope: str, target: str = "") -> bool:
        """True while a first person's resume of (scope, target) waits for a second person's approval."""
        return (scope, target) in self._requests

    def reducing_scopes(self, account: str, agent: str) -> tuple[tuple[str, str], ...]:
        """The scopes currently in REDUCING that apply to this account/agent."""
        out = []
        if self.firm_state == REDUCING:
            out.append((FIRM, ""))
        if self._states.get((ACCOUNT, account)) == REDUCING:
            out.append((ACCOUNT, account))
        if self._states.get((AGENT, agent)) == REDUCING:
            out.append((AGENT, agent))
        return tuple(out)

    # --- authorization ------------------------------------------------------------------------
    def _check_operator(self, operator: Operator, now: float) -> None:
        if not operator.privileged:
            raise KillSwitchRefused(f"{operator.principal} is not privileged", reason=NOT_PRIVILEGED)
        if operator.mfa_at is None:
            raise KillSwitchRefused(f"{operator.principal} has no MFA", reason=MFA_MISSING)
        age = now - operator.mfa_at
        if age > self.mfa_max_age_s or age < -5.0:
            raise KillSwitchRefused(f"{operator.principal}'s MFA is {age:.0f}s old", reason=MFA_STALE)

    @staticmethod
    def _check_scope(scope: str, target: str) -> None:
        if scope not in SCOPES or (scope != FIRM and not target) or (scope == FIRM and target):
            raise KillSwitchRefused(f"bad scope {scope!r}/{target!r}", reason=BAD_SCOPE)

    def _set(self, scope: str, target: str, state: str) -> None:
        if scope == FIRM:
            self.firm_state = state
        elif state == ACTIVE:
            self._states.pop((scope, target), None)
        else:
            self._states[(scope, target)] = state

    # --- commands -----------------------------------------------------------------------------
    def halt(
        self, scope: str, target: str, operator: Operator, now: float, working: Iterable[WorkingOrderRef] = ()
    ) -> KillSwitchChange:
        """HALTED for the scope; returns the working orders in that scope to cancel."""
        self._check_scope(scope, target)
        self._check_operator(operator, now)
        self._set(scope, target, HALTED)
        self._requests.pop((scope, target), None)
        cancels = tuple(w for w in working if _in_scope(w, scope, target))
        change = KillSwitchChange(scope, target, HALTED, operator.principal, now, cancels)
        self.history.append(change)
        return change

    def reduce(self, scope: str, target: str, operator: Operator, now: float) -> KillSwitchChange:
        """REDUCING for the scope: only orders that reduce an existing position pass."""
        self._check_scope(scope, target)
        self._check_operator(operator, now)
        if self.state_of(scope, target) == HALTED:
            # Loosening HALTED to REDUCING is a re-enable step and needs four-eyes.
            raise KillSwitchRefused("HALTED is lifted only by a four-eyes resume", reason=FOUR_EYES)
        self._set(scope, target, REDUCING)
        change = KillSwitchChange(scope, target, REDUCING, operator.principal, now)
        self.history.append(change)
        return change

    def request_resume(self, scope: str, target: str, operator: Operator, now: float) -> KillSwitchChange:
        """First pair of eyes: ask to set the scope back to ACTIVE."""
        self._check_scope(scope, target)
        self._check_operator(operator, now)
        self._requests[(scope, target)] = _ResumeRequest(operator.principal, now)
        change = KillSwitchChange(scope, target, self.state_of(scope, target), operator.principal, now, pending=True)
        self.history.append(change)
        return change

    def approve_resume(self, scope: str, target: str, operator: Operator, now: float) -> KillSwitchChange:
        """Second pair of eyes: a different privileged person with fresh MFA; sets ACTIVE."""
        self._check_scope(scope, target)
        self._check_operator(operator, now)
        request = self._requests.get((scope, target))
        if request is None or now - request.at > self.request_ttl_s:
            self._requests.pop((scope, target), None)
            raise KillSwitchRefused("no pending resume request", reason=NO_REQUEST)
        if request.requester == operator.principal:
            raise KillSwitchRefused("the requester cannot approve their own resume", reason=FOUR_EYES)
        del self._requests[(scope, target)]
        self._set(scope, target, ACTIVE)
        change = KillSwitchChange(scope, target, ACTIVE, operator.principal, now)
        self.history.append(change)
        return change


def _in_scope(order: WorkingOrderRef, scope: str, target: str) -> bool:
    if scope == FIRM:
        return True
    if scope == ACCOUNT:
        return order.account == target
    return order.agent == target
