"""Synthetic audit streams: normal trading traffic with injected time, and attack events.

Used by the false-positive tests, ``trustfabric response bench`` and anyone who
needs a realistic decision stream without running the floor: every workload of
the topology uses only its granted flows at its usual rate (Poisson arrivals),
with the benign denials of a normal day (rate limits, notional caps).
Deterministic for a given seed and clock.
"""

from __future__ import annotations

import random
from typing import Callable

from trustfabric.audit.events import AuditEventV1, Emitter, EventSink, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.response.floor_map import FloorMap

# (service, messages per second) of a normal session
DEFAULT_RATES: tuple[tuple[str, float], ...] = (
    ("algo-meanrev", 6.0), ("algo-momentum", 8.0), ("pre-trade-risk", 12.0), ("order-router", 10.0),
    ("venue-a", 4.0), ("venue-b", 4.0), ("oms", 2.0), ("risk-dashboard", 1.0), ("fix-gateway", 3.0),
    ("market-data", 20.0),
)
DEFAULT_PEOPLE: tuple[tuple[str, float], ...] = (("user:alice", 0.5), ("user:bob", 0.2))


class StreamFactory:
    """Builds audit events as enforcement points would, with injected time."""

    def __init__(self, clock: FakeClock, sink: EventSink | None = None) -> None:
        self.clock = clock
        self.sink = sink if sink is not None else MemorySink()
        self._emitters: dict[str, Emitter] = {}

    def emitter(self, source: str) -> Emitter:
        em = self._emitters.get(source)
        if em is None:
            em = self._emitters[source] = Emitter(source, self.sink, self.clock)
        return em

    def decision(self, principal: str, action: str, resource: str, allowed: bool, *,
                 reason: str | None = None, at: str = "pep:test", **detail) -> AuditEventV1:
        detail.setdefault("decided_at", self.clock.now())
        return self.emitter(at).emit(
            Kind.DECISION, principal=principal, action=action, resource=resource,
            decision="allow" if allowed else "deny",
            reason=reason or ("policy.allow" if allowed else "policy.no_permit"), detail=detail)

    def event(self, kind: str, *, at: str = "pep:test", **fields) -> AuditEventV1:
        return self.emitter(at).emit(kind, **fields)


def normal_trading(floor: FloorMap, sid: Callable[[str], str], clock: FakeClock, factory: StreamFactory,
                   seconds: float = 240.0, seed: int = 7,
                   rates: tuple[tuple[str, float], ...] = DEFAULT_RATES,
                   people: tuple[tuple[str, float], ...] = DEFAULT_PEOPLE) -> list[AuditEventV1]:
    """A synthetic normal trading run: every service uses its granted flows at its usual rate.

    Includes the benign denials of a normal day (rate limits, notional caps on granted flows).
    """
    rng = random.Random(seed)
    actors = []
    for name, rate in rates:
        principal = sid(name)
        flows = sorted(p for p in floor.grants[principal] if p[0] != "connect")
        actors.append((principal, rate, flows))
    for person, rate in people:
        actors.append((person, rate, sorted(floor.grants[person])))
    total_rate = sum(a[1] for a in actors)
    events: list[AuditEventV1] = []
    t_end = clock.now() + seconds
    while clock.now() < t_end:
        clock.advance(rng.expovariate(total_rate))
        pick = rng.uniform(0, total_rate)
        for principal, rate, flows in actors:
            pick -= rate
            if pick <= 0:
                break
        action, resource = rng.choice(flows)
        detail = {}
        if action in ("submit_order", "route_order", "execute"):
            qty = rng.choice((100, 200, 300, 500, 1000))
            detail = {"qty": qty, "notional": round(qty * rng.uniform(20, 400), 2)}
        allowed, reason = True, None
        roll = rng.random()
        if roll < 0.01:
            allowed, reason = False, "enforcement.rate"
        elif roll < 0.015 and detail:
            allowed, reason = False, "enforcement.notional"
        events.append(factory.decision(principal, action, resource, allowed, reason=reason,
                                       at="pep:floor", **detail))
    return events
