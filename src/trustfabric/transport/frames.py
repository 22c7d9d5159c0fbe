"""Frames: length-prefixed msgspec MessagePack messages, one schema per message type.

Wire format: a 4-byte big-endian body length, then the body - one MessagePack
array whose first element is the message type's tag (msgspec tagged union,
``array_like`` for compactness and speed). Every message type is its own frozen
:class:`msgspec.Struct` subclass of :class:`Frame`; a service that needs more
types builds a :class:`FrameCodec` with them (they must subclass ``Frame`` and
carry a unique ``tag``).

:class:`FrameDecoder` is a streaming decoder: feed it whatever the socket
delivered and get the complete frames back. Anything wrong raises a
:class:`~trustfabric.transport.errors.FrameError` with a reason code:

* ``frame.oversized``  - a length above the maximum (refused from the header alone,
  before the body is buffered);
* ``frame.malformed``  - a zero length, or a body that is not a valid frame of a known type;
* ``frame.unknown_type`` - a well-formed body whose tag no schema declares;
* ``frame.too_deep``   - a body nested deeper than :data:`MAX_FRAME_NESTING` (checked before
  msgspec decodes it, so no decoder recursion ever sees it);
* ``frame.truncated``  - the stream ended inside a frame (:meth:`FrameDecoder.eof`).

Nothing else leaves the decoder: any other exception raised while decoding is a
``frame.malformed`` refusal.

The nesting bound costs nothing on the hot path: a body can nest no deeper than it is long,
nor deeper than the container headers (0x80-0x9f, 0xdc-0xdf) it holds. Frames up to the
bound's size are not looked at; for a longer one the decoder flags those bytes over the whole
read in one C pass, counts the frame's, and walks the MessagePack structure (iteratively, with
:func:`trustfabric.nesting.msgpack_nesting_exceeds`) only when they exceed the bound.

The encoder and decoder are built once per codec; the hot path encodes straight
into a caller's ``bytearray`` (``encode_into``) and decodes from memoryviews.
"""

from __future__ import annotations

import struct
from typing import Iterable, Union

import msgspec

from trustfabric.nesting import CONTAINER_FLAGS, msgpack_nesting_exceeds
from trustfabric.transport import errors as E
from trustfabric.transport.errors import FrameError

HEADER = struct.Struct(">I")
HEADER_SIZE = 4
DEFAULT_MAX_FRAME = 64 * 1024
NIL = msgspec.Raw(b"\xc0")  # MessagePack nil: the empty body
# Arrays/maps within each other in one frame body. Far above any frame schema (under 10) and far
# below Python's recursion limit (msgspec's decoder recursion counts against it), so a frame
# within it always decodes and one beyond it is refused the same way whatever the caller's stack.
# A body can nest no deeper than it is long: frames of up to this many bytes - nearly every
# frame on the hot path - need no check at all.
MAX_FRAME_NESTING = 256


class Frame(msgspec.Struct, frozen=True, array_like=True, tag_field="t", forbid_unknown_fields=True):
    """Base of every frame type; subclasses set ``tag=...``. Extra fields are refused (strict schemas)."""


class Hello(Frame, frozen=True, tag="hello"):
    """Server -> client once the client's identity is accepted: the server's SPIFFE ID."""

    spiffe_id: str


class ErrorFrame(Frame, frozen=True, tag="err"):
    """A refusal with a reason code; after a transport-level error the connection closes."""

    reason: str
    detail: str = ""
    rid: int = 0


class Request(Frame, frozen=True, tag="req"):
    """One request. ``action``/``resource`` and the obligation attributes (``symbol``,
    ``notional``) ride in the envelope so the enforcement point never decodes ``body``
    (MessagePack bytes of the service's own message schema)."""

    rid: int
    action: str
    resource: str
    body: msgspec.Raw = NIL
    symbol: str = ""
    notional: float = 0.0
    trace_id: str = ""


