"""The one versioned event schema of the fabric, and how events are emitted.

``AuditEventV1`` is what every part records: decisions (allow and deny), session
open/renew/close, handshake refusals, certificate issuance/refusal/revocation,
policy load/refusal, signal changes, logins/MFA/step-up, admin actions, alerts and
containment. Fields are structured, never formatted strings; ``kind`` is one of
the :class:`Kind` constants and ``reason`` a dotted reason code from
:mod:`trustfabric.errors`.

An :class:`Emitter` belongs to one *source* (a CA, an enforcement point, the policy
engine...) and stamps each event with an id, the source's next sequence number and
the time. It hands the event to a sink: anything with ``append(event)``.
:class:`MemorySink` is the in-memory sink for tests; durable sinks live beside it.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Protocol

import msgspec

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import AuditError
from trustfabric.nesting import json_nesting_exceeds

SCHEMA_VERSION = 1


class Kind:
    """Event kinds (constants, not free text)."""

    DECISION = "decision"
    SESSION_OPEN = "session.open"
    SESSION_RENEW = "session.renew"
    SESSION_CLOSE = "session.close"
    SESSION_REFUSED = "session.refused"
    HANDSHAKE_REFUSED = "handshake.refused"
    CERT_ISSUED = "cert.issued"
    CERT_REFUSED = "cert.refused"
    CERT_REVOKED = "cert.revoked"
    CA_ROTATED = "ca.rotated"
    TOKEN_ISSUED = "token.issued"
    TOKEN_REFUSED = "token.refused"
    POLICY_LOADED = "policy.loaded"
    POLICY_REFUSED = "policy.refused"
    POLICY_TABLE = "policy.table"  # a decision table compiled: the signals its decisions saw
    SIGNAL_CHANGED = "signal.changed"
    SIGNAL_REFUSED = "signal.refused"
    USER_LOGIN = "user.login"
    USER_MFA = "user.mfa"
    USER_STEP_UP = "user.step_up"
    USER_LOCKED = "user.locked"
    ADMIN_ACTION = "admin.action"
    ALERT = "alert"
    CONTAINMENT = "containment"
    RELEASE = "release"


class AuditEventV1(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One audit record. Immutable; encode with :func:`encode_event`."""

    v: int = SCHEMA_VERSION
    event_id: str
    source: str
    seq: int
    time_ns: int
    kind: str
    trace_id: str = ""  # correlation id; the ClOrdID for order flow
    principal: str = ""  # SPIFFE ID or user name
    action: str = ""
    resource: str = ""
    decision: str = ""  # "allow" | "deny" | ""
    reason: str = ""
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    epoch: int = 0
    obligations: dict[str, Any] = msgspec.field(default_factory=dict)
    peer_fingerprint: str = ""  # SHA-256 of the peer certificate, hex
    segment: str = ""
    trust_domain: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEventV1)


def encode_event(event: AuditEventV1) -> bytes:
    """Canonical bytes of an event (JSON, field order fixed by the schema)."""
    return _encoder.encode(event)


class EventMalformed(AuditError, msgspec.DecodeError):
    """Bytes that are not an ``AuditEventV1``. Also a ``msgspec.DecodeError``, as callers catch."""

    reason = "audit.event.malformed"


def decode_event(data: bytes) -> AuditEventV1:
    """The event of canonical bytes; :class:`EventMalformed` for anything else (any nesting or encoding)."""
    if json_nesting_exceeds(data):
        raise EventMalformed("event nested too deep")
    try:
        return _decoder.decode(data)
    except Exception as exc:  # noqa: BLE001 - msgspec's errors, or anything else: a refusal
        raise EventMalformed(f"{type(exc).__name__}: {str(exc)[:200]}") from None


class EventSink(Protocol):
    def append(self, event: AuditEventV1) -> None: ...


class MemorySink:
    """Keeps events in a list; for tests and in-process demos."""

    def __init__(self) -> None:
        self.events: list[AuditEventV1] = []
        self._lock = threading.Lock()

    def append(self, event: AuditEventV1) -> None:
        with self._lock:
            self.events.append(event)

    def of_kind(self, kind: str) -> list[AuditEventV1]:
        return [e for e in self.events if e.kind == kind]


class NullSink:
    """Discards events. Only for benchmarks that measure something else."""

    def append(self, event: AuditEventV1) -> None:  # noqa: D102
        return None


class Emitter:
    """Stamps and sends the events of one source (id, per-source sequence, time)."""

    def __init__(self, source: str, sink: EventSink, clock: Clock = SYSTEM_CLOCK, *, start_seq: int = 0) -> None:
        self.source = source
        self.sink = sink
        self.clock = clock
        self._seq = itertools.count(start_seq + 1)
        self._prefix = os.urandom(6).hex()
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> AuditEventV1:
        with self._lock:
            seq = next(self._seq)
        event = AuditEventV1(
            event_id=f"{self._prefix}-{seq}",
            source=self.source,
            seq=seq,
            time_ns=int(self.clock.now() * 1e9),
            kind=kind,
            **fields,
        )
        self.sink.append(event)
        return event
