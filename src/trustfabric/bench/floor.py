"""``trustfabric bench floor``: end-to-end orders/s of the same floor in zero-trust and perimeter mode.

Both floors run side by side in one run on loopback; after a warm-up of each, the rounds
alternate the two modes (which one goes first alternates too) with the same burst;
medians and min-max are reported. An algo sends a burst of marketable orders (pipelined,
at most 512 unanswered) through pre-trade risk, the router and the venues to the OMS.
Each burst carries its own tag; the OMS counts exactly that burst's orders and stamps the
first and the last, and a round's orders/s is the steady rate between them (the time from
the command to the last order is reported beside it as ``end_to_end_s``). The policy set is
the floor's own with every rate obligation raised 1000x, and the risk throttle and credit
limits are raised in both modes alike, so the transport and enforcement - not the
configured caps - are measured.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from trustfabric.bench.console_watch import ConsoleWatcher
from trustfabric.policy.paths import POLICIES_DIR
from trustfabric.trading.launcher import Floor, floor_summary
from trustfabric.trading.services.base import PERIMETER, ZERO_TRUST

def bench_policies(source: Path, target: Path, factor: int = 1000) -> Path:
    """A copy of the policy set with every rate obligation raised ``factor`` times (same grants, same checks)."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    for path in target.glob("*.cedar"):
        text = path.read_text()
        path.write_text(re.sub(r'@max_rate\("(\d+)"\)', lambda m: f'@max_rate("{int(m.group(1)) * factor}")', text))
    return target


BENCH_SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
                  "algo-momentum")


BENCH_BOOT = {"risk_limits": {"rate_per_s": 1e9, "burst": 10**9, "credit_dollars": 10**12, "dup_window_ns": 0,
                              "max_order_qty": 10**6}, "md_interval_s": 0.2}


async def start_bench_floor(home: Path, mode: str, policies: Path) -> Floor:
    """A bench floor (no audit collector: the order path is measured), trading-ready: link up, quotes in."""
    floor = Floor(home, mode, services=BENCH_SERVICES, policies=policies, boot_extra=BENCH_BOOT, collect_audit=False)
    await floor.start()
    algo = lambda: floor.stats().get("algo-momentum", {})  # noqa: E731
    await floor.wait_for(lambda: algo().get("link_up", 0) == 1.0, 20.0)
    await asyncio.sleep(1.5)  # quotes in
    return floor


_bench_tags = itertools.count(1)


