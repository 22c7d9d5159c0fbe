"""One host cut off from the control plane: its enforcement points serve the tables they hold until those
tables' lifetime ends, then fail closed; when the link is back they recover, with no restart.

The floor runs over three loopback hosts (deploy/three-hosts.toml); the venues' host reaches the control
plane through its own address (the deployment's per-host ``control``, as through a site's load balancer),
where the test puts a proxy it can blackhole: packets stop flowing both ways, nothing is reset. Decision
tables live ``TTL_S`` (``up --table-ttl``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.proxy import CuttableProxy
from trustfabric.audit.log import Query, open_log
from trustfabric.policy.topology import Topology
from trustfabric.trading import deployment as D
from trustfabric.trading.launcher import Floor, floor_summary, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

EXAMPLE = Path(__file__).parents[2] / "deploy" / "three-hosts.toml"
ROUTE = "127.0.0.9"  # the venues' host's way to the control plane
TTL_S = 4.0
SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
            "algo-momentum")


def _placement() -> D.Deployment:
    import tomllib

    data = tomllib.loads(EXAMPLE.read_text())
    for host in data["host"]:
        if host["name"] == "venues-edge":
            host["control"] = ROUTE
    return D.parse(data, Topology.load(Topology.default_path()))


def _venue_decisions(home: Path, since: float, until: float) -> list:
    log = open_log(home / "audit")
    try:
        rows = log.query(Query(kind="decision", since_ns=int(since * 1e9), until_ns=int(until * 1e9)))
    finally:
        log.close()
    return [r for r in rows if r.source in ("venue-a", "venue-b")]


async def test_a_host_cut_off_serves_its_tables_until_they_end_then_fails_closed_and_recovers(tmp_path):
    taken: set[int] = set()
    bootstrap, control = free_port(taken), free_port(taken)
    routes = [CuttableProxy(("127.0.0.1", port), host=ROUTE, port=port).start() for port in (bootstrap, control)]
    floor = Floor(tmp_path, "zero-trust", services=SERVICES, deployment=_placement(), control_ports=(bootstrap, control),
                  table_ttl_s=TTL_S, collect_interval_s=0.25)
    try:
        await floor.start()
        assert await floor.wait_for(lambda: floor_summary(floor)["orders_filled"] > 3, 60.0)
        cut_at = time.time()
        for route in routes:
            route.blackhole()
        await asyncio.sleep(TTL_S + 5.0)  # every table the venues held has ended, and more
        back_at = time.time()
        for route in routes:
            route.restore()
        assert await floor.wait_for(
            lambda: any(r.decision == "allow" for r in _venue_decisions(tmp_path, back_at, time.time())), 40.0), \
            "the venues did not recover"
    finally:
        await floor.stop()
        for route in routes:
            route.close()
    late = _venue_decisions(tmp_path, cut_at + TTL_S + 2.5, back_at)
    assert late, "no order reached the venues while their host was cut off"
    assert all(r.decision == "deny" for r in late), [(r.decision, r.event().reason) for r in late if r.decision != "deny"]
    assert {r.event().reason for r in late} <= {"enforcement.engine_unreachable", "session.engine_unreachable"}, \
        {r.event().reason for r in late}
    held = _venue_decisions(tmp_path, cut_at, cut_at + 1.0)
    assert any(r.decision == "allow" for r in held), "the tables the venues held were not served"
    assert floor_summary(floor)["fail_open"] == 0
