"""One simulation run: scenarios in each mode on the real floor, the hop figure, the report.

:func:`run_simulation` is what ``trustfabric simulate`` (and a demo's closing
comparison) calls: it runs :class:`~trustfabric.simulation.runner.SimulationRunner`,
measures the per-hop latency briefly with the hop benchmark's own measurement in
the same run, and writes ``report.html`` + ``results.json`` with
:func:`~trustfabric.simulation.report.write_report`. Returns the results object.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from trustfabric.policy.topology import Topology
from trustfabric.simulation.report import write_report
from trustfabric.simulation.results import results_object
from trustfabric.simulation.runner import PERIMETER, ZERO_TRUST, Progress, RunConfig, SimulationRunner, _quiet
from trustfabric.simulation.scenarios import load_scenarios, select

MODE_CHOICES = {"zero-trust": (ZERO_TRUST,), "perimeter": (PERIMETER,), "both": (ZERO_TRUST, PERIMETER)}


def _policies() -> Path:
    from trustfabric.control.plane import DEFAULT_POLICIES

    return Path(DEFAULT_POLICIES)


async def measure_hop(rounds: int = 3, per_round: int = 1500) -> dict[str, Any]:
    """The hop benchmark's measurement (plain TCP vs mTLS vs zero-trust hop), run briefly."""
    from trustfabric.commands.bench_hop import _measure

    hop = await _measure(rounds, per_round, _policies())
    hop["rounds"], hop["per_round"] = rounds, per_round
    return hop


async def run_simulation_async(mode: str = "both", scenario: str | None = None, *, report_dir: Path | None = None,
                               home: Path | None = None, review_interval_s: float = 3600.0, warmup_s: float = 3.0,
                               hop: bool = True, scenarios_path: Path | None = None,
                               progress: Progress = _quiet) -> dict[str, Any]:
    topology = Topology.load(_policies() / "floor.toml")
    chosen = select(load_scenarios(topology, scenarios_path), scenario)
    work = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="tf-simulate-"))
    config = RunConfig(home=work, modes=MODE_CHOICES[mode], warmup_s=warmup_s,
                       review_interval_s=review_interval_s, progress=progress)
    runner = SimulationRunner(chosen, config)
    results = await runner.run()
    hop_figures: dict[str, Any] = {}
    if hop:
        progress("hop.measuring", {})
        hop_figures = await measure_hop()
    obj = results_object(results, hop_figures, perimeter_review_interval_s=review_interval_s,
                         floors=runner.floor_summaries,
                         method={"successes": "effects the target services performed for the attacker, counted by "
                                              "the services (trace-tagged requests), not the attacker's view",
                                 "perimeter_ttd": f"modelled: next periodic log review after the first attempt, "
                                                  f"reviews every {review_interval_s:g} s",
                                 "zero_trust_ttd": "measured: attacker's first send to the response engine's alert",
                                 "zero_trust_ttc": "measured: alert to the last enforcement point confirming refusal"})
    if report_dir is not None:
        notes = [f"Perimeter time to detect is modelled: the next periodic log review after the first attempt, "
                 f"with reviews every {review_interval_s:g} s from the floor's start; the perimeter has no "
                 f"automated containment.",
                 "Zero-trust figures are measured on the running floor: separate service processes, mTLS, "
                 "per-hop enforcement, the control plane's response engine.",
                 "Successes and blast radius come from the effects the services performed (counted by the "
                 "services for the attacker's tagged requests), never from what the attacker believed."]
        write_report(obj, Path(report_dir), notes=notes)
    return obj


def run_simulation(mode: str = "both", scenario: str | None = None, **kwargs: Any) -> dict[str, Any]:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        return runner.run(run_simulation_async(mode, scenario, **kwargs))
