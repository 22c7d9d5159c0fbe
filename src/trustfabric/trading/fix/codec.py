"""FIX 4.4 framing, validation and message builders (simplefix underneath).

:class:`FixFramer` cuts a byte stream into messages and checks what simplefix
does not: the BeginString is ``FIX.4.4``, BodyLength (9) is exactly the number of
bytes up to the CheckSum (10) field, and the checksum matches. Each cut yields a
:class:`Framed`: either a parsed ``simplefix.FixMessage`` with its raw bytes, or a
problem with its reason code (``fix.garbled``, ``fix.bad_body_length``,
``fix.bad_checksum``) and the bytes skipped. The framer always makes progress:
after a problem it resynchronises at the next ``8=FIX`` and never waits for more
than ``max_message`` bytes.

The builders make the application messages the gateway sends (ExecutionReport
8, OrderCancelReject 9, BusinessMessageReject j) as ``simplefix.FixMessage``
bodies; the session stamps their headers.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import simplefix

from trustfabric.trading.messages import PRICE_SCALE, ExecutionReport

BEGIN_STRING = b"FIX.4.4"
SOH = b"\x01"
GARBLED = "fix.garbled"
BAD_BODY_LENGTH = "fix.bad_body_length"
BAD_CHECKSUM = "fix.bad_checksum"

# Message types.
HEARTBEAT = b"0"
TEST_REQUEST = b"1"
RESEND_REQUEST = b"2"
REJECT = b"3"
SEQUENCE_RESET = b"4"
LOGOUT = b"5"
LOGON = b"A"
NEW_ORDER_SINGLE = b"D"
ORDER_CANCEL_REQUEST = b"F"
ORDER_CANCEL_REPLACE = b"G"
ORDER_STATUS_REQUEST = b"H"
ORDER_MASS_CANCEL = b"q"
EXECUTION_REPORT = b"8"
ORDER_CANCEL_REJECT = b"9"
BUSINESS_MESSAGE_REJECT = b"j"
ADMIN_TYPES = frozenset({HEARTBEAT, TEST_REQUEST, RESEND_REQUEST, REJECT, SEQUENCE_RESET, LOGOUT, LOGON})

_HEAD = b"8=FIX"
_TRAILER_LEN = 7  # b"10=NNN\x01"


@dataclass(frozen=True, slots=True)
class Framed:
    """One cut of the stream: a message (``message`` + ``raw``) or a problem (``problem``)."""

    raw: bytes
    message: simplefix.FixMessage | None = None
    problem: str = ""
    detail: str = ""


def checksum(data: bytes) -> int:
    return sum(data) % 256


class FixFramer:
    """Stream -> validated messages; never raises on bad input."""

    def __init__(self, max_message: int = 16_384) -> None:
        self.buf = bytearray()
        self.max_message = max_message

    def feed(self, data: bytes) -> list[Framed]:
        self.buf += data
        out: list[Framed] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _skip_to_next_head(self, start: int, reason: str, detail: str) -> Framed:
        nxt = self.buf.find(_HEAD, start)
        cut = len(self.buf) if nxt < 0 else nxt
        raw = bytes(self.buf[:cut])
        del self.buf[:cut]
        return Framed(raw, problem=reason, detail=detail)

    def _next(self) -> Framed | None:
        buf = self.buf
        if not buf:
            return None
        if not buf.startswith(_HEAD):
            if len(buf) < len(_HEAD) and _HEAD.startswith(bytes(buf)):
                return None  # a head may still be arriving
            return self._skip_to_next_head(1, GARBLED, "stream does not start with 8=FIX")
        first = buf.find(SOH)
        if first < 0:
            return None if len(buf) < 32 else self._skip_to_next_head(1, GARBLED, "no BeginString terminator")
        if bytes(buf[2:first]) != BEGIN_STRING:
            return self._skip_to_next_head(1, GARBLED, f"BeginString {bytes(buf[2:first])!r}")
        second = buf.find(SOH, first + 1)
        if second < 0:
            return None if len(buf) - first < 16 else self._skip_to_next_head(1, GARBLED, "no BodyLength")
        length_field = bytes(buf[first + 1:second])
        if not length_field.startswith(b"9=") or not length_field[2:].isdigit():
            return self._skip_to_next_head(1, GARBLED, "second field is not BodyLength")
        body_len = int(length_field[2:])
        end = second + 1 + body_len  # index of "10="
        if body_len > self.max_message:
            return self._skip_to_next_head(1, BAD_BODY_LENGTH, f"BodyLength {body_len} too large")
        if len(buf) < end + _TRAILER_LEN:
            # Not all here yet; but if a complete trailer already appears earlier, the length lies.
            early = buf.find(b"\x0110=", second)
            if 0 <= early and early + 1 + _TRAILER_LEN <= len(buf) and early + 1 < end:
                nxt = buf.find(_HEAD, early)
                if nxt >= 0:
                    return self._skip_to_next_head(1, BAD_BODY_LENGTH, f"BodyLength {body_len} too long")
            return None
        trailer = bytes(buf[end:end + _TRAILER_LEN])
        if not (trailer.startswith(b"10=") and trailer[3:6].isdigit() and trailer[6:] == SOH
                and buf[end - 1:end] == SOH):
            return self._skip_to_next_head(1, BAD_BODY_LENGTH, f"BodyLength {body_len} does not end at CheckSum")
        raw = bytes(buf[:end + _TRAILER_LEN])
        del buf[:end + _TRAILER_LEN]
        expected = checksum(raw[:end])
        if int(trailer[3:6]) != expected:
            return Framed(raw, problem=BAD_CHECKSUM, detail=f"CheckSum {trailer[3:6].decode()} != {expected:03d}")
        parser = simplefix.FixParser()
        try:
            parser.append_buffer(raw)
            message = parser.get_message()
        except Exception as exc:  # noqa: BLE001 - simplefix's ParsingError family, or anything else: garbled
            return Framed(raw, problem=GARBLED, detail=f"unparseable: {type(exc).__name__}")
        if message is None or message.message_type is None:
            return Framed(raw, problem=GARBLED, detail="no MsgType")
        return Framed(raw, message=message)


# --- value helpers -------------------------------------------------------------------------------------


def fix_time(now: float) -> str:
    t = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    return f"{t:%Y%m%d-%H:%M:%S}.{t.microsecond // 1000:03d}"


def parse_fix_time(value: bytes) -> float | None:
    """UTCTimestamp (``YYYYMMDD-HH:MM:SS[.sss[sss]]``) -> Unix seconds, or None if malformed."""
    try:
        text = value.decode("ascii")
        fmt = "%Y%m%d-%H:%M:%S.%f" if "." in text else "%Y%m%d-%H:%M:%S"
        t = _dt.datetime.strptime(text, fmt).replace(tzinfo=_dt.timezone.utc)
    except (UnicodeDecodeError, ValueError):
        return None
    return t.timestamp()


def price_to_fix(units: int) -> str:
    return format(Decimal(units) / PRICE_SCALE, "f")


_PRICE_RE = re.compile(rb"-?[0-9]{1,12}(\.[0-9]{0,10})?")
_QTY_RE = re.compile(rb"[0-9]{1,12}(\.0{0,10})?")


def _fix_decimal(value: bytes, pattern: re.Pattern[bytes], what: str) -> Decimal:
    """A FIX decimal field screened by ``pattern`` then parsed exactly; ValueError naming ``what`` otherwise."""
    if not pattern.fullmatch(value):
        raise ValueError(f"not a FIX {what}: {value!r}")
    try:
        return Decimal(value.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        raise ValueError(f"not a {what}: {value!r}") from None


def price_from_fix(value: bytes) -> int:
    """Exact decimal FIX price -> integer price units; ValueError if not exact or not a number."""
    d = _fix_decimal(value, _PRICE_RE, "price")
    if not d.is_finite():
        raise ValueError(f"not a price: {value!r}")
    units = d * PRICE_SCALE
    if units != units.to_integral_value():
        raise ValueError(f"price {value!r} finer than 1/{PRICE_SCALE}")
    return int(units)


def qty_from_fix(value: bytes) -> int:
    d = _fix_decimal(value, _QTY_RE, "quantity")
    if not d.is_finite() or d != d.to_integral_value():
        raise ValueError(f"not a whole quantity: {value!r}")
    return int(d)


SIDE_TO_FIX = {"buy": "1", "sell": "2"}
SIDE_FROM_FIX = {b"1": "buy", b"2": "sell"}
TIF_TO_FIX = {"day": "0", "gtc": "1", "ioc": "3"}
TIF_FROM_FIX = {b"0": "day", b"1": "gtc", b"3": "ioc"}
EXEC_TYPE_TO_FIX = {"new": "0", "partial_fill": "F", "fill": "F", "canceled": "4", "replaced": "5",
                    "rejected": "8", "status": "I"}
ORD_STATUS_TO_FIX = {"new": "0", "partially_filled": "1", "filled": "2", "canceled": "4", "replaced": "5",
                     "rejected": "8"}


def _body(msg_type: bytes) -> simplefix.FixMessage:
    msg = simplefix.FixMessage()
    msg.append_pair(8, BEGIN_STRING, header=True)
    msg.append_pair(35, msg_type, header=True)
    return msg


# --- application builders -------------------------------------------------------------------------


def avg_px_to_fix(notional_units: int, qty: int) -> str:
    """AvgPx (6): the volume-weighted average of the fills (sum of qty x price units over the filled qty)."""
    if qty <= 0:
        return "0"
    avg = (Decimal(notional_units) / (Decimal(qty) * PRICE_SCALE)).quantize(Decimal("1e-8")).normalize()
    return format(avg, "f")


def execution_report(report: ExecutionReport, *, orig_cl_ord_id: str = "", text: str = "",
                     avg_px: str = "0") -> simplefix.FixMessage:
    """ExecutionReport (35=8) from a floor ExecutionReport; ``avg_px`` from :func:`avg_px_to_fix`."""
    msg = _body(EXECUTION_REPORT)
    msg.append_pair(37, report.order_id or "NONE")
    msg.append_pair(11, report.cl_ord_id)
    if orig_cl_ord_id:
        msg.append_pair(41, orig_cl_ord_id)
    msg.append_pair(17, report.exec_id)
    msg.append_pair(150, EXEC_TYPE_TO_FIX[report.exec_type])
    msg.append_pair(39, ORD_STATUS_TO_FIX[report.ord_status])
    if report.account:
        msg.append_pair(1, report.account)
    msg.append_pair(55, report.symbol)
    msg.append_pair(54, SIDE_TO_FIX[report.side])
    msg.append_pair(38, report.order_qty)
    msg.append_pair(44, price_to_fix(report.price))
    msg.append_pair(32, report.last_qty)
    msg.append_pair(31, price_to_fix(report.last_px))
    msg.append_pair(151, report.leaves_qty)
    msg.append_pair(14, report.cum_qty)
    msg.append_pair(6, avg_px)
    if report.reason or text:
        msg.append_pair(58, text or report.reason)
    return msg


def order_cancel_reject(cl_ord_id: str, orig_cl_ord_id: str, *, order_id: str = "NONE", ord_status: str = "8",
                        response_to: str = "1", reason_code: int = 99, text: str = "") -> simplefix.FixMessage:
    """OrderCancelReject (35=9); ``response_to`` 434: 1 cancel, 2 cancel/replace."""
    msg = _body(ORDER_CANCEL_REJECT)
    msg.append_pair(37, order_id)
    msg.append_pair(11, cl_ord_id)
    msg.append_pair(41, orig_cl_ord_id)
    msg.append_pair(39, ord_status)
    msg.append_pair(434, response_to)
    msg.append_pair(102, reason_code)
    if text:
        msg.append_pair(58, text)
    return msg


def business_message_reject(ref_seq: int, ref_msg_type: bytes | str, reason_code: int, text: str = "",
                            business_ref_id: str = "") -> simplefix.FixMessage:
    """BusinessMessageReject (35=j); 380: 0 other, 3 unsupported type, 5 required field missing."""
    msg = _body(BUSINESS_MESSAGE_REJECT)
    msg.append_pair(45, ref_seq)
    msg.append_pair(372, ref_msg_type)
    if business_ref_id:
        msg.append_pair(379, business_ref_id)
    msg.append_pair(380, reason_code)
    if text:
        msg.append_pair(58, text)
    return msg


ORDER_MASS_CANCEL_REPORT = b"r"


def order_mass_cancel_report(cl_ord_id: str, request_type: str, affected: int, *, accepted: bool = True,
                             text: str = "") -> simplefix.FixMessage:
    """OrderMassCancelReport (35=r); 531 echoes the request type when accepted, 0 when rejected."""
    msg = _body(ORDER_MASS_CANCEL_REPORT)
    msg.append_pair(11, cl_ord_id)
    msg.append_pair(37, f"MC-{cl_ord_id}")
    msg.append_pair(530, request_type)
    msg.append_pair(531, request_type if accepted else "0")
    msg.append_pair(533, affected)
    if text:
        msg.append_pair(58, text)
    return msg
