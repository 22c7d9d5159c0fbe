"""Fakes of what the response plane calls: revocation, policy control, enforcement points, risk."""

from __future__ import annotations

import itertools
import random
from typing import Callable

from trustfabric.audit.events import AuditEventV1, Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.decision import Invalidation, Obligations
from trustfabric.response.containment import Containment
from trustfabric.response.floor_map import FloorMap


class FakeRevoker:
    def __init__(self, fail: bool = False) -> None:
        self.revoked: list[tuple[str, str]] = []
        self.released: list[tuple[str, str]] = []
        self.fail = fail

    def revoke_spiffe_id(self, spiffe_id: str, reason: str) -> int:
        if self.fail:
            raise ConnectionError("identity store unreachable")
        self.revoked.append((spiffe_id, reason))
        return 1

    def release_spiffe_id(self, spiffe_id: str, reason: str) -> None:
        self.released.append((spiffe_id, reason))


class FakePolicyControl:
    """Quarantine flags with epochs; publishes invalidations like the policy administrator does."""

    def __init__(self, floor: FloorMap, bus: InProcessBus) -> None:
        self.floor = floor
        self.bus = bus
        self.quarantined: set[str] = set()
        self.epochs: dict[str, int] = {}
        self.global_epoch = 1
        self.calls: list[tuple[str, bool]] = []
        self.risk: dict[str, tuple[float, str]] = {}
        self.tightened: dict[str, Obligations] = {}

    def set_quarantined(self, principal: str, quarantined: bool) -> None:
        self.calls.append((principal, quarantined))
        if quarantined:
            self.quarantined.add(principal)
        else:
            self.quarantined.discard(principal)
        epoch = self.epochs.get(principal, 1) + 1
        self.epochs[principal] = epoch
        reason = "quarantine.response" if quarantined else "release.officer"
        self.bus.publish(Invalidation(principal, epoch, self.global_epoch, reason, "policy"))

    def decide(self, principal: str, action: str, resource: str) -> bool:
        return principal not in self.quarantined and self.floor.granted(principal, action, resource)

    # RiskSink
    def set_risk(self, principal: str, score: float, source: str) -> None:
        self.risk[principal] = (score, source)

    # ObligationTightener
    def tighten(self, principal: str, obligations: Obligations, reason: str) -> None:
        self.tightened[principal] = obligations


class FakeEnforcementPoint:
    """Subscribes to the bus; on a quarantine it drops the principal's sessions and confirms."""

    def __init__(self, point_id: str, bus: InProcessBus, containment: Containment,
                 clock: FakeClock, delay_s: float = 0.0, silent: bool = False) -> None:
        self.point_id = point_id
        self.containment = containment
        self.clock = clock
        self.delay_s = delay_s
        self.silent = silent
        self.sessions: set[str] = set()
        self.refusing: set[str] = set()
        self.deferred: list[Callable[[], None]] = []
        containment.register_point(point_id)
        bus.subscribe(self.on_invalidation)

    def on_invalidation(self, inv: Invalidation) -> None:
        if inv.principal is None:
            return
        if inv.reason.startswith("quarantine"):
            self.sessions.discard(inv.principal)
            self.refusing.add(inv.principal)
            if self.silent:
                return
            at = self.clock.now() + self.delay_s
            principal = inv.principal
            if self.delay_s:
                self.deferred.append(lambda: self.containment.acknowledge(principal, self.point_id, at))
            else:
                self.containment.acknowledge(principal, self.point_id)
        elif inv.reason.startswith("release"):
            self.refusing.discard(inv.principal)

    def open(self, principal: str) -> bool:
        if principal in self.refusing:
            return False
        self.sessions.add(principal)
        return True

    def flush_acks(self) -> None:
        for ack in self.deferred:
            ack()
        self.deferred.clear()


class FakeCloser:
    def __init__(self) -> None:
        self.closed: list[tuple[str, str]] = []

    def close_sessions(self, principal: str, reason: str) -> int:
        self.closed.append((principal, reason))
        return 1


class StreamFactory:
    """Builds audit events as enforcement points would, with injected time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sink = MemorySink()
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
                   seconds: float = 240.0, seed: int = 7) -> list[AuditEventV1]:
    """A synthetic normal trading run: every service uses its granted flows at its usual rate.

    Includes the benign denials of a normal day (rate limits, notional caps on granted flows).
    """
    rng = random.Random(seed)
    actors = []
    for name, rate in (("algo-meanrev", 6.0), ("algo-momentum", 8.0), ("pre-trade-risk", 12.0),
                       ("order-router", 10.0), ("venue-a", 4.0), ("venue-b", 4.0), ("oms", 2.0),
                       ("risk-dashboard", 1.0), ("fix-gateway", 3.0), ("market-data", 20.0)):
        principal = sid(name)
        flows = sorted(p for p in floor.grants[principal] if p[0] != "connect")
        actors.append((principal, rate, flows))
    people = [("user:alice", 0.5), ("user:bob", 0.2)]
    for person, rate in people:
        actors.append((person, rate, sorted(floor.grants[person])))
    total_rate = sum(a[1] for a in actors)
    events: list[AuditEventV1] = []
    t_end = clock.now() + seconds
    ids = itertools.count()
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
        next(ids)
        events.append(factory.decision(principal, action, resource, allowed, reason=reason,
                                       at="pep:floor", **detail))
    return events
