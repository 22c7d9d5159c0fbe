"""False positives: a normal trading run of several market minutes on the real zero-trust floor
raises no quarantine and no alert of high severity.

The floor is the real one (control plane, every service a process, mTLS, policies, the
response engine seeing every refusal and denial the enforcement points report). Market
data runs accelerated: one tick every 0.05 s wall clock advances the market by 2 s
(``md_step_s``; the floor's default is 30 s a tick), so five market minutes take 150
ticks. The floor trades until the services' reports show the lower bounds the test asserts (at least 5 market minutes from the ticks actually published for all 30
symbols, 50 orders through pre-trade risk, the router and the venues, 1,000
enforcement-point decisions: market-data deliveries, orders, routes, executions, fills,
settlement), bounded in wall-clock time; then it reads alerts and incidents. (Two earlier
measured runs of 30 s fixed trading: 657 and 659 ticks, 296 and 319 orders, about
30,600 decisions each.)

This test caught a real false positive: pre-trade risk's credit-limit rejection (a
``risk.check`` decision event) was read as a never-granted access and quarantined an
algo; business-rule rejections no longer feed the lateral and insider detectors.
"""

from __future__ import annotations

import asyncio

import pytest

from trustfabric.policy.topology import Topology
from trustfabric.response.alerts import Severity
from trustfabric.trading.launcher import Floor

from tests.floor_fixtures import POLICY_DIR
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TRADING_LIMIT_S = 60.0  # bound on the wall-clock wait for the lower bounds below
MD_INTERVAL_S = 0.05
MD_STEP_S = 2.0  # market seconds per tick
MARKET_MINUTES = 5
MIN_ORDERS = 50
MIN_DECISIONS = 1000


def _traded_enough(floor: Floor, topology: Topology) -> bool:
    """The services' reports show the bounds the test asserts: market minutes, orders, decisions."""
    ticks = floor.stats().get("market-data", {}).get("md_published", 0) / max(1, len(topology.symbols))
    decisions = floor.total("pep_allowed") + floor.total("pep_denied")
    return (ticks * MD_STEP_S >= MARKET_MINUTES * 60 and floor.total("risk_received") >= MIN_ORDERS
            and floor.total("venue_orders") > 0 and decisions >= MIN_DECISIONS)


async def _trade(home) -> dict:
    topology = Topology.load(POLICY_DIR / "floor.toml")
    floor = Floor(home=home, mode="zero-trust", md_interval_s=MD_INTERVAL_S, boot_extra={"md_step_s": MD_STEP_S})
    await floor.start()
    try:
        await eventually(lambda: _traded_enough(floor, topology), TRADING_LIMIT_S, interval_s=0.2,
                         what=f"{MARKET_MINUTES} market minutes, {MIN_ORDERS} orders, {MIN_DECISIONS} decisions")
        stats = floor.stats()
        plane = floor.plane
        return {
            "ticks": stats.get("market-data", {}).get("md_published", 0) / max(1, len(topology.symbols)),
            "orders": floor.total("risk_received"),
            "venue_orders": floor.total("venue_orders"),
            "decisions": floor.total("pep_allowed") + floor.total("pep_denied"),
            "alerts": list(plane.alerts),
            "incidents": plane.containment.store.incidents(limit=1000),
            "hub_quarantined": plane.hub.quarantined(),
            "fail_open": floor.total("fail_open"),
        }
    finally:
        await floor.stop()


def test_minutes_of_normal_trading_raise_no_quarantine_and_no_high_alert(tmp_path):
    run = asyncio.run(_trade(tmp_path))
    market_s = run["ticks"] * MD_STEP_S
    assert market_s >= MARKET_MINUTES * 60, run["ticks"]  # at least five market minutes
    assert run["orders"] >= MIN_ORDERS and run["venue_orders"] > 0  # it really traded
    assert run["decisions"] >= MIN_DECISIONS
    high = [a for a in run["alerts"] if a.severity in (Severity.HIGH, Severity.CRITICAL)]
    assert high == [], [(a.principal, a.category, a.summary) for a in high]
    assert run["incidents"] == [] and run["hub_quarantined"] == {}
    assert run["fail_open"] == 0
