"""Compiled table entries: a decision plus the mutable state its obligations need.

A :class:`~trustfabric.policy.decision.Decision` is immutable and shared; the
per-session state an obligation needs (a token bucket's level) is not. At session
open or re-decision each decision is compiled once into an :class:`Entry` holding
plain attributes, so that the hot path reads slots and compares floats - no
method calls, no allocation.

The token bucket (rate obligation): ``max_rate`` tokens per second, at most
``burst`` (default ``max(1, max_rate)``) banked, one token per message. It starts
full. :meth:`Entry.take_token` is the one implementation, called by the hot path
(:meth:`~trustfabric.enforcement.pep.EnforcementPoint.check`) and tested through it.
"""

from __future__ import annotations

from trustfabric.policy.decision import Decision


class Entry:
    """One (action, resource) of a session's table, ready for the hot path."""

    __slots__ = ("allowed", "reason", "epoch", "policy_ids", "max_notional", "symbols",
                 "rate", "burst", "tokens", "last")

    def __init__(self, decision: Decision, now: float) -> None:
        ob = decision.obligations
        self.allowed = decision.allowed is True  # only an explicit True allows
        self.reason = decision.reason
        self.epoch = decision.epoch
        self.policy_ids = decision.policy_ids
        self.max_notional = None if ob.max_notional is None else float(ob.max_notional)
        self.symbols = ob.symbols
        if ob.max_rate is not None:
            self.rate = float(ob.max_rate)
            self.burst = float(ob.burst if ob.burst is not None else max(1.0, self.rate))
        else:
            self.rate = None
            self.burst = 0.0
        self.tokens = self.burst
        self.last = now

    def take_token(self, now: float) -> bool:
        """The bucket rule: refill since the last refill (capped at ``burst``), then take one token if
        there is one. ``now`` is monotonic; time going backwards adds nothing."""
        tokens = self.tokens
        elapsed = now - self.last
        if elapsed > 0.0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.last = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


def compile_entries(decisions: dict[tuple[str, str], Decision], now: float) -> dict[tuple[str, str], Entry]:
    return {key: Entry(decision, now) for key, decision in decisions.items()}
