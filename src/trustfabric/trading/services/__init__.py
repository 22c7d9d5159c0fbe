"""The floor's services, one OS process each (see ``README.md`` beside this file).

:data:`SERVICES` names each service's module and :class:`~trustfabric.trading.services.base.FloorService`
class; the module is both what the process runs and what its code digest is computed over, so
one table serves :func:`factory_for` and :func:`module_file`. Modules are imported only when
a process starts its service.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

SERVICES: dict[str, tuple[str, str]] = {  # service name -> (module in this package, class)
    "market-data": ("market_data", "MarketDataService"),
    "algo-meanrev": ("algo", "AlgoService"),
    "algo-momentum": ("algo", "AlgoService"),
    "pre-trade-risk": ("risk", "RiskService"),
    "order-router": ("router", "RouterService"),
    "venue-a": ("venue", "VenueService"),
    "venue-b": ("venue", "VenueService"),
    "oms": ("oms", "OmsService"),
    "settlement": ("settlement", "SettlementService"),
    "risk-dashboard": ("dashboard", "DashboardService"),
    "fix-gateway": ("fix_gateway", "FixGatewayService"),
}


def factory_for(name: str) -> Callable:
    """The service class of ``name`` (called with the process's ``ServiceRuntime``)."""
    module, cls = SERVICES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def module_file(name: str) -> Path:
    """The code artefact of a service (what its code digest is computed over)."""
    return Path(__file__).resolve().parent / f"{SERVICES[name][0]}.py"
