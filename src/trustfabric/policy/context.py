"""The policy context: the signal values one decision sees, and the port the engine reads them through.

:class:`SignalValues` is an immutable snapshot of every live signal about one
principal at one instant (posture, quarantine, threat-intel match, behavioural
risk, kill switch, market session, and for people MFA and step-up age).
:meth:`SignalValues.context` turns it into the Cedar context the schema
(``policies/floor.cedarschema``) requires. Defaults are the fail-closed values:
a principal nobody reported on has failing posture and a closed market.

:class:`SignalSource` is what :class:`~trustfabric.policy.engine.PolicyEngine`
depends on; :class:`~trustfabric.signals.hub.SignalHub` is the live one and
:class:`StaticSignals` a fixed one for policy test cases and benchmarks.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import msgspec

from trustfabric.policy.topology import PERSON, PrincipalRef

ACTIVE = "ACTIVE"
REDUCING = "REDUCING"
HALTED = "HALTED"
KILL_STATES = (ACTIVE, REDUCING, HALTED)
NEVER_S = 10**9  # step-up age when there never was one

# Listener of signal changes: (affected principal keys or None for all, reason, source, kind), where
# kind is an invalidation kind of :mod:`trustfabric.policy.decision` (epoch, quarantine, release).
ChangeListener = Callable[["tuple[str, ...] | None", str, str, str], None]


class SignalValues(msgspec.Struct, frozen=True, kw_only=True):
    posture_ok: bool = False
    posture_reasons: tuple[str, ...] = ("posture.missing",)
    quarantined: bool = False
    threat_match: bool = False
    threat_indicators: tuple[str, ...] = ()
    risk_score: int = 0
    kill_switch: str = ACTIVE
    firm_kill_switch: str = ACTIVE
    market_open: bool = False
    mfa: bool = False
    step_up_age_s: int = NEVER_S
    valid_until: float = math.inf  # when a time-bound signal (posture, step-up) lapses

    def context(self, notional: int = 0, risk_reducing: bool = False) -> dict[str, Any]:
        """The Cedar context (every field of the schema's ``Signals`` record)."""
        return {
            "posture_ok": self.posture_ok,
            "quarantined": self.quarantined,
            "threat_match": self.threat_match,
            "risk_score": int(self.risk_score),
            "kill_switch": self.kill_switch,
            "firm_kill_switch": self.firm_kill_switch,
            "market_open": self.market_open,
            "mfa": self.mfa,
            "step_up_age_s": int(self.step_up_age_s),
            "notional": int(notional),
            "risk_reducing": bool(risk_reducing),
        }


# The benign value of each signal field, used by explanations ("which signals mattered").
BENIGN: dict[str, Any] = {
    "posture_ok": True,
    "quarantined": False,
    "threat_match": False,
    "risk_score": 0,
    "kill_switch": ACTIVE,
    "firm_kill_switch": ACTIVE,
    "market_open": True,
    "mfa": True,
    "step_up_age_s": 0,
    "notional": 0,
    "risk_reducing": False,
}


class SignalSource(Protocol):
    def signals_for(self, principal: PrincipalRef, now: float) -> SignalValues: ...

    def add_listener(self, listener: ChangeListener) -> None: ...


HEALTHY_WORKLOAD = SignalValues(posture_ok=True, posture_reasons=(), market_open=True)
HEALTHY_PERSON = SignalValues(posture_ok=True, posture_reasons=(), market_open=True, mfa=True, step_up_age_s=NEVER_S)


class StaticSignals:
    """Fixed signals: healthy by default, with per-principal (or ``"*"``) overrides. Never changes."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self._overrides = overrides or {}

    def signals_for(self, principal: PrincipalRef, now: float) -> SignalValues:
        base = HEALTHY_PERSON if principal.kind == PERSON else HEALTHY_WORKLOAD
        fields: dict[str, Any] = {}
        fields.update(self._overrides.get("*", {}))
        fields.update(self._overrides.get(principal.key, {}))
        fields.update(self._overrides.get(principal.name, {}))
        return msgspec.structs.replace(base, **fields) if fields else base

    def add_listener(self, listener: ChangeListener) -> None:  # static: nothing ever changes
        return None
