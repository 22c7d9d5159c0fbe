"""The simulator's exceptions.

::

    SimulationError (trustfabric.errors)     simulation.error
    ├── ScenarioError                        scenario.invalid, scenario.unknown
    └── FloorUnavailable                     simulation.floor_unavailable,
                                             simulation.foothold_unavailable

A scenario file that does not parse or names something the floor does not have
is a :class:`ScenarioError` before anything runs; a floor that cannot be started
or a foothold that cannot be obtained is :class:`FloorUnavailable` (the run stops,
it never reports a scenario it did not run).
"""

from __future__ import annotations

from trustfabric.errors import SimulationError


class ScenarioError(SimulationError):
    reason = "scenario.invalid"


class FloorUnavailable(SimulationError):
    reason = "simulation.floor_unavailable"
