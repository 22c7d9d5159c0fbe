"""Ships enforcement points' spool segments into the central log and acknowledges them.

For each spool directory (``$TRUSTFABRIC_HOME/spool/<source>/``) the collector reads the
complete records after the spool's ack position, ingests them into the central
:class:`~trustfabric.audit.log.AuditLog` (one transaction per batch) and only THEN writes
the new ack position (atomically). A ``kill -9`` anywhere leaves either the ack behind
the central commit (the batch is re-shipped and deduplicated on ``(source, seq)``) or
both in step: no record is lost and none is stored twice. A damaged stretch of a spool
stops nothing: the intact records around it are shipped, an alert in its place names what
was lost (:mod:`trustfabric.audit.damage`), and :attr:`Collector.damaged` lists it.

Compact decision records (:mod:`trustfabric.audit.compact`, what enforcement points spool
on the hop) are expanded here into the full ``AuditEventV1`` they stand for, so the
central log holds one schema whatever the spool held.

Fully acknowledged segments are deleted once a later segment holds a record (so the
spool's sequence numbers can still be recovered from the later segment or the ack).
Runs in-process (:meth:`Collector.run` with a stop event) or as ``trustfabric audit collect``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trustfabric.audit.compact import canonical, record_seq
from trustfabric.audit.damage import records_and_alerts
from trustfabric.audit.events import AuditEventV1, EventSink, Kind
from trustfabric.audit.log import AuditLog
from trustfabric.audit.spool import Ack, Damage, read_ack, segment_number, segment_paths, write_ack
from trustfabric.errors import TrustFabricError


@dataclass(frozen=True, slots=True)
class CollectResult:
    read: int  # records read from spools
    appended: int  # new records in the central log
    duplicates: int  # records already there (re-shipped after a crash)


class Collector:
    """Moves records from spool directories into the central log."""

    def __init__(self, log: AuditLog, spool_root: Path, *, batch: int = 4096, delete_acked: bool = True,
                 alerts: EventSink | None = None) -> None:
        self.log = log
        self.alerts = alerts
        self.last_error: TrustFabricError | None = None
        self.spool_root = Path(spool_root)
        self.batch = batch
        self.delete_acked = delete_acked
        self.damaged: list[tuple[str, Damage]] = []  # (spool directory, damage) found, in order

    def spool_dirs(self) -> list[Path]:
        if not self.spool_root.exists():
            return []
        if segment_paths(self.spool_root):  # pointed at one spool directly
            return [self.spool_root]
        return sorted(p for p in self.spool_root.iterdir() if p.is_dir())

    def collect_once(self) -> CollectResult:
        read = appended = 0
        for directory in self.spool_dirs():
            r, a = self.ship(directory)
            read += r
            appended += a
        self.log.checkpoint_if_due()  # the time-based tree head, even when nothing new came
        return CollectResult(read, appended, read - appended)

    def ship(self, directory: Path) -> tuple[int, int]:
        """Ship one spool: (records read, records new in the central log)."""
        ack = read_ack(directory)
        read = appended = 0
        payloads: list[bytes] = []
        position = (ack.segment, ack.offset)
        for segment, end, payload in records_and_alerts(directory, ack, self.damaged, self._now_ns):
            payloads.append(canonical(payload))
            position = (segment, end)
            if len(payloads) >= self.batch:
                ack, new = self._commit(directory, ack, payloads, position)
                read += len(payloads)
                appended += new
                payloads = []
        if payloads:
            ack, new = self._commit(directory, ack, payloads, position)
            read += len(payloads)
            appended += new
        if self.delete_acked:
            self._delete_acked(directory, ack)
        return read, appended

    def _now_ns(self) -> int:
        return int(self.log.clock.now() * 1e9)

    def _commit(self, directory: Path, ack: Ack, payloads: list[bytes],
                position: tuple[int, int]) -> tuple[Ack, int]:
        """Ingest one batch, then acknowledge it: (the new ack, records new in the central log)."""
        appended = self.log.ingest(payloads)  # the central commit first ...
        new = Ack(position[0], position[1], ack.records + len(payloads),
                  max(ack.last_seq, record_seq(payloads[-1])))
        write_ack(directory, new)  # ... then the acknowledgement
        return new, appended

    def _delete_acked(self, directory: Path, ack: Ack) -> None:
        # The ack points just past a shipped record of segment ack.segment, so that segment
        # holds a record and every earlier segment is fully shipped.
        if ack.offset <= 0:
            return
        for path in segment_paths(directory):
            if segment_number(path) < ack.segment:
                path.unlink(missing_ok=True)

    def run(self, stop: threading.Event, interval_s: float = 0.05) -> None:
        """Collect until ``stop`` is set (in-process collector loop).

        A pass that fails (store down, a corrupt or out-of-order spool) leaves the records in
        their spool, raises an ALERT to ``alerts`` (once per distinct failure) and is retried.
        """
        last_reason = ""
        while True:
            try:
                self.collect_once()
                last_reason = ""
            except TrustFabricError as exc:
                self.last_error = exc
                if exc.reason != last_reason and self.alerts is not None:
                    self.alerts.append(AuditEventV1(
                        event_id=f"collector-alert-{time.time_ns()}", source="audit-collector", seq=0,
                        time_ns=time.time_ns(), kind=Kind.ALERT, reason=exc.reason,
                        resource=str(self.spool_root), detail={"error": exc.detail}))
                last_reason = exc.reason
            if stop.is_set():
                return
            stop.wait(interval_s)