async def bench_round(floor: Floor, orders: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """One burst of ``orders`` through the floor, timed where the orders arrive: at the OMS.

    The burst's orders carry a tag of their own; the OMS counts only those and stamps
    (wall clock, same machine) the first and the last. ``orders_per_s`` is the steady
    rate between them, ``(orders - 1) / (last - first)``: command delivery and link
    set-up are not in it, nor is the stats report's period. ``end_to_end_s`` is from the
    command to the last order, for reference.
    """
    tag = next(_bench_tags)
    oms = lambda: floor.stats().get("oms", {})  # noqa: E731

    def reached() -> int:
        stats = oms()
        return int(stats.get("bench_orders", 0)) if stats.get("bench_tag") == float(tag) else 0

    t0 = time.time()
    floor.command("algo-momentum", "bench", orders=orders, tag=tag)
    done = await floor.wait_for(lambda: reached() >= orders, timeout_s, interval_s=0.01)
    stats = oms()
    count = reached()
    first, last = float(stats.get("bench_first_at", 0.0)), float(stats.get("bench_last_at", 0.0))
    steady = last - first if done and count > 1 else 0.0
    return {"orders": orders, "reached_oms": count, "elapsed_s": round(steady, 4),
            "end_to_end_s": round((last if done else time.time()) - t0, 4), "complete": done,
            "orders_per_s": round((count - 1) / steady, 1) if steady > 0 else 0.0}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


async def console_rounds(floor: Floor, orders: int, rounds: int) -> dict[str, Any]:
    """The zero-trust floor with the console attached and a browser on its live decisions page, against the same
    floor without anyone watching: ``rounds`` rounds each, alternating (which goes first alternates too).

    The floor ships its audit spools for this phase (the live page reads the central log),
    in both kinds of round alike; the console process stays up, idle, in the unwatched ones.
    """
    floor.start_collector()
    watcher = await ConsoleWatcher(floor.home, floor.plane.identity.users()).start()  # type: ignore[union-attr]
    try:
        watched: list[float] = []
        alone: list[float] = []
        rows = 0
        for n in range(rounds):
            for watching in ((False, True) if n % 2 == 0 else (True, False)):
                if watching:
                    await watcher.watch()
                result = await bench_round(floor, orders)
                if watching:  # the page shows the round's decisions once the collector shipped them (untimed)
                    for _ in range(40):
                        seen = await watcher.rows()
                        if seen:
                            break
                        await asyncio.sleep(0.1)
                    rows = max(rows, seen)
                    await watcher.unwatch()
                (watched if watching else alone).append(result["orders_per_s"])
    finally:
        await watcher.stop()
    w, a = _spread(watched), _spread(alone)
    return {"watcher": watcher.kind, "without_console_orders_per_s": a["median"],
            "with_console_orders_per_s": w["median"], "with_vs_without": round(w["median"] / a["median"], 3)
            if a["median"] else 0.0, "without_range": [a["min"], a["max"]], "with_range": [w["min"], w["max"]],
            "live_rows_seen": rows, "rounds": rounds}


async def run_bench(home: Path, *, orders: int = 16000, rounds: int = 7, warmup: int = 2000,
                    console: bool = False) -> dict[str, Any]:
    """Zero-trust vs perimeter on the same machine in the same run, fairly.

    Both floors run side by side (each idles while the other is measured), both are
    warmed up with ``warmup`` orders, then ``rounds`` rounds alternate the two modes
    (ZT first in even rounds, perimeter first in odd ones) with the same burst of
    ``orders``. Reported: median and min-max orders/s per mode, the ratio of the
    medians, and every round's own ratio.
    """
    policies = bench_policies(POLICIES_DIR, Path(home) / "bench-policies")
    floors: dict[str, Floor] = {}
    try:
        floors[ZERO_TRUST] = await start_bench_floor(Path(home) / "zt", ZERO_TRUST, policies)
        floors[PERIMETER] = await start_bench_floor(Path(home) / PERIMETER, PERIMETER, policies)
        for floor in floors.values():
            await bench_round(floor, warmup)
        results: dict[str, list[dict[str, Any]]] = {ZERO_TRUST: [], PERIMETER: []}
        for n in range(rounds):
            order = (ZERO_TRUST, PERIMETER) if n % 2 == 0 else (PERIMETER, ZERO_TRUST)
            for mode in order:
                results[mode].append(await bench_round(floors[mode], orders))
        console_result = await console_rounds(floors[ZERO_TRUST], orders, rounds) if console else None
        zt_rates = [r["orders_per_s"] for r in results[ZERO_TRUST]]
        p_rates = [r["orders_per_s"] for r in results[PERIMETER]]
        zt, per = _spread(zt_rates), _spread(p_rates)
        summaries = {mode: floor_summary(f) for mode, f in floors.items()}
        links = {mode: f.links() for mode, f in floors.items()}
    finally:
        for floor in floors.values():
            await floor.stop()
    ratio = zt["median"] / per["median"] if per["median"] else 0.0
    extra = {"console": console_result} if console_result is not None else {}
    return {**extra, "zt_orders_per_s": zt["median"], "perimeter_orders_per_s": per["median"],
            "zt_vs_perimeter": round(ratio, 3),
            "zt_orders_per_s_range": [zt["min"], zt["max"]], "perimeter_orders_per_s_range": [per["min"], per["max"]],
            "round_ratios": [round(a / b, 3) if b else 0.0 for a, b in zip(zt_rates, p_rates)],
            "orders": orders, "rounds": rounds, "warmup_orders": warmup,
            "complete": all(r["complete"] for rs in results.values() for r in rs),
            "fail_open": summaries[ZERO_TRUST]["fail_open"], "denied_hops": summaries[ZERO_TRUST]["denied_hops"],
            "zero_trust": {"rounds": results[ZERO_TRUST], "links": links[ZERO_TRUST]},
            PERIMETER: {"rounds": results[PERIMETER], "links": links[PERIMETER]},
            "method": ("both floors up side by side; warm-up each; rounds alternate ZT/perimeter order; each round's rate "
                       "is steady state at the OMS (first to last order of the burst); medians"),
            "policy_note": "bench policy copy: every @max_rate raised 1000x; risk throttle and credit raised in both modes"}
