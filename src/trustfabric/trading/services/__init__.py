"""The floor's services, one OS process each (see ``README.md`` beside this file)."""

from __future__ import annotations

from typing import Callable


def _algo(rt):
    from trustfabric.trading.services.algo import AlgoService
    return AlgoService(rt)


def _md(rt):
    from trustfabric.trading.services.market_data import MarketDataService
    return MarketDataService(rt)


def _risk(rt):
    from trustfabric.trading.services.risk import RiskService
    return RiskService(rt)


def _router(rt):
    from trustfabric.trading.services.router import RouterService
    return RouterService(rt)


def _venue(rt):
    from trustfabric.trading.services.venue import VenueService
    return VenueService(rt)


def _oms(rt):
    from trustfabric.trading.services.oms import OmsService
    return OmsService(rt)


def _settlement(rt):
    from trustfabric.trading.services.settlement import SettlementService
    return SettlementService(rt)


def _dashboard(rt):
    from trustfabric.trading.services.dashboard import DashboardService
    return DashboardService(rt)


def _fix_gateway(rt):
    from trustfabric.trading.services.fix_gateway import FixGatewayService
    return FixGatewayService(rt)


SERVICES: dict[str, Callable] = {
    "market-data": _md, "algo-meanrev": _algo, "algo-momentum": _algo, "pre-trade-risk": _risk,
    "order-router": _router, "venue-a": _venue, "venue-b": _venue, "oms": _oms, "settlement": _settlement,
    "risk-dashboard": _dashboard, "fix-gateway": _fix_gateway,
}


def factory_for(name: str) -> Callable:
    return SERVICES[name]


MODULE_FILES: dict[str, str] = {
    "market-data": "market_data.py", "algo-meanrev": "algo.py", "algo-momentum": "algo.py",
    "pre-trade-risk": "risk.py", "order-router": "router.py", "venue-a": "venue.py", "venue-b": "venue.py",
    "oms": "oms.py", "settlement": "settlement.py", "risk-dashboard": "dashboard.py",
    "fix-gateway": "fix_gateway.py",
}


def module_file(name: str):
    """The code artefact of a service (what its code digest is computed over)."""
    from pathlib import Path

    return Path(__file__).resolve().parent / MODULE_FILES[name]
