"""A floor service's audit sink: every event of the process into its spool, flushed before effects leave.

:class:`ServiceSink` is what the process's emitters and its enforcement point write to
(the service's :class:`~trustfabric.audit.spool.Spool` under ``$TRUSTFABRIC_HOME/spool/<name>/``);
it also forwards security events to the control plane's response engine.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import msgspec

from trustfabric.audit.compact import DecisionRow, decision_event
from trustfabric.audit.events import AuditEventV1
from trustfabric.audit.spool import Spool
from trustfabric.control.plane import is_security_event


class ServiceSink:
    """The process's one audit sink: re-stamps every event into the spool's sequence, and keeps a
    copy of the security-relevant ones (denials, refusals) for the control plane's response engine.

    The enforcement point's decisions take the spool's compact path (:mod:`trustfabric.audit.compact`:
    one small MessagePack array per decision instead of a full event, expanded by the collector into
    the same ``AuditEventV1``); only the denials among them are expanded here, for the response engine,
    with the very event ids the central log will show.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.security: list[AuditEventV1] = []
        self.forward = False
        self.on_security: Callable[[], None] | None = None  # ship them now (not at the next report tick)

    @property
    def last_seq(self) -> int:
        return self.spool.last_seq

    def append(self, event: AuditEventV1) -> None:
        seq = self.spool.last_seq + 1
        stamped = msgspec.structs.replace(event, source=self.spool.source, seq=seq,
                                          event_id=f"{self.spool.source}-{os.getpid()}-{seq}")
        self.spool.append(stamped)
        self._forward(stamped)

    def emit(self, kind: str, **fields: Any) -> AuditEventV1:
        """Stamp and spool one event (the enforcement point's own events: sessions, refusals)."""
        event = self.spool.emit(kind, **fields)
        self._forward(event)
        return event

    def append_decisions(self, rows: list[DecisionRow], time_ns: int) -> int:
        """Compact decision records into the spool's buffer; returns the last sequence number given."""
        last = self.spool.append_decisions(rows, time_ns)
        self._forward_denials(rows, last, time_ns)
        return last

    def write_decisions(self, rows: list[DecisionRow], time_ns: int) -> int:
        """Compact decision records written at once (the hop's one call); returns how many."""
        count = self.spool.write_decisions(rows, time_ns)
        self._forward_denials(rows, self.spool.last_seq, time_ns)
        return count

    def _forward_denials(self, rows: list[DecisionRow], last_seq: int, time_ns: int) -> None:
        if not self.forward:
            return
        first = last_seq - len(rows) + 1
        for i, row in enumerate(rows):
            if row[3] is not True:  # denials only: _forward keeps those the response engine reads
                self._forward(decision_event(self.spool.source, self.spool.id_prefix, first + i, time_ns, row))

    def _forward(self, event: AuditEventV1) -> None:
        if self.forward and is_security_event(event) and len(self.security) < 10_000:
            self.security.append(event)
            if self.on_security is not None:
                self.on_security()

    def flush(self) -> None:
        self.spool.flush()
