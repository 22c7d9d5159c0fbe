"""Time, passed in.

Everything that depends on the clock takes a :class:`Clock` (or a ``now``
argument) so that tests drive time exactly and never sleep. ``now()`` is Unix
time in seconds (float); ``monotonic()`` (seconds) and ``monotonic_ns()``
(integer nanoseconds) are for every duration and timeout.

Wall time steps (an operator, NTP, a VM resumed); the monotonic clock does not.
Use wall time only where a timestamp is compared with another host's
(certificate validity, token ``exp``, FIX SendingTime, audit timestamps), and
convert such a timestamp once, at receipt, when a local duration hangs on it.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    """The real wall clock and monotonic clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    __slots__ = ("_now", "_mono")

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = float(start)
        self._mono = 1000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def monotonic_ns(self) -> int:
        return round(self._mono * 1e9)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        self._mono += seconds

    def set(self, now: float) -> None:
        """Jump the wall clock (e.g. to simulate skew); monotonic time is unaffected."""
        self._now = float(now)


SYSTEM_CLOCK = SystemClock()
