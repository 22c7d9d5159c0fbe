"""Trading context: the market session from a calendar, and kill-switch states.

:class:`MarketCalendar` says whether the session is open at a Unix time (regular
hours in the exchange's time zone, trading weekdays, holidays); ``always_open``
suits the simulated floor, which trades around the clock.

:class:`KillSwitchBoard` keeps a state per scope - ``agent`` (a service or
person), ``account`` and ``firm`` - each ACTIVE, REDUCING (only risk-reducing
orders) or HALTED. A principal's effective state is the strictest of its agent,
its account and the firm. Who may halt or resume (privileged, four-eyes) is the
business of policy and of pre-trade risk; this board only holds the states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trustfabric.policy.context import ACTIVE, HALTED, KILL_STATES, REDUCING
from trustfabric.signals.errors import MarketSignalError

SCOPES = ("agent", "account", "firm")
_RANK = {ACTIVE: 0, REDUCING: 1, HALTED: 2}


@dataclass(frozen=True)
class MarketCalendar:
    tz: str = "America/New_York"
    open_at: time = time(9, 30)
    close_at: time = time(16, 0)
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    holidays: frozenset[date] = frozenset()
    always_open: bool = False

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise MarketSignalError(f"unknown time zone {self.tz!r}", reason="signal.market.calendar") from exc
        if not self.always_open and self.open_at >= self.close_at:
            raise MarketSignalError("session opens after it closes", reason="signal.market.calendar")

    @classmethod
    def around_the_clock(cls) -> "MarketCalendar":
        return cls(always_open=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "MarketCalendar":
        try:
            return cls(
                tz=raw.get("tz", "America/New_York"),
                open_at=time.fromisoformat(raw.get("open", "09:30")),
                close_at=time.fromisoformat(raw.get("close", "16:00")),
                weekdays=frozenset(int(d) for d in raw.get("weekdays", (0, 1, 2, 3, 4))),
                holidays=frozenset(date.fromisoformat(d) for d in raw.get("holidays", ())),
                always_open=bool(raw.get("always_open", False)),
            )
        except (TypeError, ValueError) as exc:
            raise MarketSignalError(f"bad calendar: {exc}", reason="signal.market.calendar") from exc

    def is_open(self, now: float) -> bool:
        if self.always_open:
            return True
        local = datetime.fromtimestamp(now, tz=ZoneInfo(self.tz))
        if local.weekday() not in self.weekdays or local.date() in self.holidays:
            return False
        return self.open_at <= local.time() < self.close_at


def check_state(state: str) -> str:
    if state not in KILL_STATES:
        raise MarketSignalError(f"unknown kill-switch state {state!r}", reason="signal.market.kill_state")
    return state


def strictest(*states: str) -> str:
    return max(states, key=lambda s: _RANK[s])


@dataclass
class KillSwitchBoard:
    firm: str
    states: dict[tuple[str, str], str] = field(default_factory=dict)

    def set(self, scope: str, name: str, state: str) -> str:
        """Set a scope's state; returns the previous one."""
        if scope not in SCOPES:
            raise MarketSignalError(f"unknown kill-switch scope {scope!r}", reason="signal.market.kill_scope")
        check_state(state)
        if scope == "firm":
            name = self.firm
        previous = self.states.get((scope, name), ACTIVE)
        if state == ACTIVE:
            self.states.pop((scope, name), None)
        else:
            self.states[(scope, name)] = state
        return previous

    def get(self, scope: str, name: str) -> str:
        return self.states.get((scope, self.firm if scope == "firm" else name), ACTIVE)

    def firm_state(self) -> str:
        return self.get("firm", self.firm)

    def effective(self, agent: str, account: str) -> str:
        return strictest(self.get("agent", agent), self.get("account", account), self.firm_state())
