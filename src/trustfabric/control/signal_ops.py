"""The operators' signal actions, one function each, over a :class:`SignalBook` (a hub and what it was built from).

The running control plane (its live :class:`~trustfabric.signals.hub.SignalHub`)
and the CLI with no floor running (a hub rebuilt from ``policy/signals.json``)
apply ``signal.*`` actions through exactly these functions, so the same action
name with the same arguments does the same thing on both paths. Each takes the
target and the request's string arguments, changes the hub (which checks the
values, emits ``signal.changed`` or ``signal.refused`` and moves the epochs it
affects) and returns a plain result for the reply. A bad argument is a
:class:`~trustfabric.errors.SignalError` with a ``signal.*`` reason, and nothing
changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trustfabric.errors import SignalError
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar
from trustfabric.signals.state import SignalState, save_state, state_of

SIGNALS_FILE = ("policy", "signals.json")
# `signal market MODE`: the calendars an operator may choose (holidays only for the exchange calendar)
CALENDARS: dict[str, dict[str, Any]] = {"always-open": {"always_open": True}, "exchange": {"holidays": []},
                                        "closed": {"weekdays": []}}


def signals_path(home: Path) -> Path:
    """Where the signal state of ``home`` lives (the one store both paths read and write)."""
    return Path(home).joinpath(*SIGNALS_FILE)


@dataclass
class SignalBook:
    """A hub plus the two inputs the hub does not keep in a savable form (calendar spec, STIX text)."""

    hub: SignalHub
    calendar: dict[str, Any] = field(default_factory=lambda: dict(CALENDARS["always-open"]))
    threat_bundle: str = ""
    epochs: Callable[[], tuple[int, dict[str, int]]] | None = None  # the live engine's, saved beside the signals

    def state(self) -> SignalState:
        return state_of(self.hub, self.calendar, self.threat_bundle, self.epochs() if self.epochs else (0, {}))

    def save(self, path: Path) -> None:
        save_state(path, self.state())


def _quarantine(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    book.hub.quarantine(target, reason=args.get("reason") or "operator", origin=origin)
    return {"quarantined": target}


def _release(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    book.hub.release(target, origin=origin)
    return {"released": target}


def _risk(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    raw = args.get("score", "")
    try:
        number = float(raw)
        score: object = int(number) if number.is_integer() else number
    except (TypeError, ValueError, OverflowError):
        score = raw  # the hub refuses it with its own reason (signal.risk.*)
    value = book.hub.set_risk_score(target, score, origin=origin)
    return {"score": str(value)}


def _kill(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    state = args.get("state", "").upper()
    previous = book.hub.set_kill_switch(args.get("scope", ""), target, state, origin=origin)
    return {"previous": str(previous), "state": state}


def _market(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    if target not in CALENDARS:
        raise SignalError(f"market mode must be one of {sorted(CALENDARS)}, not {target!r}",
                          reason="signal.market.bad_mode")
    spec = dict(CALENDARS[target])
    if target == "exchange":
        spec["holidays"] = [d for d in args.get("holidays", "").split(",") if d]
    book.hub.set_calendar(MarketCalendar.from_dict(spec), origin=origin)  # a bad date: signal.market.calendar
    book.calendar = spec
    return {"mode": target, "open": "1" if book.hub.market_open else "0"}


def _intel(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    text = args.get("bundle", "")
    loaded = book.hub.load_threat_intel(text, origin=origin)  # a bad bundle raises; the last good one stays
    book.threat_bundle = text
    return {"bundle": str(loaded.bundle_id), "indicators": str(loaded.count)}


def _observe(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    book.hub.observe(target, fingerprint=args.get("fingerprint") or None, code_digest=args.get("code_digest") or None,
                     address=args.get("address") or None, origin=origin)
    return {"observed": target}


def _auth(book: SignalBook, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    step_up_at = book.hub.clock.now() if args.get("step_up") == "1" else None
    book.hub.record_authentication(target, mfa=args.get("mfa", "1") == "1", step_up_at=step_up_at,
                                   device_host=args.get("device_host") or None, origin=origin)
    return {"recorded": target}


SignalAction = Callable[[SignalBook, str, dict[str, str], str], dict[str, str]]

SIGNAL_ACTIONS: dict[str, SignalAction] = {
    "signal.quarantine": _quarantine,
    "signal.release": _release,
    "signal.risk": _risk,
    "signal.kill": _kill,
    "signal.market": _market,
    "signal.intel": _intel,
    "signal.observe": _observe,
    "signal.auth": _auth,
}


def apply_signal(book: SignalBook, action: str, target: str, args: dict[str, str], origin: str) -> dict[str, str]:
    """Apply one ``signal.*`` action to ``book``; raises a typed refusal (nothing changed) otherwise."""
    apply = SIGNAL_ACTIONS.get(action)
    if apply is None:
        raise SignalError(f"no signal action {action!r}", reason="operator.unknown_action")
    return apply(book, target, dict(args), origin)
