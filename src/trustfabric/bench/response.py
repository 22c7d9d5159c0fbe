"""The response engine's benchmark (``trustfabric response bench``).

A synthetic floor stream (``seconds`` of normal trading, :mod:`trustfabric.response.synthetic`)
with ``attacks`` decisions of compromised principals inserted at random: the engine observes
every event (events/s, per-event p50/p99, against the cost of only decoding the same events),
and counts the attackers it quarantined and any normal principal it quarantined by mistake.
Then live containment on the wall clock: an attempt, the engine's alert, and three in-process
enforcement points confirming the refusal over a bus (time to detect, time to contain).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from trustfabric.audit.events import NullSink, decode_event, encode_event
from trustfabric.clock import SYSTEM_CLOCK, FakeClock
from trustfabric.percentiles import percentile
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.decision import QUARANTINE, RELEASE, Invalidation
from trustfabric.policy.topology import Topology
from trustfabric.response.adapters import confirm_refusals
from trustfabric.response.containment import Containment
from trustfabric.response.engine import ResponseEngine
from trustfabric.response.floor_map import FloorMap
from trustfabric.response.incidents import MemoryIncidentStore
from trustfabric.response.synthetic import StreamFactory, normal_trading


class _Sinkless:
    """Revocation and policy control that do nothing: the throughput run measures the engine alone."""

    def revoke_spiffe_id(self, spiffe_id, reason):
        return None

    def release_spiffe_id(self, spiffe_id, reason):
        return None

    def set_quarantined(self, principal, quarantined):
        return None


class _BusControl:
    """Policy control that publishes the quarantine (or release) on an in-process bus."""

    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus

    def set_quarantined(self, principal, quarantined):
        self.bus.publish(Invalidation(principal, 2, 1, "quarantine.response" if quarantined else "release.officer",
                                      kind=QUARANTINE if quarantined else RELEASE))


class _Point:
    """An enforcement point reduced to its sessions: a quarantine invalidation closes the principal's."""

    def __init__(self) -> None:
        self.live: set[str] = set()

    def on_invalidation(self, inv) -> None:
        self.live.discard(inv.principal)

    def sessions(self, principal):
        return [principal] if principal in self.live else []


def run(seconds: float = 300.0, attacks: int = 50, seed: int = 7) -> dict[str, Any]:
    """Events/s and accuracy over the synthetic stream, then live time to detect and contain."""
    topology = Topology.load(Topology.default_path())
    floor = FloorMap.from_topology(topology)
    clock = FakeClock()
    factory = StreamFactory(clock, NullSink())
    events = normal_trading(floor, topology.spiffe_id, clock, factory, seconds=seconds, seed=seed)
    rng = random.Random(seed)
    targets = [("settle", "settlement/ledger"), ("execute", "venue-a/orders"), ("transfer_funds", "treasury/cash")]
    attackers = [f"spiffe://{topology.trust_domain}/compromised/host-{i}" for i in range(attacks)]
    for name in attackers:
        action, resource = rng.choice(targets)
        events.insert(rng.randrange(len(events)), factory.decision(name, action, resource, False))

    containment = Containment(_Sinkless(), _Sinkless(), store=MemoryIncidentStore())
    engine = ResponseEngine(floor, containment)
    blobs = [encode_event(e) for e in events]
    t0 = time.perf_counter()
    for blob in blobs:
        decode_event(blob)
    decode_s = time.perf_counter() - t0
    per_event: list[float] = []
    t0 = time.perf_counter()
    for ev in events:
        s = time.perf_counter()
        engine.observe(ev)
        per_event.append(time.perf_counter() - s)
    total_s = time.perf_counter() - t0
    quarantined = {i.principal for i in containment.store.incidents()}
    ttd, ttc = _live_containment_samples(floor, topology.trust_domain, samples=20)
    result = {
        "events": len(events),
        "events_per_s": round(len(events) / total_s),
        "observe_us_p50": round(percentile(per_event, 50) * 1e6, 2),
        "observe_us_p99": round(percentile(per_event, 99) * 1e6, 2),
        "observe_over_decode_ratio": round(total_s / decode_s, 2) if decode_s else None,
        "attacks": attacks,
        "attackers_quarantined": len(quarantined & set(attackers)),
        "normal_principals_quarantined": len(quarantined - set(attackers)),
        "alerts": engine.alerts_raised,
        "simulated_seconds": seconds,
        "observe_us_mean": round(statistics.fmean(per_event) * 1e6, 2),
        "live_ttd_ms_p50": round(percentile(ttd, 50), 3),
        "live_ttd_ms_max": round(max(ttd), 3),
        "live_ttc_ms_p50": round(percentile(ttc, 50), 3),
        "live_ttc_ms_max": round(max(ttc), 3),
        "live_method": "wall clock; attempt event -> alert -> 3 in-process enforcement points confirm via the bus",
    }
    return result


def _live_containment_samples(floor, trust_domain: str, samples: int) -> tuple[list[float], list[float]]:
    """ttd/ttc on the wall clock: an attempt, the engine, containment over an in-process bus, 3 points."""
    bus = InProcessBus()
    containment = Containment(None, _BusControl(bus), store=MemoryIncidentStore())
    for i in range(3):
        point = _Point()
        bus.subscribe(point.on_invalidation)
        bus.subscribe(confirm_refusals(containment, f"pep-{i}", point))
    engine = ResponseEngine(floor, containment)
    factory = StreamFactory(SYSTEM_CLOCK)
    for i in range(samples):
        engine.observe(factory.decision(f"spiffe://{trust_domain}/compromised/live-{i}", "settle",
                                        "settlement/ledger", False))
    rows = containment.store.incidents()
    return [r.ttd_ms for r in rows if r.ttd_ms is not None], [r.ttc_ms for r in rows if r.ttc_ms is not None]
