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

A pass (:meth:`Collector.collect_once`) first flushes the in-process spools it was given
(``flush_first``: the control plane's and the identity plane's, which buffer), ships every
spool (one spool that fails does not hold back the others; the first failure is raised
after the pass), signs a tree head when one is due, and hands the decision records it
shipped - allowed and denied, in time order - to ``on_decisions`` (the response engine's
behavioural baselines learn normal traffic from them).

:class:`PeriodicCollector` runs passes in a thread of its own every ``interval_s`` (off
the caller's event loop); a failing pass raises an ALERT (once per distinct failure) into
the collector's own spool, which it ships too. :meth:`PeriodicCollector.stop` - called
once every writer has stopped - makes a last pass and signs a tree head over the whole
log, so a run ends with nothing beyond its last signed head. ``trustfabric audit
collect`` runs the same passes from the command line.

Records that reach the collector another way - shipped over the control bus by an enforcement point
on another host (:mod:`trustfabric.control.audit_bus`) - are handed in with :meth:`Collector.submit`
(any thread): the next pass ingests them through the same log, before the spools, and calls each
batch's ``committed`` callback only once the central commit is done (that is when the point may
drop them). Spools named in ``skip`` are left to their own shipper.

:func:`unshipped` counts what spools hold that the central log does not (``audit verify``
never calls a log complete over records it has not shipped).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from trustfabric.audit.compact import canonical, expand_event, is_compact, record_seq
from trustfabric.audit.damage import records_and_alerts
from trustfabric.audit.events import AuditEventV1, Kind, encode_event
from trustfabric.audit.log import AuditLog, AuditStore
from trustfabric.audit.spool import (Ack, Damage, Spool, read_ack, read_spool_records, segment_number, segment_paths,
                                     write_ack)
from trustfabric.errors import AuditError, TrustFabricError

COLLECTOR_SOURCE = "audit-collector"  # the collector's own spool (its alerts)
OBSERVER_FAILED = "audit.collector.observer_failed"
STOP_TIMEOUT = "audit.collector.stop_timeout"
FAILED = "audit.collector.failed"  # anything unforeseen: the thread keeps going, the alert says what
LEARN_CHUNK = 65_536  # decision records handed over at most at once (memory stays bounded)

DecisionObserver = Callable[[list[AuditEventV1]], object]


class AlertEmitter(Protocol):
    """Where the collector raises its alerts (a :class:`Spool` or an :class:`Emitter`)."""

    def emit(self, kind: str, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class CollectResult:
    read: int  # records read from spools
    appended: int  # new records in the central log
    duplicates: int  # records already there (re-shipped after a crash)
    decisions: int = 0  # decision records handed to on_decisions


def spool_dirs(spool_root: Path) -> list[Path]:
    """The spool directories under ``spool_root`` (or ``spool_root`` itself when it is one)."""
    root = Path(spool_root)
    if not root.exists():
        return []
    if segment_paths(root):  # pointed at one spool directly
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir())


@dataclass
class _Pass:
    read: int = 0
    appended: int = 0
    decisions: list[AuditEventV1] = field(default_factory=list)
    handed: int = 0


