"""Behavioural baselines per identity and an online anomaly score (0-100).

For every principal the baseline learns, from its own decision events - on a floor every
decision it made, allowed or denied (the response engine's ``learn``, fed by the audit
collector from the spools' decision records), so that it knows normal traffic:

* **message rate** - messages per second, counted in 1 s buckets over a sliding
  window of buckets; a bucket is compared with the median and MAD of the window;
* **resources used** - the set of (action, resource) pairs seen while learning;
  a new pair after warm-up is a novelty;
* **order size and notional** - sliding windows of values with median and MAD;
* **time of day** - a 24-bin histogram of activity; an hour the principal was
  (almost) never active in is unusual.

Robust statistics (median / MAD, not mean / standard deviation) keep one burst
from poisoning the baseline, and an EWMA smooths the per-event anomaly into the
published score so that one odd event nudges it and a sustained change drives it
up. Everything is computed from the events' own times: deterministic, no clock.
Memory is bounded (fixed windows, an LRU of principals).

The score feeds the policy engine's behavioural risk through :class:`RiskSink`
(``set_risk(principal, score, source)``), published only when it moves by at
least ``publish_step`` so that the engine does not bump epochs on every message.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Protocol

import msgspec

from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.response.alerts import event_time
from trustfabric.response.detectors import BoundedMap

RISK_SOURCE = "response.baseline"
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data


class RiskSink(Protocol):
    """The policy engine's behavioural risk input; a higher score tightens decisions."""

    def set_risk(self, principal: str, score: float, source: str) -> None: ...


class BaselineConfig(msgspec.Struct, frozen=True, kw_only=True):
    rate_window_buckets: int = 120  # 1 s buckets kept for the rate baseline
    value_window: int = 256  # order sizes / notionals kept
    refresh_every: int = 32  # recompute medians after this many new values
    warmup_events: int = 200  # no score before this many events...
    warmup_s: float = 60.0  # ...spanning at least this long
    z_threshold: float = 4.0  # robust z below this is normal
    z_saturate: float = 12.0  # robust z at which a component is fully anomalous
    rare_hour_fraction: float = 0.01  # an hour with less of the activity than this is unusual
    ewma_alpha: float = 0.2
    weight_rate: float = 0.85
    weight_novelty: float = 0.5
    weight_value: float = 0.8
    weight_hour: float = 0.3
    publish_step: float = 5.0  # publish risk when the score moved this much
    max_principals: int = 50_000
    max_pairs: int = 512  # resource pairs remembered per principal


class RobustWindow:
    """A sliding window of floats with median / MAD refreshed every ``refresh_every`` additions."""

    __slots__ = ("values", "refresh_every", "_since", "median", "mad", "counts")

    def __init__(self, size: int, refresh_every: int, *, counts: bool = False) -> None:
        self.counts = counts  # counts per bucket: spread never below a Poisson sqrt(median)
        self.values: deque[float] = deque(maxlen=size)
        self.refresh_every = max(1, refresh_every)
        self._since = 0
        self.median = 0.0
        self.mad = 0.0

    def z(self, value: float) -> float:
        """Robust z of ``value`` against the window (0 when the window is too small)."""
        if len(self.values) < 8:
            return 0.0
        floor = math.sqrt(max(self.median, 1.0)) if self.counts else abs(self.median) * 0.05
        spread = max(self.mad * MAD_SCALE, floor, 1e-9)
        return abs(value - self.median) / spread

    def add(self, value: float) -> None:
        self.values.append(value)
        self._since += 1
        if self._since >= self.refresh_every or len(self.values) <= 16:
            self._refresh()

    def _refresh(self) -> None:
        self._since = 0
        data = list(self.values)
        self.median = statistics.median(data)
        self.mad = statistics.median([abs(v - self.median) for v in data])


def _component(z: float, lo: float, hi: float) -> float:
    if z <= lo:
        return 0.0
    return min(1.0, (z - lo) / max(hi - lo, 1e-9))


