"""Simulation results: the per-scenario measurements and their summary per mode.

One :class:`ScenarioResult` per (scenario, mode); :func:`summarize` folds them into
the ``summary`` object of ``results.json``. Plain data, no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from trustfabric.percentiles import percentile

MODES = ("perimeter", "zero-trust")


class ScenarioResult(msgspec.Struct, kw_only=True):
    name: str
    mode: str
    attempts: int
    successes: int
    blast_radius: int  # resources/actions reached outside grants + unapproved venue orders + protected records read
    detected: bool
    ttd_ms: float | None  # first malicious attempt -> alert
    contained: bool
    ttc_ms: float | None  # alert -> refused at every enforcement point
    category: str = ""
    ttd_method: str = ""  # how the time to detect was obtained
    records_exposed: int = 0  # plaintext records reached by going to the data directly (disk, backup, keys)
    details: dict[str, Any] = msgspec.field(default_factory=dict)


def summarize(results: list[ScenarioResult]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = [r for r in results if r.mode == mode]
        if not rows:
            continue
        ttd = [r.ttd_ms for r in rows if r.ttd_ms is not None]
        ttc = [r.ttc_ms for r in rows if r.ttc_ms is not None]
        summary[mode] = {
            "scenarios": len(rows),
            "attempts": sum(r.attempts for r in rows),
            "successes": sum(r.successes for r in rows),
            "blast_radius": sum(r.blast_radius for r in rows),
            "records_exposed": sum(r.records_exposed for r in rows),
            "detected": sum(1 for r in rows if r.detected),
            "contained": sum(1 for r in rows if r.contained),
            "ttd_ms_p50": percentile(ttd, 50),
            "ttd_ms_p99": percentile(ttd, 99),
            "ttc_ms_p50": percentile(ttc, 50),
            "ttc_ms_p99": percentile(ttc, 99),
        }
    return summary


def results_object(results: list[ScenarioResult], hop: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``results.json`` / ``--json`` object."""
    hop = hop or {}
    obj: dict[str, Any] = {
        "scenarios": [msgspec.to_builtins(r) for r in results],
        "summary": summarize(results),
        "hop_added_us_p50": hop.get("zt_added_us_p50"),
        "hop": hop,
    }
    obj.update(extra)
    return obj
