"""The one percentile of every figure trustfabric reports: nearest rank, ``q`` in 0..100.

Nearest rank returns a value that was measured (never an interpolation between two),
so a p99 of 100 samples is the 99th smallest. Empty input has no percentile: ``None``,
which reports print as absent rather than as zero.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); ``None`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
