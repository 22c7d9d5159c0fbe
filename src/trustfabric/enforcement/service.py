"""The Python API for services: declare handlers with the action and resource each needs.

::

    svc = GuardedService("risk", pep)

    @svc.handler(action="submit_order", resource="risk/orders",
                 notional=lambda m: m.qty * m.price, symbol=lambda m: m.symbol)
    async def on_order(msg, ctx):
        return Ack(msg.cl_ord_id)

    reply = await svc.dispatch(ctx, "submit_order", msg)

Every message goes through the enforcement point's hot path before its handler
runs: allowed messages reach the handler; denied ones get a :class:`Refusal`
carrying the reason code (and are logged by the PEP). A message for an action
no handler declares is checked too (and denied: ``enforcement.not_in_table`` -
an unknown action is never in a table) so that it is logged like any other.
Extracting the notional or symbol from a malformed message is a deny
(``enforcement.bad_message``), never a crash.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import msgspec

from trustfabric.enforcement import errors as E
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.session import Session
from trustfabric.errors import TrustFabricError

BAD_MESSAGE = "enforcement.bad_message"
HANDLER_FAILED = "service.handler_failed"


class Refusal(msgspec.Struct, frozen=True, tag="refusal"):
    """The reply to a denied (or failed) message: a reason code, never a stack trace."""

    reason: str
    action: str = ""
    detail: str = ""


@dataclass
class Context:
    """What a handler knows about the caller: its session (and so its principal)."""

    session: Session | None
    trace_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def principal(self) -> str:
        return self.session.principal if self.session is not None else ""


Handler = Callable[[Any, Context], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Route:
    action: str
    resource: str | Callable[[Any], str]
    handler: Handler
    notional: Callable[[Any], float] | None = None
    symbol: Callable[[Any], str] | None = None


class GuardedService:
    """A service whose every handler is guarded by its enforcement point."""

    def __init__(self, name: str, pep: EnforcementPoint) -> None:
        self.name = name
        self.pep = pep
        self.routes: dict[str, Route] = {}
        self.handled = 0
        self.refused = 0

    def handler(self, *, action: str, resource: str | Callable[[Any], str],
                notional: Callable[[Any], float] | None = None,
                symbol: Callable[[Any], str] | None = None) -> Callable[[Handler], Handler]:
        """Declare the handler of ``action``; it runs only for messages the PEP allows on ``resource``."""

        def register(fn: Handler) -> Handler:
            if action in self.routes:
                raise ValueError(f"{self.name}: action {action!r} already has a handler")
            self.routes[action] = Route(action, resource, fn, notional, symbol)
            return fn

        return register

    async def dispatch_request(self, ctx: Context, req: Any) -> Any:
        """A transport ``Request`` already allowed by the PEP on its envelope: run the declared handler.

        The envelope's resource must be the one the handler declared (a request
        cannot borrow another resource's permission); its ``body`` is handed over raw.
        """
        route = self.routes.get(req.action)
        if route is None:
            return Refusal(E.NOT_IN_TABLE, req.action)
        if not callable(route.resource) and route.resource != req.resource:
            return Refusal(E.NOT_IN_TABLE, req.action, "resource differs from the handler's")
        return await self._run(route, req, ctx)

    async def dispatch(self, ctx: Context, action: str, msg: Any) -> Any:
        """Check ``msg`` with the PEP, then run its handler; a :class:`Refusal` when denied."""
        route = self.routes.get(action)
        if route is None:
            allowed, reason = self.pep.check(ctx.session, action, f"{self.name}/<no handler>")
            self.refused += 1
            return Refusal(reason if not allowed else E.NOT_IN_TABLE, action)
        try:
            resource = route.resource(msg) if callable(route.resource) else route.resource
            notional = float(route.notional(msg)) if route.notional is not None else 0.0
            symbol = route.symbol(msg) if route.symbol is not None else None
        except Exception as exc:  # noqa: BLE001 - a malformed message is a deny
            self.pep.check(ctx.session, action, "<malformed>")
            self.refused += 1
            return Refusal(BAD_MESSAGE, action, type(exc).__name__)
        allowed, reason = self.pep.check(ctx.session, action, resource, notional, symbol)
        if not allowed:
            self.refused += 1
            return Refusal(reason, action)
        return await self._run(route, msg, ctx)

    async def _run(self, route: Route, msg: Any, ctx: Context) -> Any:
        """Run an allowed message's handler; its failure is a :class:`Refusal`, never a crash."""
        self.handled += 1
        try:
            result = route.handler(msg, ctx)
            if inspect.isawaitable(result):
                result = await result
            return result
        except TrustFabricError as exc:
            return Refusal(exc.reason, route.action, exc.detail[:200])
        except Exception as exc:  # noqa: BLE001 - a handler bug is an error reply, not a crash
            return Refusal(HANDLER_FAILED, route.action, type(exc).__name__)
