"""Fakes of what the response plane calls: revocation, policy control, enforcement points, risk."""

from __future__ import annotations

from typing import Callable

from trustfabric.clock import FakeClock
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.decision import QUARANTINE, RELEASE, Invalidation, Obligations
from trustfabric.response.containment import Containment
from trustfabric.response.floor_map import FloorMap
from trustfabric.response.synthetic import StreamFactory, normal_trading  # noqa: F401


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
        self.bus.publish(Invalidation(principal, epoch, self.global_epoch, reason, "policy",
                                      QUARANTINE if quarantined else RELEASE))

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
