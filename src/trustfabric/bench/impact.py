"""``bench impact``: a policy change's impact replayed over a day of floor traffic, beside reading it alone.

A scratch central log is filled with ``decisions`` recorded decisions over the floor's declared
flows (:func:`trustfabric.policy.synthetic.floor_day`: allowed flows, lateral attempts, decisions
under a raised risk signal, each joined to the table-compile record that carries its signals).
The proposed set is the floor's policies with one permit removed (``venue-b.fills``), so the
replay has real flips to find and report.

* ``rate_per_s``: recorded decisions replayed per second by :func:`trustfabric.policy.impact.impact`,
  reading the log included (what ``policy impact`` reports).
* ``read_only_per_s``: the baseline, measured in the same run on the same log: the records read
  and folded into request classes with no policy evaluated (:func:`trustfabric.policy.recorded.read`).
  ``ratio`` is ``rate_per_s / read_only_per_s``: how much of the replay is reading.
* ``distinct`` / ``evaluations``: request classes, and Cedar evaluations per set (identical
  requests are decided once); ``flips`` and ``flipped_decisions`` what the change would move.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trustfabric.policy import synthetic
from trustfabric.policy.impact import impact
from trustfabric.policy.paths import FLOOR_MANIFEST, POLICIES_DIR
from trustfabric.policy.recorded import read
from trustfabric.policy.topology import Topology

DROPPED = "venue-b.fills"  # the proposed change: one permit removed


def proposed_without(policies: Path, policy_id: str, into: Path) -> Path:
    """A copy of ``policies`` with the policy annotated ``@id(policy_id)`` removed."""
    shutil.copytree(policies, into)
    for path in into.glob("*.cedar"):
        text = path.read_text()
        match = re.search(rf'@id\("{re.escape(policy_id)}"\)', text)
        if match is not None:
            end = text.index(";", match.start()) + 1
            path.write_text(text[:match.start()] + text[end:])
            return into
    raise ValueError(f"no policy {policy_id} in {policies}")


def run(decisions: int = 1_000_000, *, seed: int = 5,
        progress: Callable[[str], None] = lambda _stage: None) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="tf-bench-impact-") as scratch:
        root = Path(scratch)
        topology = Topology.load(FLOOR_MANIFEST)
        progress(f"recording {decisions:,} decisions")
        t0 = time.perf_counter()
        synthetic.write(root / "day", synthetic.floor_day(topology, decisions, rng=random.Random(seed)))
        write_s = time.perf_counter() - t0
        proposed = proposed_without(POLICIES_DIR, DROPPED, root / "proposed")
        progress("reading (baseline)")
        t0 = time.perf_counter()
        recorded = read(root / "day")
        read_s = time.perf_counter() - t0
        progress("replaying against the active and the proposed sets")
        report = impact(proposed, root / "day", POLICIES_DIR)
    read_only = recorded.decisions / read_s if read_s > 0 else 0.0
    return {
        "decisions": report.decisions,
        "distinct": report.distinct,
        "evaluations": report.evaluations,
        "flips": len(report.flips),
        "flipped_decisions": sum(f.count for f in report.flips),
        "high_risk": report.high_risk,
        "change": f"removed {DROPPED}",
        "record_s": round(write_s, 2),
        "read_s": round(report.read_s, 2),
        "replay_s": round(report.replay_s, 2),
        "rate_per_s": round(report.rate),
        "read_only_per_s": round(read_only),
        "ratio": round(report.rate / read_only, 3) if read_only else 0.0,
    }
