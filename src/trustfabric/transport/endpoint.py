"""What both ends of a framed link share, whether a socket or the in-memory fake: delivery and batching.

:class:`~trustfabric.transport.connection.FrameConnection` and
:class:`~trustfabric.transport.memory.MemoryConnection` get their bytes in
different ways but hand the decoded frames on in one way, written once here:
each frame goes to ``on_frame`` (a plain callback; a handler that raises closes
its connection only, ``transport.handler_error``) or, while none is set, waits in
an inbox for ``await recv()``; ``take_early_frames()`` hands over what waited
when a caller switches from ``recv`` to ``on_frame``; ``queue(frame)`` encodes
into the batch the next ``flush()`` sends. A subclass sets the attributes named
in :meth:`FrameEndpoint._init_endpoint` and ``_loop``, ``codec``, ``name``,
``_batch``, and provides ``fail(reason, detail)``; on closing it calls
:meth:`FrameEndpoint._wake_receiver` so a waiting ``recv`` raises.

:func:`answer_unhandled` is what a server's handler does with a frame it does not
take itself: a ``Ping`` gets its ``Pong``, anything else closes the connection
(``frame.unexpected``).
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import Callable
from typing import Any

from trustfabric.transport import errors as E
from trustfabric.transport.errors import ConnectionClosed
from trustfabric.transport.frames import Frame, FrameCodec, Ping, Pong


class FrameEndpoint(abc.ABC):
    """The delivery, inbox and batching of one end of a framed link (a base of both connections)."""

    _loop: asyncio.AbstractEventLoop
    codec: FrameCodec
    name: str
    closed: bool
    close_reason: str
    _batch: bytearray

    def _init_endpoint(self) -> None:
        self._inbox: collections.deque[Frame] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self.on_frame: Callable[[Frame], Any] | None = None
        self.frames_in = 0

    @abc.abstractmethod
    def fail(self, reason: str, detail: str = "") -> None:
        """Close the connection for ``reason`` (a handler's fault lands here)."""

    # -- receiving ---------------------------------------------------------------------
    def _deliver(self, frames: list[Frame]) -> None:
        self.frames_in += len(frames)
        on_frame = self.on_frame
        for frame in frames:
            if self.closed:
                return
            if on_frame is not None:
                try:
                    on_frame(frame)
                except Exception as exc:  # noqa: BLE001 - a handler fault closes this connection only
                    self.fail("transport.handler_error", repr(exc)[:200])
                    return
            else:
                self._inbox.append(frame)
                waiter = self._waiter
                if waiter is not None:
                    self._waiter = None
                    if not waiter.done():
                        waiter.set_result(None)

    def _wake_receiver(self) -> None:
        """Wake a ``recv`` waiting for a frame (it then finds the connection closed)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_early_frames(self) -> list[Frame]:
        """The frames received before ``on_frame`` was set (with the handshake), removed from the inbox:
        a caller taking the connection over from :meth:`recv` replays them into its own handler."""
        frames = list(self._inbox)
        self._inbox.clear()
        return frames

    async def recv(self) -> Frame:
        """The next frame; :class:`ConnectionClosed` (with the close reason) once closed."""
        while True:
            if self._inbox:
                return self._inbox.popleft()
            if self.closed:
                raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)
            waiter = self._loop.create_future()
            self._waiter = waiter
            await waiter

    # -- sending -----------------------------------------------------------------------
    def queue(self, frame: Frame) -> None:
        """Add a frame to the batch (sent by the next ``flush()``). FrameError if too big."""
        if self.closed:
            raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)
        self.codec.encode_into(frame, self._batch)


def answer_unhandled(conn: Any, frame: Frame) -> None:
    """A frame the server's handler does not take: a ``Ping`` is answered, anything else is refused.

    The refusal closes the connection with ``frame.unexpected`` and the frame's type.
    """
    if type(frame) is Ping:
        conn.send(Pong(n=frame.n))
    else:
        conn.fail("frame.unexpected", type(frame).__name__)
