"""The demo's floor run: trade, compromise an algo half-way with its stolen credentials, keep trading.

:func:`run_demo` is ``trustfabric demo``'s main job on a zero-trust
:class:`~trustfabric.trading.launcher.Floor`: a FIX client's orders
(:func:`demo_fix_client`), then the attacker process (:func:`run_attacker`) holding an
algo's certificate and key, then trading on; the summary counts orders, fills, every
attempt and what it achieved (counted by the services), the incidents with their time
to detect and contain, and the denials of the run's central log by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from trustfabric.trading.launcher import Floor, floor_summary
from trustfabric.trading.services.base import ZERO_TRUST
from trustfabric.trading.services.fix_client import place_orders
from trustfabric.audit.log import Query, audit_dir, open_log

ATTACK_SUCCESS_KEYS = ("venue_direct", "settlement_read", "other_streams", "risk_bypass", "flood")


async def _tail(stream: asyncio.StreamReader, keep: int = 64 * 1024) -> bytes:
    """Read ``stream`` to its end (so the writer never blocks on a full pipe), keeping its last ``keep`` bytes."""
    kept = b""
    while chunk := await stream.read(keep):
        kept = (kept + chunk)[-keep:]
    return kept


async def run_attacker(floor: Floor, victim: str = "algo-momentum", timeout_s: float = 60.0) -> dict[str, Any]:
    """Start the attacker process against ``floor`` holding ``victim``'s stolen credentials."""
    boot = {"home": str(floor.home), "topology": str(floor.topology_path), "ports": floor.ports,
            "addresses": {name: floor.address_of(name) for name in floor.ports}, "control_host": floor.control_host,
            "control_port": floor.server.control_port if floor.server else 0,  # type: ignore[union-attr]
            "control_id": floor.plane.control_id if floor.plane else "", "victim": victim}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "trustfabric.trading.services", "demo-attacker",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(boot).encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    stderr = asyncio.get_running_loop().create_task(_tail(proc.stderr))
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        result = json.loads(line.decode() or "{}")
        if not isinstance(result, dict) or not result:
            raise ValueError("no result line")
    except (TimeoutError, ValueError):
        result = {"victim": victim, "attempts": [], "error": "attacker.no_result"}
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
    with contextlib.suppress(Exception):
        lines = (await asyncio.wait_for(stderr, 2.0)).decode(errors="replace").strip().splitlines()
        if lines and not result.get("attempts"):
            result["error_detail"] = lines[-1][:300]  # why an attacker that tried nothing stopped
    if not stderr.done():
        stderr.cancel()
    return result


async def run_demo(home: Path, *, duration_s: float = 60.0, seed: int = 7, on_tick=None,
                   md_csv: Path | None = None, on_started=None, deployment=None) -> dict[str, Any]:
    """Trade, compromise an algo half-way (attacker process), keep trading; returns the summary.
    ``on_started(floor)`` (awaited) runs once the floor is up (``demo --console`` starts the console there)."""
    floor = Floor(home, ZERO_TRUST, seed=seed, md_csv=md_csv, deployment=deployment,
                  bus_url=deployment.bus if deployment is not None else "")
    t0 = time.monotonic()
    await floor.start()
    if on_started is not None:
        await on_started(floor)
    fix_result: dict[str, Any] = {}
    try:
        attack_at = max(3.0, duration_s * 0.5)
        if "fix-gateway" in floor.processes:
            fix_result = await demo_fix_client(floor, timeout_s=min(10.0, attack_at))
        while time.monotonic() - t0 < attack_at:
            await asyncio.sleep(0.25)
            if on_tick:
                on_tick(floor, "trading")
        before = floor_summary(floor)
        if on_tick:
            on_tick(floor, "attack")
        attack = await run_attacker(floor)
        while time.monotonic() - t0 < duration_s:
            await asyncio.sleep(0.25)
            if on_tick:
                on_tick(floor, "after attack")
        floor.command("settlement", "eod")
        await asyncio.sleep(0.6)
        after = floor_summary(floor)
        attempts = attack.get("attempts", [])
        plane = floor.plane
        incidents = plane.incidents() if plane else []
        result: dict[str, Any] = dict(after)
        result.update(
            mode=floor.mode, duration_s=round(time.monotonic() - t0, 1), seed=seed,
            attack_attempts=len(attempts), attack_successes=sum(1 for a in attempts if a.get("succeeded")),
            attack_error=attack.get("error", ""), attack_error_detail=attack.get("error_detail", ""),
            attack_by_scenario={k: {"attempts": sum(1 for a in attempts if a["scenario"] == k),
                                    "successes": sum(1 for a in attempts if a["scenario"] == k and a["succeeded"])}
                                for k in ATTACK_SUCCESS_KEYS},
            attempts=attempts,
            alerts=len(plane.alerts) if plane else 0,
            incidents=[{"principal": i["principal"], "contained": i.get("contained"), "ttd_ms": i.get("ttd_ms"),
                        "ttc_ms": i.get("ttc_ms"), "trigger": i.get("trigger")} for i in incidents],
            orders_after_attack=after["orders_submitted"] - before["orders_submitted"],
            fills_after_attack=after["fills"] - before["fills"],
            links=floor.links(), services=floor.stats(),
        )
    finally:
        await floor.stop()
    result.update(audit_collected=floor.collected, audit_error=floor.collector_error,
                  audit_dir=str(Path(home) / "audit"), fix=fix_result, denied_by_reason=denied_by_reason(home))
    return result


async def demo_fix_client(floor: Floor, timeout_s: float = 10.0) -> dict[str, Any]:
    """The demo's FIX client: CLIENT-A logs on over mTLS, sends a few orders, reads the execution reports."""

    await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, timeout_s)
    await asyncio.sleep(1.0)  # reference prices at risk
    try:
        return await place_orders(floor.fix_port, floor.fix_edge["client_dirs"]["client-a"], "CLIENT-A", orders=5,
                                  timeout_s=timeout_s, host=floor.address_of("fix-gateway"))
    except Exception as exc:  # noqa: BLE001 - reported, the demo goes on
        return {"error": getattr(exc, "reason", type(exc).__name__)}


def denied_by_reason(home: Path) -> dict[str, int]:
    """Denials in the run's central log, by reason code."""
    from collections import Counter


    try:
        log = open_log(audit_dir(Path(home)))
    except Exception:  # noqa: BLE001
        return {}
    try:
        return dict(Counter(r.event().reason or "(none)" for r in log.query(Query(decision="deny"))).most_common())
    finally:
        log.close()
