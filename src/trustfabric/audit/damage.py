"""Spool damage in the central log: the alert that stands in for damaged records, and the losses read back.

A damaged stretch of a spool (a bad frame anywhere, including the segment being written;
see :func:`~trustfabric.audit.spool.read_spool_records`) does not stop the collector: it
ships every intact record before and after it, and in the damaged records' place the
central log gets an ``audit.spool.corrupt`` ALERT (:func:`damage_alert`) naming the spool,
the segment, the record position and the sequence numbers lost. Its source is
``<spool>#collector`` and its number the first sequence number lost, so shipping it again
after a crash stores it once. :func:`losses` reads them back: ``audit verify`` never calls
a log intact over records that never reached it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from trustfabric.audit.events import AuditEventV1, Kind, encode_event
from trustfabric.audit.log import AuditStore, Query
from trustfabric.audit.spool import SPOOL_CORRUPT, Ack, Damage, read_spool_records

DAMAGE_SOURCE_SUFFIX = "#collector"  # source of the alerts standing in for a spool's damaged records


def damage_alert(spool: str, damage: Damage, time_ns: int) -> AuditEventV1:
    """The ALERT the central log holds in place of a spool's damaged records."""
    return AuditEventV1(
        event_id=f"{spool}{DAMAGE_SOURCE_SUFFIX}-{damage.segment}-{damage.offset}", source=spool + DAMAGE_SOURCE_SUFFIX,
        seq=damage.after_seq + 1, time_ns=time_ns, kind=Kind.ALERT, reason=SPOOL_CORRUPT, resource=spool,
        detail={"segment": damage.segment, "record": damage.record, "offset": damage.offset,
                "resume": damage.resume, "after_seq": damage.after_seq, "next_seq": damage.next_seq,
                "what": damage.describe()})


def records_and_alerts(directory: Path, ack: Ack, found: list[tuple[str, Damage]],
                       now_ns: Callable[[], int]) -> Iterator[tuple[int, int, bytes]]:
    """A spool's intact records after ``ack``, each damaged stretch replaced by its alert (and added to ``found``)."""

    def damaged(damage: Damage) -> bytes:
        found.append((str(directory), damage))
        return encode_event(damage_alert(directory.name, damage, now_ns()))

    return read_spool_records(directory, ack, damaged=damaged)


def losses(store: AuditStore) -> list[str]:
    """What the central log says was lost to spool damage: one line per damaged stretch."""
    lines = []
    for record in store.query(Query(kind=Kind.ALERT)):
        if record.source.endswith(DAMAGE_SOURCE_SUFFIX):
            event = record.event()
            if event.reason == SPOOL_CORRUPT:
                lines.append(f"{event.resource}: {event.detail.get('what', '')}")
    return lines