class Collector:
    """Moves records from spool directories into the central log."""

    def __init__(self, log: AuditLog, spool_root: Path, *, batch: int = 4096, delete_acked: bool = True,
                 alerts: AlertEmitter | None = None, flush_first: Sequence[Callable[[], object]] = (),
                 on_decisions: DecisionObserver | None = None) -> None:
        self.log = log
        self.alerts = alerts
        self.last_error: TrustFabricError | None = None
        self.spool_root = Path(spool_root)
        self.batch = batch
        self.delete_acked = delete_acked
        self.flush_first = tuple(flush_first)
        self.on_decisions = on_decisions
        self.observer_errors = 0
        self.appended_total = 0  # records new in the central log, over every pass
        self._alerted = ""
        self.damaged: list[tuple[str, Damage]] = []  # (spool directory, damage) found, in order
        self.skip: set[str] = set()  # spool directories another shipper owns (names)
        self._inbox: list[tuple[list[bytes], Callable[[int], object]]] = []
        self._inbox_lock = threading.Lock()

    def spool_dirs(self) -> list[Path]:
        return [d for d in spool_dirs(self.spool_root) if d.name not in self.skip]

    def submit(self, payloads: list[bytes], committed: Callable[[int], object]) -> None:
        """Records shipped another way (the bus): ingested by the next pass; ``committed(appended)`` after."""
        with self._inbox_lock:
            self._inbox.append((list(payloads), committed))

    def _ingest_submitted(self, progress: _Pass) -> None:
        with self._inbox_lock:
            batches, self._inbox = self._inbox, []
        for i, (payloads, committed) in enumerate(batches):
            decisions: list[AuditEventV1] = []
            try:
                appended = self.log.ingest([self._canonical(p, decisions) for p in payloads])
            except BaseException:
                with self._inbox_lock:  # not committed: kept, in order, for the next pass (never acknowledged)
                    self._inbox[:0] = batches[i:]
                raise
            progress.read += len(payloads)
            progress.appended += appended
            self._learned(decisions, progress)
            try:
                committed(appended)
            except Exception:  # noqa: BLE001 - the records are in the log; the shipper re-sends, deduplicated
                pass

    def collect_once(self) -> CollectResult:
        """One pass over every spool; raises the first failure after every spool was tried."""
        failure: TrustFabricError | None = None
        for flush in self.flush_first:
            try:
                flush()
            except TrustFabricError as exc:  # that spool refuses (and alerted); the others still ship
                failure = failure or exc
        progress = _Pass()
        try:
            self._ingest_submitted(progress)
        except TrustFabricError as exc:
            failure = failure or exc
        for directory in self.spool_dirs():
            try:
                self._ship(directory, progress)
            except TrustFabricError as exc:
                failure = failure or exc
        self.log.checkpoint_if_due()  # the time-based tree head, even when nothing new came
        self._hand_over(progress)
        if failure is not None:
            raise failure
        return CollectResult(progress.read, progress.appended, progress.read - progress.appended,
                             progress.handed)

    def ship(self, directory: Path) -> tuple[int, int]:
        """Ship one spool: (records read, records new in the central log)."""
        progress = _Pass()
        try:
            self._ship(directory, progress)
        finally:
            self._hand_over(progress)
        return progress.read, progress.appended

    def _ship(self, directory: Path, progress: _Pass) -> None:
        ack = read_ack(directory)
        payloads: list[bytes] = []
        decisions: list[AuditEventV1] = []
        position = (ack.segment, ack.offset)
        for segment, end, payload in records_and_alerts(directory, ack, self.damaged, self._now_ns):
            payloads.append(self._canonical(payload, decisions))
            position = (segment, end)
            if len(payloads) >= self.batch:
                ack = self._commit(directory, ack, payloads, position, progress)
                self._learned(decisions, progress)
                payloads, decisions = [], []
        if payloads:
            ack = self._commit(directory, ack, payloads, position, progress)
            self._learned(decisions, progress)
        if self.delete_acked:
            self._delete_acked(directory, ack)

    def _canonical(self, payload: bytes, decisions: list[AuditEventV1]) -> bytes:
        """The bytes the central log stores; the decision event kept aside when someone learns from it."""
        if self.on_decisions is None:
            return canonical(payload)
        event = expand_event(payload)
        if event.kind == Kind.DECISION:
            decisions.append(event)
        return encode_event(event) if is_compact(payload) else bytes(payload)

    def _now_ns(self) -> int:
        return int(self.log.clock.now() * 1e9)

    def _commit(self, directory: Path, ack: Ack, payloads: list[bytes], position: tuple[int, int],
                progress: _Pass) -> Ack:
        """Ingest one batch, then acknowledge it: the new ack."""
        appended = self.log.ingest(payloads)  # the central commit first ...
        new = Ack(position[0], position[1], ack.records + len(payloads),
                  max(ack.last_seq, record_seq(payloads[-1])))
        write_ack(directory, new)  # ... then the acknowledgement
        progress.read += len(payloads)
        progress.appended += appended
        return new

    def _learned(self, decisions: list[AuditEventV1], progress: _Pass) -> None:
        progress.decisions += decisions
        if len(progress.decisions) >= LEARN_CHUNK:
            self._hand_over(progress)

    def _hand_over(self, progress: _Pass) -> None:
        """Give the shipped decision records, in time order, to ``on_decisions`` (never raises)."""
        events, progress.decisions = progress.decisions, []
        if not events or self.on_decisions is None:
            return
        events.sort(key=lambda e: e.time_ns)
        try:
            self.on_decisions(events)
            progress.handed += len(events)
        except Exception as exc:  # noqa: BLE001 - the records are shipped; the blind spot is alerted
            self.observer_errors += 1
            self.alert(OBSERVER_FAILED, f"{type(exc).__name__}: {exc}")

    def _delete_acked(self, directory: Path, ack: Ack) -> None:
        # The ack points just past a shipped record of segment ack.segment, so that segment
        # holds a record and every earlier segment is fully shipped.
        if ack.offset <= 0:
            return
        for path in segment_paths(directory):
            if segment_number(path) < ack.segment:
                path.unlink(missing_ok=True)

    def alert(self, reason: str, detail: str) -> None:
        """Raise an ALERT to ``alerts`` (once per distinct reason until a pass succeeds)."""
        if reason == self._alerted or self.alerts is None:
            return
        self._alerted = reason
        try:
            self.alerts.emit(Kind.ALERT, reason=reason, resource=str(self.spool_root), detail={"error": detail})
        except Exception:  # noqa: BLE001 - the alert sink itself refuses; last_error still tells
            pass

    def collect_reporting(self) -> CollectResult | None:
        """:meth:`collect_once`, a failure kept in ``last_error`` and alerted instead of raised."""
        observer_errors = self.observer_errors
        try:
            result = self.collect_once()
        except Exception as exc:  # noqa: BLE001 - never dies silently: kept, alerted, retried
            error = _typed(exc)
            self.last_error = error
            self.alert(error.reason, error.detail)
            return None
        self.last_error = None
        if self.observer_errors == observer_errors:
            self._alerted = ""  # a clean pass: the next failure alerts again
        self.appended_total += result.appended
        return result

    def run(self, stop: threading.Event, interval_s: float = 0.05) -> None:
        """Collect until ``stop`` is set, then a last pass and a tree head signed over the whole log.

        A pass that fails (store down, a corrupt or out-of-order spool) leaves the records in
        their spool, raises an ALERT to ``alerts`` (once per distinct failure) and is retried.
        The last pass starts after ``stop`` was set: set it once the spools' writers stopped,
        and it ships everything they wrote.
        """
        while not stop.is_set():
            self.collect_reporting()
            stop.wait(interval_s)
        self.collect_reporting()
        try:
            self.log.checkpoint()
        except Exception as exc:  # noqa: BLE001
            self.last_error = _typed(exc)
            self.alert(self.last_error.reason, self.last_error.detail)


