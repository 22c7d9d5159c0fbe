"""Compact decision records: how an enforcement point spools a decision in well under a microsecond.

Why: building a full :class:`~trustfabric.audit.events.AuditEventV1` (a dozen keyword
fields, a detail dict, JSON encoding) costs several microseconds per decision - more than
the whole hot-path check. On the hop an enforcement point therefore spools each decision
as one small MessagePack array (a *compact record*); the collector expands it into the
very same ``AuditEventV1`` (same fields, same JSON bytes) before it enters the central
log, so the log, its Merkle tree and ``audit query`` see no difference.

A spool segment may mix full events (JSON objects: the payload starts with ``{``) and
compact records (MessagePack arrays: the payload starts with an array marker)::

    [ "d1", source, id_prefix, seq, time_ns, row ]
    row = [ principal, action, resource, allowed, reason, epoch, policy_ids,
            trace_id, peer_fingerprint, session_id | nil, decided_at, notional, symbol | nil ]

``row`` is exactly what :data:`DecisionRow` names; the spool stamps the outer fields
(its source, its event-id prefix, the next sequence number, the flush time) so one
sequence covers both kinds of record.
"""

from __future__ import annotations

from typing import Any

import msgspec

from trustfabric.audit.errors import AuditError
from trustfabric.audit.events import AuditEventV1, Kind, decode_event, encode_event
from trustfabric.nesting import msgpack_nesting_exceeds

DECISION_TAG = "d1"
# (principal, action, resource, allowed, reason, epoch, policy_ids, trace_id, peer_fingerprint,
#  session_id, decided_at, notional, symbol)
DecisionRow = tuple

_ARRAY_MARKERS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}

_encoder = msgspec.msgpack.Encoder()
encode_compact = _encoder.encode  # the spool calls this once per record
_decoder = msgspec.msgpack.Decoder()


def is_compact(payload: bytes | memoryview) -> bool:
    """Whether a spool payload is a compact record (a MessagePack array) rather than a JSON event."""
    return len(payload) > 0 and payload[0] in _ARRAY_MARKERS


def _unpack(payload: bytes) -> list[Any]:
    try:
        if msgpack_nesting_exceeds(payload):
            raise ValueError("nested too deep")
        record = _decoder.decode(payload)
    except Exception as exc:  # noqa: BLE001 - msgspec's errors, or anything else: a refusal
        raise AuditError(f"undecodable compact record: {exc}", reason="audit.spool.malformed") from None
    if not (isinstance(record, list) and len(record) == 6 and record[0] == DECISION_TAG
            and type(record[3]) is int and type(record[4]) is int
            and isinstance(record[5], list) and len(record[5]) == 13):
        raise AuditError("compact record of an unknown layout", reason="audit.spool.malformed")
    return record


def decision_event(source: str, id_prefix: str, seq: int, time_ns: int, row: DecisionRow) -> AuditEventV1:
    """The full ``Kind.DECISION`` event a compact record stands for."""
    (principal, action, resource, allowed, reason, epoch, policy_ids, trace_id, fingerprint,
     session_id, decided_at, notional, symbol) = row
    detail: dict[str, Any] = {"decided_at": decided_at}
    if notional:
        detail["notional"] = notional
    if symbol is not None:
        detail["symbol"] = symbol
    if session_id is not None:
        detail["session"] = session_id
    return AuditEventV1(event_id=f"{id_prefix}-{seq}", source=source, seq=seq, time_ns=time_ns,
                        kind=Kind.DECISION, principal=principal, action=action, resource=resource,
                        decision="allow" if allowed else "deny", reason=reason, epoch=epoch,
                        policy_ids=tuple(policy_ids), trace_id=trace_id, peer_fingerprint=fingerprint,
                        detail=detail)


def expand_event(payload: bytes) -> AuditEventV1:
    """The ``AuditEventV1`` of any spool payload (full or compact); raises :class:`AuditError`."""
    if not is_compact(payload):
        try:
            return decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AuditError(f"undecodable record: {exc}", reason="audit.spool.malformed") from None
    _, source, id_prefix, seq, time_ns, row = _unpack(bytes(payload))
    try:
        return decision_event(source, id_prefix, seq, time_ns, tuple(row))
    except (TypeError, ValueError, msgspec.ValidationError) as exc:
        raise AuditError(f"compact record with bad fields: {exc}", reason="audit.spool.malformed") from None


def canonical(payload: bytes) -> bytes:
    """The canonical event bytes the central log stores: full events as they are, compact ones expanded."""
    if not is_compact(payload):
        return bytes(payload)
    return encode_event(expand_event(payload))


def record_seq(payload: bytes) -> int:
    """The sequence number of any spool payload."""
    if is_compact(payload):
        return int(_unpack(bytes(payload))[3])
    return decode_event(payload).seq