class Response(Frame, frozen=True, tag="resp"):
    rid: int
    ok: bool
    reason: str = ""
    body: msgspec.Raw = NIL


class OpenSession(Frame, frozen=True, tag="open"):
    """Session open: an access token bound to the certificate of this connection."""

    token: str


class RenewSession(Frame, frozen=True, tag="renew"):
    token: str


class SessionReady(Frame, frozen=True, tag="ready"):
    session_id: str
    expires_at: float
    epoch: int = 0


class Ping(Frame, frozen=True, tag="ping"):
    n: int = 0


class Pong(Frame, frozen=True, tag="pong"):
    n: int = 0


class Goodbye(Frame, frozen=True, tag="bye"):
    reason: str = ""


CORE_TYPES: tuple[type[Frame], ...] = (
    Hello, ErrorFrame, Request, Response, OpenSession, RenewSession, SessionReady, Ping, Pong, Goodbye,
)


class FrameCodec:
    """Encoder and decoder for one set of frame types (built once, reused)."""

    __slots__ = ("types", "tags", "max_frame", "_encoder", "_decoder", "_encode_into")

    def __init__(self, extra_types: Iterable[type[Frame]] = (), *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        types = tuple(CORE_TYPES) + tuple(extra_types)
        tags: dict[str, type[Frame]] = {}
        for cls in types:
            if not (isinstance(cls, type) and issubclass(cls, Frame)):
                raise TypeError(f"{cls!r} is not a Frame type")
            tag = cls.__struct_config__.tag
            if not isinstance(tag, str) or tag in tags:
                raise ValueError(f"frame type {cls.__name__} needs a unique string tag (got {tag!r})")
            tags[tag] = cls
        self.types = types
        self.tags = frozenset(tags)
        self.max_frame = int(max_frame)
        self._encoder = msgspec.msgpack.Encoder()
        self._encode_into = self._encoder.encode_into
        self._decoder = msgspec.msgpack.Decoder(Union[types])  # type: ignore[valid-type]

    # -- encoding ------------------------------------------------------------------
    def encode_into(self, frame: Frame, buf: bytearray) -> None:
        """Append one length-prefixed frame to ``buf`` (the batch buffer)."""
        start = len(buf)
        buf += b"\0\0\0\0"
        self._encode_into(frame, buf, -1)
        size = len(buf) - start - HEADER_SIZE
        if size > self.max_frame:
            del buf[start:]
            raise FrameError(f"{type(frame).__name__} encodes to {size} bytes > {self.max_frame}",
                             reason=E.FRAME_OVERSIZED)
        HEADER.pack_into(buf, start, size)

    def encode(self, frame: Frame) -> bytes:
        buf = bytearray()
        self.encode_into(frame, buf)
        return bytes(buf)

    # -- decoding ------------------------------------------------------------------
    def decode_body(self, body) -> Frame:
        """Decode one frame body (without its length prefix); FrameError on any defect."""
        if msgpack_nesting_exceeds(body, MAX_FRAME_NESTING):
            raise FrameError(f"body nested deeper than {MAX_FRAME_NESTING}", reason=E.FRAME_TOO_DEEP)
        return self._decode_bounded(body)

    def _decode_bounded(self, body) -> Frame:
        """Decode a body whose nesting is known to be within :data:`MAX_FRAME_NESTING`."""
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise self._classify(body, exc) from None
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything else: a refusal, never an escape
            raise FrameError(f"{type(exc).__name__}: {str(exc)[:200]}", reason=E.FRAME_MALFORMED) from None

    def _classify(self, body, exc: Exception) -> FrameError:
        """Error path only: a valid MessagePack array with an unknown tag is unknown_type."""
        try:
            value = msgspec.msgpack.decode(body)
        except Exception:  # noqa: BLE001 - undecodable in any way: malformed
            return FrameError(str(exc)[:200], reason=E.FRAME_MALFORMED)
        if isinstance(value, list) and value and isinstance(value[0], str) and value[0] not in self.tags:
            return FrameError(f"unknown frame type {value[0][:64]!r}", reason=E.FRAME_UNKNOWN_TYPE)
        return FrameError(str(exc)[:200], reason=E.FRAME_MALFORMED)

    def decode(self, data: bytes) -> Frame:
        """Decode exactly one length-prefixed frame (tests and tools)."""
        decoder = FrameDecoder(self)
        frames = decoder.feed(data)
        decoder.eof()
        if len(frames) != 1:
            raise FrameError(f"expected one frame, got {len(frames)}", reason=E.FRAME_MALFORMED)
        return frames[0]


DEFAULT_CODEC = FrameCodec()


class FrameDecoder:
    """Streaming decoder: ``feed(bytes) -> [Frame, ...]``; keeps partial frames between feeds.

    Partial input is kept as a list of chunks and joined only once the frame it
    belongs to is complete, so a peer dribbling one byte at a time costs linear,
    not quadratic, work (and the connection's frame timeout cuts it off). Decoded
    ``Raw`` bodies reference the immutable input bytes, never a reused buffer.
    After a FrameError the decoder is poisoned (every later feed raises the same
    error): a stream that went wrong is not resynchronised, it is closed.
    """

    __slots__ = ("codec", "max_frame", "_chunks", "_have", "_need", "_decode_bounded", "_error")

    def __init__(self, codec: FrameCodec = DEFAULT_CODEC, *, max_frame: int | None = None) -> None:
        self.codec = codec
        self.max_frame = codec.max_frame if max_frame is None else int(max_frame)
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = HEADER_SIZE
        self._decode_bounded = codec._decode_bounded  # feed bounds the nesting itself
        self._error: FrameError | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return self._have

    def feed(self, data) -> list[Frame]:
        if self._error is not None:
            raise self._error
        if self._chunks:
            self._chunks.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:  # header, or the body it announced, still incomplete
                return []
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._have = 0
            self._need = HEADER_SIZE
        view = memoryview(data)
        frames: list[Frame] = []
        pos = 0
        end = len(view)
        max_frame = self.max_frame
        unpack = HEADER.unpack_from
        decode = self._decode_bounded
        bound = MAX_FRAME_NESTING
        flags = None  # container headers of this read (one C pass), once a frame is long enough to need them
        need = HEADER_SIZE
        try:
            while end - pos >= HEADER_SIZE:
                size = unpack(view, pos)[0]
                if size > max_frame:
                    raise FrameError(f"frame of {size} bytes > maximum {max_frame}", reason=E.FRAME_OVERSIZED)
                if size == 0:
                    raise FrameError("empty frame", reason=E.FRAME_MALFORMED)
                stop = pos + HEADER_SIZE + size
                if stop > end:
                    need = HEADER_SIZE + size
                    break
                if size > bound:  # only a body longer than the bound can nest beyond it
                    if flags is None:
                        flags = (data if type(data) is bytes else bytes(view)).translate(CONTAINER_FLAGS)
                    if (flags.count(1, pos + HEADER_SIZE, stop) > bound
                            and msgpack_nesting_exceeds(view[pos + HEADER_SIZE:stop], bound)):
                        raise FrameError(f"body nested deeper than {bound}", reason=E.FRAME_TOO_DEEP)
                frames.append(decode(view[pos + HEADER_SIZE:stop]))
                pos = stop
        except FrameError as exc:
            exc.decoded = frames
            self._error = exc
            raise
        if pos < end:
            rest = bytes(view[pos:end])
            self._chunks.append(rest)
            self._have = len(rest)
            self._need = need
        return frames

    def eof(self) -> None:
        """The stream ended: an incomplete frame left over is ``frame.truncated``."""
        if self._error is None and self._have:
            self._error = FrameError(f"stream ended {self._have} bytes into a frame", reason=E.FRAME_TRUNCATED)
            self._chunks.clear()
            self._have = 0
            raise self._error
