"""The alert part of a principal's behavioural risk, decaying over time so that it heals without a person.

A medium-confidence alert (a burst of denials, say pre-trade risk rejecting an algo's
orders for a while) makes the response engine *tighten*: it raises the principal's
risk score in the policy engine (``ResponsePolicy.tighten_risk``, 80 by default, above
the policies' 70 "elevated" threshold). Before this module that score stayed until a
security officer released the principal, so an honest algorithm stayed tightened
forever. Now :class:`DecayingRisk` sits between the engine and its
:class:`~trustfabric.response.baseline.RiskSink`:

* the **alert contribution** of a principal is held at its level for ``hold_s``
  seconds after the last tightening alert, then halves every ``half_life_s`` seconds;
  below ``forget_below`` it is dropped. A new alert raises it again (to the larger of
  the decayed level and the new score) and restarts the hold;
* the **baseline contribution** (the behavioural baseline's own anomaly score,
  source ``response.baseline``) is passed through as the baseline publishes it: it
  already falls as behaviour returns to normal;
* what reaches the sink is ``max(alert contribution, baseline contribution)``,
  republished by :meth:`DecayingRisk.tick` when it moved by ``publish_step`` (each
  publish bumps epochs, so not on every message) and once more, at the baseline's
  level, when the alert contribution is dropped.

Time comes from a :class:`~trustfabric.clock.Clock` (or a ``now`` argument): tests use
a FakeClock. Decay touches the *score* only: a quarantine (revoked certificates, the
policy engine's quarantine flag) is containment, not risk, and only a security
officer's release lifts it; :meth:`DecayingRisk.forget` is what a release calls.
"""

from __future__ import annotations

import math
import threading

import msgspec

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.response.baseline import RISK_SOURCE as BASELINE_SOURCE
from trustfabric.response.baseline import RiskSink
from trustfabric.response.errors import ResponseConfigError

DECAY_SOURCE = "response.decay"  # the source of a republished (decayed) score


class RiskDecayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How fast an alert's risk heals: held ``hold_s``, then halved every ``half_life_s``."""

    hold_s: float = 60.0
    half_life_s: float = 60.0
    forget_below: float = 1.0  # an alert contribution below this is dropped (the baseline's level remains)
    publish_step: float = 5.0  # republish when the published score would move at least this much
    tick_every_s: float = 1.0  # the engine re-evaluates decay at most this often

    def __post_init__(self) -> None:
        if not (self.hold_s >= 0 and self.half_life_s > 0 and self.forget_below >= 0 and self.publish_step > 0
                and self.tick_every_s >= 0) or any(math.isnan(v) or math.isinf(v) for v in (
                    self.hold_s, self.half_life_s, self.forget_below, self.publish_step, self.tick_every_s)):
            raise ResponseConfigError("risk decay: hold_s >= 0, half_life_s > 0, forget_below >= 0, "
                                      "publish_step > 0 and tick_every_s >= 0, all finite")


class _AlertRisk(msgspec.Struct):
    level: float  # the score the last alert set (or the decayed level it was raised from)
    raised_at: float


def decayed_level(level: float, raised_at: float, now: float, config: RiskDecayConfig) -> float:
    """``level`` held for ``hold_s`` after ``raised_at``, then halved every ``half_life_s`` (pure)."""
    past_hold = now - raised_at - config.hold_s
    if past_hold <= 0:
        return level
    return level * 0.5 ** (past_hold / config.half_life_s)


class DecayingRisk:
    """A :class:`RiskSink` that decays the alert contribution and combines it with the baseline's."""

    def __init__(self, sink: RiskSink | None, clock: Clock = SYSTEM_CLOCK,
                 config: RiskDecayConfig = RiskDecayConfig()) -> None:
        self.sink = sink
        self.clock = clock
        self.config = config
        self._alerts: dict[str, _AlertRisk] = {}
        self._baseline: dict[str, float] = {}
        self._published: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_tick = -math.inf
        self.sink_errors = 0

    # ------------------------------------------------------------------ RiskSink
    def set_risk(self, principal: str, score: float, source: str) -> None:
        """An alert source raises the decaying contribution; the baseline sets its own level."""
        now = self.clock.now()
        with self._lock:
            if source != BASELINE_SOURCE:  # an alert's score decays; the baseline's passes through as its level
                current = self._alert_level(principal, now)
                self._alerts[principal] = _AlertRisk(level=max(float(score), current), raised_at=now)
            else:
                self._baseline[principal] = float(score)
            combined = self._combined(principal, now)
        self._publish(principal, combined, source)  # a sink failure reaches the caller (counted); tick retries it

    # ------------------------------------------------------------------ decay
    def score(self, principal: str, now: float | None = None) -> float:
        """What the principal's risk is now: max(decayed alert contribution, baseline level)."""
        now = self.clock.now() if now is None else now
        with self._lock:
            return self._combined(principal, now)

    def tick(self, now: float | None = None) -> list[tuple[str, float]]:
        """Republish every principal whose score decayed by ``publish_step`` or whose alert part ran out.

        Returns the (principal, score) pairs the sink took. Call it periodically (the
        response engine does on its events, the control plane on its reports).
        """
        now = self.clock.now() if now is None else now
        out: list[tuple[str, float]] = []
        with self._lock:
            self._last_tick = now
            for principal in list(self._alerts):
                alert = self._alerts[principal]
                level = decayed_level(alert.level, alert.raised_at, now, self.config)
                expired = level < self.config.forget_below
                if expired:
                    del self._alerts[principal]
                combined = self._combined(principal, now)
                last = self._published.get(principal, 0.0)
                # down by a step as it decays; up when the sink failed to take a raise (retried here)
                if expired or abs(last - combined) >= self.config.publish_step:
                    out.append((principal, combined))
        published: list[tuple[str, float]] = []
        for principal, combined in out:
            try:
                self._publish(principal, combined, DECAY_SOURCE)
            except Exception:  # noqa: BLE001 - counted; the sink keeps the higher score it had
                self.sink_errors += 1
            else:
                published.append((principal, combined))
        return published

    def due(self, now: float) -> bool:
        return now - self._last_tick >= self.config.tick_every_s

    def forget(self, principal: str) -> None:
        """A release: drop everything kept about the principal (the release itself resets the score)."""
        with self._lock:
            self._alerts.pop(principal, None)
            self._baseline.pop(principal, None)
            self._published.pop(principal, None)

    def tracked(self) -> dict[str, float]:
        """Principals with a live alert contribution and its current level (for views and tests)."""
        now = self.clock.now()
        with self._lock:
            return {p: decayed_level(a.level, a.raised_at, now, self.config) for p, a in self._alerts.items()}

    # ------------------------------------------------------------------ internals
    def _alert_level(self, principal: str, now: float) -> float:
        alert = self._alerts.get(principal)
        return 0.0 if alert is None else decayed_level(alert.level, alert.raised_at, now, self.config)

    def _combined(self, principal: str, now: float) -> float:
        return max(self._alert_level(principal, now), self._baseline.get(principal, 0.0))

    def _publish(self, principal: str, score: float, source: str) -> None:
        """Hand the score to the sink; only a score the sink took counts as published (a failure raises)."""
        if self.sink is not None:
            self.sink.set_risk(principal, round(score, 1), source)
        with self._lock:
            self._published[principal] = score
