"""The enforcement point on a framed mTLS connection: the server handler every Python service runs.

:func:`guarded_handler` returns a ``FrameServer`` handler (see
:mod:`trustfabric.transport.connection`) that puts the PEP on the connection:

* ``OpenSession(token)`` -> :meth:`EnforcementPoint.open_session` with the
  connection's verified :class:`~trustfabric.transport.tls.PeerIdentity`; the
  reply is ``SessionReady`` or an ``ErrorFrame`` with the refusal reason, and
  the connection closes (a refused session gets nothing else);
* ``RenewSession(token)`` -> :meth:`EnforcementPoint.renew` on the same
  connection; a refused renewal is an ``ErrorFrame`` and the old token's expiry
  still stands;
* ``Request`` -> the hot path with the envelope's action, resource, notional and
  symbol; denied: ``Response(ok=False, reason=...)``; allowed: the service's
  handler (a :class:`~trustfabric.enforcement.service.GuardedService`) or, with
  no service, an empty ``ok`` reply (the benchmark's echo);
* a request before any session is denied ``enforcement.no_session``.

With a table source that is awaited (the control plane in another process), the
session open, the renewal and the re-pull of a stale session's table run as tasks
with the source's own deadline: that connection's next frames wait, in order, and
every other connection on the loop is served meanwhile. A source that does not
answer in time refuses the session (``session.engine_unreachable``) or denies the
message (``enforcement.engine_unreachable``).

The connection's ``on_before_flush`` drains the PEP's decision records into the
audit sink, so a reply never leaves before its decision is recorded. When the PEP
closes the session (quarantine, revocation) the connection fails with that
reason at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

import msgspec

from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionClosed, SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.service import Context, GuardedService, Refusal
from trustfabric.enforcement.session import Session
from trustfabric.transport.endpoint import answer_unhandled
from trustfabric.transport.frames import ErrorFrame, OpenSession, RenewSession, Request, Response, SessionReady


def service_response(rid: int, reply: Any) -> Response:
    """The ``Response`` frame for a service handler's reply (shared with the floor's perimeter mode).

    A :class:`Refusal` is a refusal with its reason; a handler's reply already
    encoded (MessagePack bytes) is the body; any other reply (``None``, or a value
    the handler does not send back) is an empty ``ok``.
    """
    if isinstance(reply, Refusal):
        return Response(rid=rid, ok=False, reason=reply.reason)
    if isinstance(reply, (bytes, bytearray, memoryview)):
        return Response(rid=rid, ok=True, body=msgspec.Raw(reply))
    return Response(rid=rid, ok=True)


def _ready(session: Session, pep: EnforcementPoint) -> SessionReady:
    return SessionReady(session_id=str(session.session_id), expires_at=pep.wall_deadline(session),
                        epoch=session.table_epoch)


def guarded_handler(pep: EnforcementPoint, service: GuardedService | None = None):
    """A ``FrameServer`` handler enforcing ``pep`` on every frame of every connection."""

    awaits = pep.awaits_tables

    async def handler(conn) -> None:
        loop = asyncio.get_running_loop()
        box: list[Session | None] = [None]
        held: list[deque | None] = [None]  # this connection's frames that wait for a control-plane call
        tasks: set[asyncio.Task] = set()
        send = conn.send
        check = pep.check
        conn.on_before_flush = pep.flush_decisions

        def dropped(reason: str) -> None:
            loop.call_soon_threadsafe(conn.fail, reason)

        async def run_service(session: Session, req: Request) -> None:
            reply = await service.dispatch_request(Context(session, req.trace_id), req)  # type: ignore[union-attr]
            if not conn.closed:
                send(service_response(req.rid, reply))

        def hold(work: Any, done: Callable[[Any], None]) -> None:
            """Await ``work`` (a table from the control plane) off the event loop's turn; this
            connection's next frames wait for it, in order, and every other connection is served."""
            held[0] = deque()

            async def run() -> None:
                try:
                    result = await work
                except (SessionRefused, SessionClosed) as exc:
                    result = exc
                except Exception:  # noqa: BLE001 - a bug refuses, never allows
                    result = SessionRefused("internal error", reason=E.INTERNAL)
                queue, held[0] = held[0], None
                if conn.closed:
                    if isinstance(result, Session):
                        pep.close(result, conn.close_reason or "session.connection_closed")
                    return
                done(result)
                while queue:
                    if held[0] is not None:  # held again: the rest keeps its place in line
                        held[0].extend(queue)
                        break
                    on_frame(queue.popleft())

            task = loop.create_task(run())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def decide(frame: Request) -> None:
            session = box[0]
            allowed, reason = check(session, frame.action, frame.resource, frame.notional, frame.symbol or None)
            if not allowed:
                send(Response(rid=frame.rid, ok=False, reason=reason))
            elif service is None:
                send(Response(rid=frame.rid, ok=True))
            else:
                loop.create_task(run_service(session, frame))  # type: ignore[arg-type]

        def opened(result: Any) -> None:
            if isinstance(result, SessionRefused):
                conn.fail(result.reason, result.detail)
                return
            result.on_close = dropped
            box[0] = result
            send(_ready(result, pep))

        def renewed(session: Session, result: Any) -> None:
            if isinstance(result, (SessionRefused, SessionClosed)):
                send(ErrorFrame(reason=result.reason, detail=result.detail[:200]))
            else:
                send(_ready(session, pep))

        def on_frame(frame: Any) -> None:
            if held[0] is not None:
                held[0].append(frame)
                return
            if type(frame) is Request:
                session = box[0]
                if awaits and session is not None and pep.needs_redecide(session):
                    hold(pep.refresh(session), lambda _why: decide(frame))
                else:
                    decide(frame)
            elif type(frame) is OpenSession:
                if box[0] is not None:
                    conn.fail("session.already_open")
                    return
                if awaits:
                    hold(pep.open_session_async(conn.peer, frame.token), opened)
                    return
                try:
                    opened(pep.open_session(conn.peer, frame.token))
                except SessionRefused as exc:
                    opened(exc)
            elif type(frame) is RenewSession:
                session = box[0]
                if session is None:
                    send(ErrorFrame(reason="enforcement.no_session"))
                    return
                if awaits:
                    hold(pep.renew_async(session, frame.token), lambda result: renewed(session, result))
                    return
                try:
                    pep.renew(session, frame.token)
                except (SessionRefused, SessionClosed) as exc:
                    renewed(session, exc)
                    return
                renewed(session, None)
            else:
                answer_unhandled(conn, frame)

        conn.on_frame = on_frame
        try:
            await conn.wait_closed()
        finally:
            for task in list(tasks):
                task.cancel()
            if box[0] is not None:
                pep.close(box[0], conn.close_reason or "session.connection_closed")
            pep.flush_decisions()

    return handler