def _typed(exc: Exception) -> TrustFabricError:
    if isinstance(exc, TrustFabricError):
        return exc
    return AuditError(f"{type(exc).__name__}: {exc}", reason=FAILED)


class PeriodicCollector:
    """A :class:`Collector` in a thread of its own: a pass every ``interval_s``; on stop, ship and sign.

    ``open_log`` is called in that thread (opening a large log reads its leaf hashes); the
    collector's alerts go to its own spool ``<spool_root>/audit-collector`` (flushed at once,
    shipped by the next pass). ``flush_first`` and ``on_decisions`` as for :class:`Collector`.
    """

    def __init__(self, open_log: Callable[[], AuditLog], spool_root: Path, *, interval_s: float = 1.0,
                 flush_first: Sequence[Callable[[], object]] = (),
                 on_decisions: DecisionObserver | None = None) -> None:
        self.spool_root = Path(spool_root)
        self.interval_s = interval_s
        self._open_log = open_log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.alerts = _FlushingSpool(Spool(self.spool_root / COLLECTOR_SOURCE, COLLECTOR_SOURCE))
        self._flush_first = tuple(flush_first)
        self._on_decisions = on_decisions
        self.collector: Collector | None = None
        self._error = ""  # opening the log failed, or the last pass did not end in time
        self.skip: set[str] = set()  # spools another shipper owns (the bus)
        self._early: list[tuple[list[bytes], Callable[[int], object]]] = []  # submitted before the log opened
        self._early_lock = threading.Lock()

    def submit(self, payloads: list[bytes], committed: Callable[[int], object]) -> None:
        """Hand records in for the next pass (:meth:`Collector.submit`); kept until the log is open."""
        with self._early_lock:
            if self.collector is None:
                self._early.append((payloads, committed))
                return
        self.collector.submit(payloads, committed)

    @property
    def collected(self) -> int:
        """Records new in the central log since start."""
        return self.collector.appended_total if self.collector is not None else 0

    @property
    def error(self) -> str:
        """The reason of the last failure ("" after a clean pass)."""
        if self._error:
            return self._error
        last = self.collector.last_error if self.collector is not None else None
        return last.reason if last is not None else ""

    def start(self) -> "PeriodicCollector":
        self._thread = threading.Thread(target=self._run, name="audit-collector", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        log = None
        while log is None:
            try:
                log = self._open_log()
            except Exception as exc:  # noqa: BLE001 - retried; the spools keep the records meanwhile
                error = _typed(exc)
                self._error = error.reason
                self._raise(error.reason, error.detail)
                if self._stop.wait(self.interval_s):
                    return
        self._error = ""
        collector = Collector(log, self.spool_root, alerts=self.alerts, flush_first=self._flush_first,
                              on_decisions=self._on_decisions)
        collector.skip = self.skip
        with self._early_lock:
            for payloads, committed in self._early:
                collector.submit(payloads, committed)
            self._early = []
            self.collector = collector
        try:
            self.collector.run(self._stop, self.interval_s)
        finally:
            try:
                log.close()
            except Exception:  # noqa: BLE001 - closing a connection that failed: nothing more to do
                pass

    def _raise(self, reason: str, detail: str) -> None:
        try:
            self.alerts.emit(Kind.ALERT, reason=reason, resource=str(self.spool_root), detail={"error": detail})
        except Exception:  # noqa: BLE001 - the alert sink itself refuses; error still tells
            pass

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Last pass, tree head over the whole log, then close; False if that did not end within ``timeout_s``."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._stop.set()
        thread.join(timeout_s)
        finished = not thread.is_alive()
        if not finished:
            self._error = STOP_TIMEOUT
            self._raise(STOP_TIMEOUT, f"the last collection pass did not end within {timeout_s} s")
        self.alerts.spool.close()
        return finished


class _FlushingSpool:
    """The collector's alerts: emitted into its spool and made durable at once (alerts are rare)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def emit(self, kind: str, **fields: Any) -> AuditEventV1:
        event = self.spool.emit(kind, **fields)
        self.spool.flush()
        return event


def unshipped(spool_root: Path, store: AuditStore) -> dict[str, int]:
    """Records each spool under ``spool_root`` holds that the central log does not: {spool: count}.

    Raises :class:`~trustfabric.errors.AuditError` (e.g. ``audit.spool.corrupt``) for a spool
    that cannot be read: what it holds is unknown, never counted as shipped.
    """
    pending: dict[str, int] = {}
    for directory in spool_dirs(spool_root):
        seqs: dict[str, list[int]] = {}
        for _, _, payload in read_spool_records(directory, read_ack(directory)):
            event = expand_event(payload)
            seqs.setdefault(event.source, []).append(event.seq)
        missing = sum(len(s) - len(store.existing(source, s)) for source, s in seqs.items())
        if missing:
            pending[directory.name] = missing
    return pending