class PrincipalBaseline:
    """One principal's learned behaviour and current score."""

    __slots__ = ("config", "events", "first_time", "bucket", "bucket_count", "rates", "pairs",
                 "notional", "qty", "hours", "score", "published", "last_components", "span")

    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        self.events = 0
        self.first_time: float | None = None
        self.bucket = -1
        self.bucket_count = 0
        self.rates = RobustWindow(config.rate_window_buckets, 8, counts=True)
        self.pairs: set[tuple[str, str]] = set()
        self.notional = RobustWindow(config.value_window, config.refresh_every)
        self.qty = RobustWindow(config.value_window, config.refresh_every)
        self.hours = [0] * 24
        self.score = 0.0
        self.published = 0.0
        self.last_components: dict[str, float] = {}
        self.span = 0.0

    @property
    def warm(self) -> bool:
        c = self.config
        return self.events >= c.warmup_events and self.span >= c.warmup_s

    def update(self, event: AuditEventV1) -> float:
        """Learn from one event and return the new score (0-100)."""
        c = self.config
        t = event_time(event)
        if self.first_time is None:
            self.first_time = t
        self.span = max(0.0, t - self.first_time)
        warm = self.warm
        comps: dict[str, float] = {}

        # message rate: close finished buckets (empty seconds count as zeros, up to the window)
        second = int(t)
        if self.bucket < 0:
            self.bucket = second
        if second > self.bucket:
            self.rates.add(float(self.bucket_count))
            gap = min(second - self.bucket - 1, c.rate_window_buckets)
            for _ in range(gap):
                self.rates.add(0.0)
            self.bucket = second
            self.bucket_count = 0
        self.bucket_count += 1
        if warm:
            comps["rate"] = c.weight_rate * _component(self.rates.z(float(self.bucket_count))
                                                        if self.bucket_count > self.rates.median else 0.0,
                                                        c.z_threshold, c.z_saturate)
        # resources used
        pair = (event.action, event.resource)
        if pair not in self.pairs:
            if warm:
                comps["novelty"] = c.weight_novelty
            if len(self.pairs) < c.max_pairs:
                self.pairs.add(pair)
        # order size and notional
        detail = event.detail or {}
        for key, window in (("notional", self.notional), ("qty", self.qty)):
            value = detail.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
                if warm:
                    comps[key] = c.weight_value * _component(window.z(float(value)), c.z_threshold, c.z_saturate)
                window.add(float(value))
        # time of day (UTC hour of the event)
        hour = int(t // 3600) % 24
        if warm:
            total = sum(self.hours)
            if total and self.hours[hour] / total < c.rare_hour_fraction:
                comps["hour"] = c.weight_hour
        self.hours[hour] += 1
        self.events += 1

        keep = 1.0
        for value in comps.values():
            keep *= 1.0 - min(1.0, max(0.0, value))
        instant = 100.0 * (1.0 - keep)
        self.score = (1.0 - c.ewma_alpha) * self.score + c.ewma_alpha * instant
        self.last_components = comps
        return self.score


class BehaviourBaselines:
    """Baselines of every principal; feeds scores to a :class:`RiskSink`."""

    def __init__(self, config: BaselineConfig = BaselineConfig(), risk: RiskSink | None = None) -> None:
        self.config = config
        self.risk = risk
        self._principals: BoundedMap[str, PrincipalBaseline] = BoundedMap(config.max_principals)
        self.risk_errors = 0

    def observe(self, event: AuditEventV1) -> float | None:
        """Learn from a decision event; returns the principal's score, ``None`` if not scored."""
        if event.kind != Kind.DECISION or not event.principal:
            return None
        base = self._principals.get(event.principal)
        if base is None:
            base = PrincipalBaseline(self.config)
            self._principals.put(event.principal, base)
        score = base.update(event)
        moved = abs(score - base.published) >= self.config.publish_step
        settled = score < 1.0 <= base.published  # back to normal: say so, whatever the step
        if self.risk is not None and (moved or settled):
            base.published = score
            try:
                self.risk.set_risk(event.principal, round(score, 1), RISK_SOURCE)
            except Exception:  # noqa: BLE001 - a failing risk sink is counted; detection goes on
                self.risk_errors += 1
        return score

    def score(self, principal: str) -> float:
        base = self._principals.get(principal)
        return base.score if base is not None else 0.0

    def events(self, principal: str) -> int:
        """How many decisions of ``principal`` the baseline has learned from."""
        base = self._principals.get(principal)
        return base.events if base is not None else 0

    def pairs(self, principal: str) -> frozenset[tuple[str, str]]:
        """The (action, resource) pairs ``principal`` was seen using."""
        base = self._principals.get(principal)
        return frozenset(base.pairs) if base is not None else frozenset()

    def components(self, principal: str) -> dict[str, float]:
        base = self._principals.get(principal)
        return dict(base.last_components) if base is not None else {}

    def reset(self, principal: str) -> None:
        """Forget the current score (after a release); the learned baseline stays."""
        base = self._principals.get(principal)
        if base is not None:
            base.score = 0.0
            base.published = 0.0

    def __len__(self) -> int:
        return len(self._principals)


