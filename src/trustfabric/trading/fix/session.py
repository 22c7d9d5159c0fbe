"""The FIX 4.4 acceptor session: a pure state machine, bytes in -> messages and events out.

:class:`FixSession` owns no socket and reads no clock: the gateway hands it the
bytes it received (:meth:`FixSession.on_bytes`) and the time (:meth:`on_timer`),
and writes out the :class:`SessionOutput` it returns (``outgoing`` raw messages,
``events`` for the application, ``disconnect`` when the connection must close).

Theory of operation:

* **Logon binds identity.** The transport authenticates the peer's certificate and
  passes its identity string in; ``bindings`` maps each SenderCompID to the one
  identity allowed to use it. A Logon whose SenderCompID is not bound to the
  authenticated identity is refused (Logout, disconnect): a stolen CompID is
  useless without the matching certificate. Anything but a Logon first is
  refused without an answer (``fix.not_logged_on``).
* **Framing problems are ignored, not answered** (FIX: a garbled message is
  dropped without consuming a sequence number): bad CheckSum, bad BodyLength,
  garbled bytes each yield a ``SessionProblem`` event; too many in a row log out.
* **Sequence numbers** come from a :class:`~.store.SeqStore` keyed by the CompID
  pair, so they survive reconnects. Too high: ResendRequest for the gap (the
  message is dropped; the peer resends it). Too low without PossDupFlag: Logout
  and disconnect (``fix.seq_too_low``). Too low with PossDupFlag: ignored.
* **Validation**: a missing required tag or a bad value gets a session Reject (3)
  with the tag and reason; wrong CompIDs, or a SendingTime more than
  ``max_skew_s`` away from now (a replayed capture), get a Reject and a Logout.
* **ResendRequest** from the peer is answered by resending stored application
  messages (PossDupFlag=Y, OrigSendingTime) and SequenceReset-GapFill over admin
  messages and anything not stored.
* **Two clocks.** ``now`` is wall time: it stamps SendingTime and is compared with
  the peer's SendingTime (another host's clock). ``mono`` (a monotonic reading,
  passed with ``now`` to every entry point) runs the logon timeout and the
  heartbeat / TestRequest timers, so a wall-clock step neither fires nor
  silences them. Without ``mono`` the timers run on ``now``.
* **Liveness** (:class:`~.heartbeat.HeartbeatTimer`, FIX 4.4): a Heartbeat when we
  have sent nothing for HeartBtInt, however much the client sends; a TestRequest
  when nothing arrived for HeartBtInt plus 20%; Logout and disconnect when that
  TestRequest goes unanswered for as long again. The client's Logout is a message
  of its sequence (consumed), so a re-logon at the next number needs no resend.
* **Possible duplicates**: a PossDupFlag (43=Y) message below the expected sequence
  was already processed and is ignored; an order with PossResend (97=Y) or PossDupFlag
  at the expected sequence is flagged (``poss_resend``) so the gateway core never
  executes a ClOrdID twice. A FIX 4.4 application type we do not take gets a
  BusinessMessageReject (380=3); a MsgType that is not FIX gets a session Reject (373=11).
* **Application messages** D, F, G, H, q become typed events
  (:class:`FixNewOrderSingle`...). Replies are built with :mod:`.codec` builders and
  sent with :meth:`FixSession.send_app`, which stamps and stores them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec
import simplefix

from trustfabric.trading.fix import codec
from trustfabric.trading.fix.codec import (
    BEGIN_STRING,
    HEARTBEAT,
    LOGON,
    LOGOUT,
    ORDER_CANCEL_REPLACE,
    ORDER_CANCEL_REQUEST,
    ORDER_MASS_CANCEL,
    ORDER_STATUS_REQUEST,
    NEW_ORDER_SINGLE,
    REJECT,
    RESEND_REQUEST,
    SEQUENCE_RESET,
    TEST_REQUEST,
    FixFramer,
)
from trustfabric.trading.errors import FixError
from trustfabric.trading.fix.heartbeat import (
    DEFAULT_TRANSMISSION_RATIO,
    PEER_GONE,
    SEND_HEARTBEAT,
    SEND_TEST_REQUEST,
    HeartbeatTimer,
)
from trustfabric.trading.fix.store import SeqStore
from trustfabric.trading.messages import NewOrder

# Reason codes.
NOT_LOGGED_ON = "fix.not_logged_on"
IDENTITY_MISMATCH = "fix.identity_mismatch"
BAD_COMP_ID = "fix.bad_comp_id"
MISSING_TAG = "fix.missing_tag"
BAD_VALUE = "fix.bad_value"
SEQ_GAP = "fix.seq_gap"
SEQ_TOO_LOW = "fix.seq_too_low"
UNSUPPORTED = "fix.unsupported_msg_type"
INVALID_MSG_TYPE = "fix.invalid_msg_type"
HEARTBEAT_TIMEOUT = "fix.heartbeat_timeout"
LOGON_TIMEOUT = "fix.logon_timeout"
TOO_MANY_GARBLED = "fix.too_many_garbled"
PEER_REJECT = "fix.peer_reject"
SENDING_TIME = "fix.sending_time"

# SessionRejectReason (373).
SRR_REQUIRED_TAG_MISSING = 1
SRR_VALUE_INCORRECT = 5
SRR_INCORRECT_FORMAT = 6
SRR_COMP_ID_PROBLEM = 9
SRR_SENDING_TIME = 10
SRR_INVALID_MSG_TYPE = 11

# BusinessRejectReason (380).
BMR_UNSUPPORTED_MSG_TYPE = 3

# The shape of a FIX 4.4 MsgType: one character, the two-character A* and B* ranges, or a
# user-defined U*. Anything else is not a FIX message type (session Reject, 373=11); a FIX type
# that the gateway does not handle gets BusinessMessageReject (380=3).
_FIX44_MSG_TYPE = re.compile(rb"[0-9A-Za-z]|[AB][A-Z]|U[0-9A-Za-z]{1,3}")

AWAITING_LOGON = "awaiting_logon"
ACTIVE = "active"
CLOSED = "closed"

_HEADER_REQUIRED = (49, 56, 34, 52)
_STAMPED = frozenset({8, 9, 10, 35, 49, 56, 34, 52, 43, 122})


# --- events --------------------------------------------------------------------------------------------


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    sender: str
    seq: int = 0


class LoggedOn(_Event, frozen=True):
    heartbeat_s: int
    reset: bool = False


class LoggedOut(_Event, frozen=True):
    reason: str = ""


class SessionProblem(_Event, frozen=True):
    """A refused or ignored input, with its reason code (for audit and counters)."""

    reason: str
    detail: str = ""


class FixNewOrderSingle(_Event, frozen=True):
    cl_ord_id: str
    account: str
    symbol: str
    side: str
    qty: int
    price: int
    tif: str
    poss_resend: bool = False  # 97=Y: the client may have sent it before; never executed twice

    def to_new_order(self, agent: str, time_ns: int) -> NewOrder:
        return NewOrder(cl_ord_id=self.cl_ord_id, account=self.account, agent=agent, symbol=self.symbol,
                        side=self.side, qty=self.qty, price=self.price, tif=self.tif, time_ns=time_ns)


class FixCancelRequest(_Event, frozen=True):
    cl_ord_id: str
    orig_cl_ord_id: str
    symbol: str
    side: str


class FixReplaceRequest(_Event, frozen=True):
    cl_ord_id: str
    orig_cl_ord_id: str
    account: str
    symbol: str
    side: str
    qty: int
    price: int


class FixStatusRequest(_Event, frozen=True):
    cl_ord_id: str
    symbol: str
    side: str


class FixMassCancelRequest(_Event, frozen=True):
    cl_ord_id: str
    request_type: str  # 530: "1" by symbol, "7" all orders
    symbol: str = ""


class PeerReject(_Event, frozen=True):
    ref_seq: int
    text: str = ""


SessionEvent = (LoggedOn | LoggedOut | SessionProblem | FixNewOrderSingle | FixCancelRequest
                | FixReplaceRequest | FixStatusRequest | FixMassCancelRequest | PeerReject)


@dataclass(frozen=True, slots=True)
class SessionOutput:
    outgoing: tuple[bytes, ...] = ()
    events: tuple = ()
    disconnect: bool = False


@dataclass(slots=True)
class _Out:
    outgoing: list[bytes] = field(default_factory=list)
    events: list = field(default_factory=list)
    disconnect: bool = False

    def freeze(self) -> SessionOutput:
        return SessionOutput(tuple(self.outgoing), tuple(self.events), self.disconnect)


class _Invalid(Exception):
    """Internal: a field failed validation (tag, SessionRejectReason, text)."""

    def __init__(self, tag: int, srr: int, text: str) -> None:
        super().__init__(text)
        self.tag, self.srr, self.text = tag, srr, text


def _get(msg: simplefix.FixMessage, tag: int) -> bytes | None:
    return msg.get(tag)


def _req(msg: simplefix.FixMessage, tag: int) -> bytes:
    value = msg.get(tag)
    if value is None or value == b"":
        raise _Invalid(tag, SRR_REQUIRED_TAG_MISSING, f"required tag {tag} missing")
    return value


def _int(msg: simplefix.FixMessage, tag: int) -> int:
    value = _req(msg, tag)
    if not value.isdigit():
        raise _Invalid(tag, SRR_INCORRECT_FORMAT, f"tag {tag} is not an integer")
    return int(value)


def _text(msg: simplefix.FixMessage, tag: int) -> str:
    try:
        return _req(msg, tag).decode("ascii")
    except UnicodeDecodeError:
        raise _Invalid(tag, SRR_INCORRECT_FORMAT, f"tag {tag} is not ASCII") from None


def _side(msg: simplefix.FixMessage) -> str:
    side = codec.SIDE_FROM_FIX.get(_req(msg, 54))
    if side is None:
        raise _Invalid(54, SRR_VALUE_INCORRECT, "side must be 1 (buy) or 2 (sell)")
    return side


def _positive(msg: simplefix.FixMessage, tag: int, name: str, parse: Callable[[bytes], int],
              form: str) -> int:
    """Required field ``tag`` parsed by ``parse``: a reject when it is not ``form`` or not above zero."""
    try:
        value = parse(_req(msg, tag))
    except ValueError:
        raise _Invalid(tag, SRR_INCORRECT_FORMAT, f"{name} is not {form}") from None
    if value <= 0:
        raise _Invalid(tag, SRR_VALUE_INCORRECT, f"{name} must be positive")
    return value


def _qty(msg: simplefix.FixMessage) -> int:
    return _positive(msg, 38, "OrderQty", codec.qty_from_fix, "a whole number")


def _limit_price(msg: simplefix.FixMessage) -> int:
    if _req(msg, 40) != b"2":
        raise _Invalid(40, SRR_VALUE_INCORRECT, "only limit orders (40=2) are accepted")
    return _positive(msg, 44, "Price", codec.price_from_fix, "an exact decimal")


class FixSession:
    """One acceptor-side FIX 4.4 session over one authenticated connection."""

    def __init__(
        self,
        our_comp_id: str,
        peer_identity: str,
        bindings: Mapping[str, str],
        store: SeqStore,
        *,
        now: float,
        mono: float | None = None,
        logon_timeout_s: float = 10.0,
        max_heartbeat_s: int = 300,
        max_garbled: int = 10,
        max_skew_s: float = 120.0,
        transmission_ratio: float = DEFAULT_TRANSMISSION_RATIO,
    ) -> None:
        self.our_comp_id = our_comp_id
        self.peer_identity = peer_identity
        self.bindings = bindings
        self.store = store
        self.state = AWAITING_LOGON
        self.their_comp_id = ""
        self.heartbeat_s = 30
        self.logon_timeout_s = logon_timeout_s
        self.max_heartbeat_s = max_heartbeat_s
        self.max_garbled = max_garbled
        self.max_skew_s = max_skew_s
        self._framer = FixFramer()
        self._mono = now if mono is None else mono  # the monotonic reading of the current entry point
        self._created = self._mono
        self.timer = HeartbeatTimer.start(self.heartbeat_s, self._mono, transmission_ratio)
        self._resend_requested_from = 0
        self._garbled_in_row = 0

    # --- keys and stamping ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.our_comp_id}->{self.their_comp_id}"

    def _stamp(self, body: simplefix.FixMessage, seq: int, now: float, *, poss_dup: bool = False,
               orig_time: bytes | None = None) -> bytes:
        msg = simplefix.FixMessage()
        msg.append_pair(8, BEGIN_STRING, header=True)
        msg.append_pair(35, body.message_type, header=True)
        msg.append_pair(49, self.our_comp_id, header=True)
        msg.append_pair(56, self.their_comp_id or "UNKNOWN", header=True)
        msg.append_pair(34, seq, header=True)
        if poss_dup:
            msg.append_pair(43, "Y", header=True)
        msg.append_pair(52, codec.fix_time(now), header=True)
        if orig_time is not None:
            msg.append_pair(122, orig_time, header=True)
        for tag, value in body.pairs:
            if int(tag) not in _STAMPED:
                msg.append_pair(tag, value)
        return msg.encode()

    def _send(self, out: _Out, body: simplefix.FixMessage, now: float, *, store_app: bool = False) -> bytes:
        _, next_out = self.store.load(self.key)
        raw = self._stamp(body, next_out, now)
        if store_app:
            self.store.save_sent(self.key, next_out, raw)
        self.store.set_next_out(self.key, next_out + 1)
        out.outgoing.append(raw)
        self.timer.sent(self._mono)
        return raw

    def _tick(self, now: float, mono: float | None) -> None:
        self._mono = now if mono is None else mono

    def send_app(self, body: simplefix.FixMessage, now: float, mono: float | None = None) -> bytes:
        """Stamp, store (for resends) and return one application message (8, 9, j...)."""
        self._tick(now, mono)
        if self.state != ACTIVE:
            raise FixError("session is not logged on", reason=NOT_LOGGED_ON)
        out = _Out()
        return self._send(out, body, now, store_app=True)

    @staticmethod
    def _admin(msg_type: bytes, *pairs: tuple[int, object]) -> simplefix.FixMessage:
        msg = simplefix.FixMessage()
        msg.append_pair(8, BEGIN_STRING, header=True)
        msg.append_pair(35, msg_type, header=True)
        for tag, value in pairs:
            msg.append_pair(tag, value)
        return msg

    def _session_reject(self, out: _Out, ref_seq: int, ref_type: bytes | None, tag: int, srr: int, text: str,
                        now: float) -> None:
        pairs: list[tuple[int, object]] = [(45, ref_seq)]
        if tag:
            pairs.append((371, tag))
        if ref_type:
            pairs.append((372, ref_type))
        pairs += [(373, srr), (58, text)]
        self._send(out, self._admin(REJECT, *pairs), now)

    def _logout(self, out: _Out, text: str, now: float, reason: str) -> None:
        self._send(out, self._admin(LOGOUT, (58, text)), now)
        out.disconnect = True
        out.events.append(LoggedOut(sender=self.their_comp_id, reason=reason))
        self.state = CLOSED

    def _refuse_logon(self, out: _Out, sender: str, text: str, reason: str, now: float) -> None:
        """Logout for a Logon we do not accept; touches no stored sequence numbers."""
        saved = self.their_comp_id
        self.their_comp_id = sender or "UNKNOWN"
        out.outgoing.append(self._stamp(self._admin(LOGOUT, (58, text)), 1, now))
        self.their_comp_id = saved
        out.events.append(SessionProblem(sender=sender, reason=reason, detail=text))
        out.disconnect = True
        self.state = CLOSED

    # --- input -------------------------------------------------------------------------------------------
    def on_bytes(self, data: bytes, now: float, mono: float | None = None) -> SessionOutput:
        self._tick(now, mono)
        out = _Out()
        if self.state == CLOSED:
            out.disconnect = True
            return out.freeze()
        for framed in self._framer.feed(data):
            if self.state == CLOSED:
                break
            if framed.problem:
                self._garbled_in_row += 1
                out.events.append(SessionProblem(sender=self.their_comp_id, reason=framed.problem,
                                                 detail=framed.detail))
                if self._garbled_in_row >= self.max_garbled:
                    if self.state == ACTIVE:
                        self._logout(out, "too many garbled messages", now, TOO_MANY_GARBLED)
                    else:
                        out.disconnect = True
                        self.state = CLOSED
                continue
            self._garbled_in_row = 0
            self.timer.received(self._mono)
            try:
                if self.state == AWAITING_LOGON:
                    self._on_logon(framed.message, out, now)
                else:
                    self._on_message(framed.message, out, now)
            except Exception as exc:  # fail closed: an unexpected error ends the session
                out.events.append(SessionProblem(sender=self.their_comp_id, reason="fix.internal",
                                                 detail=type(exc).__name__))
                out.disconnect = True
                self.state = CLOSED
        return out.freeze()

    def on_disconnect(self) -> None:
        """The transport closed; sequence numbers stay in the store for the next Logon."""
        self.state = CLOSED

    def logout(self, text: str, now: float, mono: float | None = None) -> SessionOutput:
        self._tick(now, mono)
        out = _Out()
        if self.state == ACTIVE:
            self._logout(out, text, now, "fix.local_logout")
        return out.freeze()

    def on_timer(self, now: float, mono: float | None = None) -> SessionOutput:
        self._tick(now, mono)
        mono_now = self._mono
        out = _Out()
        if self.state == AWAITING_LOGON:
            if mono_now - self._created >= self.logon_timeout_s:
                out.events.append(SessionProblem(sender="", reason=LOGON_TIMEOUT))
                out.disconnect = True
                self.state = CLOSED
            return out.freeze()
        if self.state != ACTIVE:
            return out.freeze()
        due = self.timer.due(mono_now)
        if PEER_GONE in due:  # our TestRequest went unanswered
            self._logout(out, "heartbeat timeout: TestRequest not answered", now, HEARTBEAT_TIMEOUT)
            return out.freeze()
        if SEND_TEST_REQUEST in due:
            self._send(out, self._admin(TEST_REQUEST, (112, self.timer.next_test_request_id())), now)
            self.timer.test_request_sent(mono_now)
        if SEND_HEARTBEAT in due:
            self._send(out, self._admin(HEARTBEAT), now)
        return out.freeze()

    # --- logon -------------------------------------------------------------------------------------------
    def _on_logon(self, msg: simplefix.FixMessage, out: _Out, now: float) -> None:
        sender = (msg.get(49) or b"").decode("ascii", "replace")
        if msg.message_type != LOGON:
            out.events.append(SessionProblem(sender=sender, reason=NOT_LOGGED_ON,
                                             detail=f"MsgType {msg.message_type!r} before Logon"))
            out.disconnect = True
            self.state = CLOSED
            return
        for tag in _HEADER_REQUIRED + (98, 108):
            if not msg.get(tag):
                self._refuse_logon(out, sender, f"Logon without tag {tag}", MISSING_TAG, now)
                return
        if msg.get(56) != self.our_comp_id.encode():
            self._refuse_logon(out, sender, "wrong TargetCompID", BAD_COMP_ID, now)
            return
        if self.bindings.get(sender) != self.peer_identity:
            self._refuse_logon(out, sender, "certificate identity not bound to SenderCompID", IDENTITY_MISMATCH,
                               now)
            return
        seq_raw, hb_raw = msg.get(34), msg.get(108)
        if not seq_raw.isdigit() or not hb_raw.isdigit() or not 0 < int(hb_raw) <= self.max_heartbeat_s \
                or msg.get(98) != b"0":
            self._refuse_logon(out, sender, "bad MsgSeqNum, HeartBtInt or EncryptMethod", BAD_VALUE, now)
            return
        seq = int(seq_raw)
        self.their_comp_id = sender
        reset = msg.get(141) == b"Y"
        if reset:
            self.store.reset(self.key)
            if seq != 1:
                self._logout(out, "ResetSeqNumFlag needs MsgSeqNum 1", now, BAD_VALUE)
                return
        expected, _ = self.store.load(self.key)
        if seq < expected:
            out.events.append(SessionProblem(sender=sender, seq=seq, reason=SEQ_TOO_LOW,
                                             detail=f"expected {expected}, got {seq}"))
            self._logout(out, f"MsgSeqNum too low, expecting {expected} but received {seq}", now, SEQ_TOO_LOW)
            return
        self.state = ACTIVE
        self.heartbeat_s = int(hb_raw)
        self.timer = HeartbeatTimer.start(self.heartbeat_s, self._mono, self.timer.transmission_ratio)
        pairs: list[tuple[int, object]] = [(98, 0), (108, self.heartbeat_s)]
        if reset:
            pairs.append((141, "Y"))
        self._send(out, self._admin(LOGON, *pairs), now)
        out.events.append(LoggedOn(sender=sender, seq=seq, heartbeat_s=self.heartbeat_s, reset=reset))
        if seq == expected:
            self.store.set_next_in(self.key, seq + 1)
        else:
            self._request_resend(out, expected, seq, now)

    def _request_resend(self, out: _Out, expected: int, seq: int, now: float) -> None:
        out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=SEQ_GAP,
                                         detail=f"expected {expected}, got {seq}"))
        if self._resend_requested_from != expected:
            self._resend_requested_from = expected
            self._send(out, self._admin(RESEND_REQUEST, (7, expected), (16, 0)), now)

    # --- logged on ---------------------------------------------------------------------------------------
    def _on_message(self, msg: simplefix.FixMessage, out: _Out, now: float) -> None:
        msg_type = msg.message_type
        seq_raw = msg.get(34)
        if not seq_raw or not seq_raw.isdigit():
            out.events.append(SessionProblem(sender=self.their_comp_id, reason=MISSING_TAG,
                                             detail="MsgSeqNum missing or not a number"))
            self._logout(out, "MsgSeqNum missing", now, MISSING_TAG)
            return
        seq = int(seq_raw)
        expected, _ = self.store.load(self.key)
        if msg.get(49) != self.their_comp_id.encode() or msg.get(56) != self.our_comp_id.encode():
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=BAD_COMP_ID))
            self._session_reject(out, seq, msg_type, 49 if msg.get(49) != self.their_comp_id.encode() else 56,
                                 SRR_COMP_ID_PROBLEM, "CompID problem", now)
            self._logout(out, "CompID problem", now, BAD_COMP_ID)
            return
        sending_time = msg.get(52)
        if not sending_time:
            self._consume(seq, expected)
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=MISSING_TAG,
                                             detail="tag 52"))
            self._session_reject(out, seq, msg_type, 52, SRR_REQUIRED_TAG_MISSING, "required tag 52 missing", now)
            return
        sent_at = codec.parse_fix_time(sending_time)
        if sent_at is None or abs(now - sent_at) > self.max_skew_s:
            # A stale or future SendingTime: a captured message replayed, or a broken clock.
            self._consume(seq, expected)
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=SENDING_TIME,
                                             detail=sending_time.decode("ascii", "replace")))
            self._session_reject(out, seq, msg_type, 52, SRR_SENDING_TIME, "SendingTime accuracy problem", now)
            self._logout(out, "SendingTime accuracy problem", now, SENDING_TIME)
            return
        if msg_type == LOGOUT:
            self._consume(seq, expected)  # the peer's Logout is in its sequence like any message
            self._logout(out, "logout acknowledged", now, "fix.peer_logout")
            return
        if msg_type == SEQUENCE_RESET and msg.get(123) != b"Y":
            self._on_sequence_reset(msg, seq, expected, out, now, gap_fill=False)
            return
        if msg_type == RESEND_REQUEST and seq > expected:
            self._on_resend_request(msg, seq, out, now)  # answer even while we wait for our own resend
            self._request_resend(out, expected, seq, now)
            return
        if seq > expected:
            self._request_resend(out, expected, seq, now)
            return
        if seq < expected:
            if msg.get(43) == b"Y":
                return  # a duplicate we already processed
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=SEQ_TOO_LOW,
                                             detail=f"expected {expected}, got {seq}"))
            self._logout(out, f"MsgSeqNum too low, expecting {expected} but received {seq}", now, SEQ_TOO_LOW)
            return
        # seq == expected
        if msg_type == SEQUENCE_RESET:
            self._on_sequence_reset(msg, seq, expected, out, now, gap_fill=True)
            return
        self.store.set_next_in(self.key, seq + 1)
        try:
            self._dispatch(msg, seq, out, now)
        except _Invalid as bad:
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq,
                                             reason=MISSING_TAG if bad.srr == SRR_REQUIRED_TAG_MISSING else BAD_VALUE,
                                             detail=bad.text))
            self._session_reject(out, seq, msg_type, bad.tag, bad.srr, bad.text, now)

    def _consume(self, seq: int, expected: int) -> None:
        if seq == expected:
            self.store.set_next_in(self.key, seq + 1)

    def _on_sequence_reset(self, msg, seq: int, expected: int, out: _Out, now: float, *, gap_fill: bool) -> None:
        new_seq_raw = msg.get(36)
        if not new_seq_raw or not new_seq_raw.isdigit():
            self._consume(seq, expected)
            self._session_reject(out, seq, SEQUENCE_RESET, 36, SRR_REQUIRED_TAG_MISSING, "NewSeqNo missing", now)
            return
        new_seq = int(new_seq_raw)
        if new_seq <= expected and not (new_seq == expected and not gap_fill):
            self._consume(seq, expected)
            out.events.append(SessionProblem(sender=self.their_comp_id, seq=seq, reason=BAD_VALUE,
                                             detail=f"NewSeqNo {new_seq} not above {expected}"))
            self._session_reject(out, seq, SEQUENCE_RESET, 36, SRR_VALUE_INCORRECT,
                                 "NewSeqNo would lower the sequence", now)
            return
        self.store.set_next_in(self.key, new_seq)
        if self._resend_requested_from and new_seq > self._resend_requested_from:
            self._resend_requested_from = 0

    def _dispatch(self, msg: simplefix.FixMessage, seq: int, out: _Out, now: float) -> None:
        t = msg.message_type
        sender = self.their_comp_id
        if self._resend_requested_from and seq >= self._resend_requested_from:
            self._resend_requested_from = 0
        if t == HEARTBEAT:
            return  # liveness is already noted (any message answers our TestRequest)
        if t == TEST_REQUEST:
            test_id = _text(msg, 112)
            self._send(out, self._admin(HEARTBEAT, (112, test_id)), now)
        elif t == RESEND_REQUEST:
            self._on_resend_request(msg, seq, out, now)
        elif t == REJECT:
            ref = msg.get(45)
            out.events.append(PeerReject(sender=sender, seq=seq, ref_seq=int(ref) if ref and ref.isdigit() else 0,
                                         text=(msg.get(58) or b"").decode("ascii", "replace")))
        elif t == LOGON:
            raise _Invalid(35, SRR_VALUE_INCORRECT, "already logged on")
        elif t == NEW_ORDER_SINGLE:
            _text(msg, 60)
            tif_raw = msg.get(59) or b"0"
            tif = codec.TIF_FROM_FIX.get(tif_raw)
            if tif is None:
                raise _Invalid(59, SRR_VALUE_INCORRECT, "TimeInForce must be 0, 1 or 3")
            out.events.append(FixNewOrderSingle(
                sender=sender, seq=seq, cl_ord_id=_text(msg, 11),
                account=(msg.get(1) or sender.encode()).decode("ascii", "replace"),
                symbol=_text(msg, 55), side=_side(msg), qty=_qty(msg), price=_limit_price(msg), tif=tif,
                poss_resend=msg.get(97) == b"Y" or msg.get(43) == b"Y",
            ))
        elif t == ORDER_CANCEL_REQUEST:
            _text(msg, 60)
            out.events.append(FixCancelRequest(sender=sender, seq=seq, cl_ord_id=_text(msg, 11),
                                               orig_cl_ord_id=_text(msg, 41), symbol=_text(msg, 55),
                                               side=_side(msg)))
        elif t == ORDER_CANCEL_REPLACE:
            _text(msg, 60)
            out.events.append(FixReplaceRequest(
                sender=sender, seq=seq, cl_ord_id=_text(msg, 11), orig_cl_ord_id=_text(msg, 41),
                account=(msg.get(1) or sender.encode()).decode("ascii", "replace"), symbol=_text(msg, 55),
                side=_side(msg), qty=_qty(msg), price=_limit_price(msg),
            ))
        elif t == ORDER_STATUS_REQUEST:
            out.events.append(FixStatusRequest(sender=sender, seq=seq, cl_ord_id=_text(msg, 11),
                                               symbol=_text(msg, 55), side=_side(msg)))
        elif t == ORDER_MASS_CANCEL:
            _text(msg, 60)
            kind = _text(msg, 530)
            if kind not in ("1", "7"):
                raise _Invalid(530, SRR_VALUE_INCORRECT, "MassCancelRequestType must be 1 or 7")
            symbol = _text(msg, 55) if kind == "1" else ""
            out.events.append(FixMassCancelRequest(sender=sender, seq=seq, cl_ord_id=_text(msg, 11),
                                                   request_type=kind, symbol=symbol))
        elif _FIX44_MSG_TYPE.fullmatch(t):
            # a FIX 4.4 application message this gateway does not take: BusinessMessageReject, 380=3
            out.events.append(SessionProblem(sender=sender, seq=seq, reason=UNSUPPORTED, detail=repr(t)))
            self._send(out, codec.business_message_reject(seq, t, BMR_UNSUPPORTED_MSG_TYPE,
                                                          "unsupported message type"), now, store_app=True)
        else:
            out.events.append(SessionProblem(sender=sender, seq=seq, reason=INVALID_MSG_TYPE, detail=repr(t)))
            self._session_reject(out, seq, t, 35, SRR_INVALID_MSG_TYPE, "invalid MsgType", now)

    def _on_resend_request(self, msg, seq: int, out: _Out, now: float) -> None:
        try:
            begin, end = _int(msg, 7), _int(msg, 16)
        except _Invalid as bad:
            self._session_reject(out, seq, RESEND_REQUEST, bad.tag, bad.srr, bad.text, now)
            return
        _, next_out = self.store.load(self.key)
        last = next_out - 1 if end == 0 or end >= next_out else end
        if begin < 1:
            self._session_reject(out, seq, RESEND_REQUEST, 7, SRR_VALUE_INCORRECT, "BeginSeqNo must be >= 1", now)
            return
        if begin > last:
            return  # nothing we sent in that range
        stored = self.store.sent(self.key, begin, last)
        gap_start = 0
        for s in range(begin, last + 1):
            raw = stored.get(s)
            if raw is None:
                if not gap_start:
                    gap_start = s
                continue
            if gap_start:
                out.outgoing.append(self._gap_fill(gap_start, s, now))
                gap_start = 0
            out.outgoing.append(self._resend(raw, s, now))
        if gap_start:
            out.outgoing.append(self._gap_fill(gap_start, last + 1, now))
        self.timer.sent(self._mono)

    def _gap_fill(self, seq: int, new_seq: int, now: float) -> bytes:
        body = self._admin(SEQUENCE_RESET, (123, "Y"), (36, new_seq))
        return self._stamp(body, seq, now, poss_dup=True)

    def _resend(self, raw: bytes, seq: int, now: float) -> bytes:
        framed = FixFramer().feed(raw)[0]
        msg = framed.message
        return self._stamp(msg, seq, now, poss_dup=True, orig_time=msg.get(52))


__all__ = [
    "FixSession", "SessionOutput", "LoggedOn", "LoggedOut", "SessionProblem", "FixNewOrderSingle",
    "FixCancelRequest", "FixReplaceRequest", "FixStatusRequest", "FixMassCancelRequest", "PeerReject",
]
