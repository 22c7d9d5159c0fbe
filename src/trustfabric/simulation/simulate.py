"""One simulation run: scenarios in each mode on the real floor, the hop figure, the report.

:func:`run_simulation` is what ``trustfabric simulate`` (and a demo's closing
comparison) calls: it runs :class:`~trustfabric.simulation.runner.SimulationRunner`,
adds the per-hop latency measured in the same run by the measurement it is given
(``hop``: the CLI passes the hop benchmark's :func:`~trustfabric.bench.hop.measure_brief`,
so this layer imports no benchmark), and writes ``report.html`` + ``results.json`` with
:func:`~trustfabric.simulation.report.write_report`. Returns the results object.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology
from trustfabric.simulation.report import write_report
from trustfabric.simulation.results import results_object
from trustfabric.simulation.runner import PERIMETER, ZERO_TRUST, Progress, RunConfig, SimulationRunner, _quiet
from trustfabric.simulation.scenarios import load_scenarios, select

HopMeasure = Callable[[], Awaitable[dict[str, Any]]]  # the per-hop latency figures, measured in the run
MODE_CHOICES = {"zero-trust": (ZERO_TRUST,), "perimeter": (PERIMETER,), "both": (ZERO_TRUST, PERIMETER)}


async def run_simulation_async(mode: str = "both", scenario: str | None = None, *, report_dir: Path | None = None,
                               home: Path | None = None, review_interval_s: float = 3600.0, warmup_s: float = 3.0,
                               hop: HopMeasure | None = None, scenarios_path: Path | None = None,
                               progress: Progress = _quiet) -> dict[str, Any]:
    topology = Topology.load(FLOOR_MANIFEST)
    chosen = select(load_scenarios(topology, scenarios_path), scenario)
    work = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="tf-simulate-"))
    config = RunConfig(home=work, modes=MODE_CHOICES[mode], warmup_s=warmup_s,
                       review_interval_s=review_interval_s, progress=progress)
    runner = SimulationRunner(chosen, config)
    results = await runner.run()
    hop_figures: dict[str, Any] = {}
    if hop:
        progress("hop.measuring", {})
        hop_figures = await hop()
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
