"""FIX 4.4 liveness timers, the same on both sides of a session: a pure clock-driven state.

FIX 4.4 (Volume 2, "Heartbeat interval"): each side sends a Heartbeat (0) when it
has *sent* nothing for HeartBtInt seconds, whatever it receives; when it has
*received* nothing for HeartBtInt plus a reasonable transmission time it sends a
TestRequest (1); if that TestRequest is not answered (nothing at all arrives for
another such interval) the peer is considered gone: Logout, then disconnect.

:class:`HeartbeatTimer` keeps the readings of the monotonic clock
(``trustfabric.clock``: ``monotonic()``) at which something was last sent and
received, and :meth:`HeartbeatTimer.due` says what is due now. It sends nothing
itself: the acceptor (:mod:`.session`) and the initiator (:mod:`.client`) act on
the answer. The transmission allowance is ``transmission_ratio`` x HeartBtInt
(20% by default, as most engines use).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TRANSMISSION_RATIO = 0.2

# What :meth:`HeartbeatTimer.due` asks for (any subset, in this order).
SEND_TEST_REQUEST = "test_request"
SEND_HEARTBEAT = "heartbeat"
PEER_GONE = "peer_gone"


@dataclass(slots=True)
class HeartbeatTimer:
    interval_s: float
    last_sent: float
    last_received: float
    transmission_ratio: float = DEFAULT_TRANSMISSION_RATIO
    test_request_sent_at: float | None = None  # an unanswered TestRequest, when it left
    test_requests: int = 0

    @classmethod
    def start(cls, interval_s: float, mono: float,
              transmission_ratio: float = DEFAULT_TRANSMISSION_RATIO) -> HeartbeatTimer:
        if interval_s <= 0:
            raise ValueError("HeartBtInt must be positive")
        return cls(float(interval_s), mono, mono, transmission_ratio)

    @property
    def grace_s(self) -> float:
        """HeartBtInt plus the transmission allowance: the longest silence before a TestRequest."""
        return self.interval_s * (1.0 + self.transmission_ratio)

    def sent(self, mono: float) -> None:
        self.last_sent = max(self.last_sent, mono)

    def received(self, mono: float) -> None:
        """Anything from the peer proves it alive and answers an outstanding TestRequest."""
        self.last_received = max(self.last_received, mono)
        self.test_request_sent_at = None

    def next_test_request_id(self) -> str:
        self.test_requests += 1
        return f"TEST-{self.test_requests}"

    def due(self, mono: float) -> tuple[str, ...]:
        """What is due at ``mono``: PEER_GONE alone, or SEND_TEST_REQUEST and/or SEND_HEARTBEAT."""
        if self.test_request_sent_at is not None:
            if mono - self.test_request_sent_at >= self.grace_s:
                return (PEER_GONE,)
        elif mono - self.last_received >= self.grace_s:
            return (SEND_TEST_REQUEST,)  # a TestRequest is something sent: no Heartbeat with it
        if mono - self.last_sent >= self.interval_s:
            return (SEND_HEARTBEAT,)
        return ()

    def test_request_sent(self, mono: float) -> None:
        self.test_request_sent_at = mono
        self.sent(mono)
