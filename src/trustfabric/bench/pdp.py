"""The policy decision point's benchmark (``trustfabric bench pdp``): the engine's figures, each against its baseline in the same run.

* ``decide_us_p50`` - one decision through :class:`PolicyEngine` (pre-parsed
  policies, schema and entities; live signals from a :class:`SignalHub`);
  ``naive_cedar_us_p50`` - the same decision by cedarpy given the policy text,
  entity JSON and schema text every time.
* ``table_compile_ms_p50`` - one principal's full decision table (~90 entries),
  cache cleared before each run; ``table_cached_us_p50`` - a session open that
  finds the table current.
* ``invalidation_us_p50`` - from a signal change (risk score) to an in-process
  enforcement point's bus callback.
"""

from __future__ import annotations

import statistics
import time

from trustfabric.audit.events import Emitter, NullSink
from trustfabric.percentiles import percentile
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.signals.host_agent import attest_hosts
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar


def run(iterations: int = 2000) -> dict:
    """The policy engine's figures (module docstring), each against its baseline in the same run."""
    topology = Topology.load(Topology.default_path())
    hub = SignalHub(topology, emitter=Emitter("bench", NullSink()), calendar=MarketCalendar.around_the_clock())
    attest_hosts(hub, sorted({s.host for s in topology.services.values()}), time.time())
    bus = InProcessBus()
    engine = PolicyEngine(topology, hub, bus=bus, emitter=Emitter("bench", NullSink()))
    engine.load_dir(Topology.default_path().parent)
    principal, action, resource = "algo-meanrev", "submit_order", "risk/orders"
    ctx = {"notional": 10_000}
    perf = time.perf_counter

    for _ in range(50):
        engine.decide(principal, action, resource, ctx)
    decide = []
    for _ in range(iterations):
        t0 = perf()
        d = engine.decide(principal, action, resource, ctx)
        decide.append((perf() - t0) * 1e6)
    assert d.allowed

    bundle = engine.naive_request(principal, action, resource)
    bundle["request"]["context"]["notional"] = 10_000
    naive = []
    for _ in range(max(50, iterations // 10)):
        t0 = perf()
        ok = PolicyEngine.naive_decide(bundle)
        naive.append((perf() - t0) * 1e6)
    assert ok

    compile_ms = []
    table = None
    for _ in range(max(30, iterations // 40)):
        engine.clear_table_cache()
        t0 = perf()
        table = engine.decision_table(principal)
        compile_ms.append((perf() - t0) * 1e3)
    cached = []
    for _ in range(iterations):
        t0 = perf()
        engine.decision_table(principal)
        cached.append((perf() - t0) * 1e6)

    arrived: list[float] = []
    key = topology.spiffe_id(principal)
    bus.subscribe(lambda inv: arrived.append(perf()) if inv.principal == key else None)
    invalidation = []
    for i in range(max(100, iterations // 4)):
        t0 = perf()
        hub.set_risk_score(principal, 10 + (i % 2))
        invalidation.append((arrived[-1] - t0) * 1e6)

    decide_p50 = statistics.median(decide)
    naive_p50 = statistics.median(naive)
    return {
        "decide_us_p50": round(decide_p50, 2),
        "decide_us_p99": round(percentile(decide, 99), 2),
        "naive_cedar_us_p50": round(naive_p50, 2),
        "speedup_vs_naive": round(naive_p50 / decide_p50, 1),
        "table_entries": len(table.entries) if table else 0,
        "table_cedar_requests": engine.plan_classes(key),
        "table_compile_ms_p50": round(statistics.median(compile_ms), 3),
        "table_compile_ms_p99": round(percentile(compile_ms, 99), 3),
        "table_cached_us_p50": round(statistics.median(cached), 2),
        "invalidation_us_p50": round(statistics.median(invalidation), 2),
        "invalidation_us_p99": round(percentile(invalidation, 99), 2),
        "targets": {"table_compile_ms_p50": 5, "invalidation_us_p50": 1000},
    }
