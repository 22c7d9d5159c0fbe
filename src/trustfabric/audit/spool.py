"""An enforcement point's local, durable, append-only audit spool (segment files).

Why: a decision's effect may leave an enforcement point only once its audit record is
durable. Appending must therefore be cheap and batched: :meth:`Spool.append` only
buffers; :meth:`Spool.flush` writes the whole batch with ONE ``write`` and ONE ``fsync``
(group commit). The transport calls ``flush`` (or leaves a ``with spool.commit():``
block) before it lets the batch's effects go out.

On disk (``$TRUSTFABRIC_HOME/spool/<source>/``)::

    00000001.seg 00000002.seg ...   segments; each record is a frame
                                     [u32 length][u32 CRC32(payload)][payload = encode_event(...)]
    ack.json                          written by the collector after the central commit

Recovery: on open, the last segment is scanned; a torn tail (what ``kill -9`` or a crash
mid-write leaves: less than a header, or a last frame running past the end of the file, or
zeros - see :func:`is_torn_tail`) is truncated away, and the source's sequence numbers
continue after the highest one found (or acknowledged). Sequence numbers are strictly
increasing within a spool: the central log relies on it.

Damage is not a torn tail: a complete frame whose CRC fails, a length no frame can have, or
a bad frame followed by intact ones, in any segment. Nothing is ever cut away or written
after it. Readers resynchronise past it (:func:`scan_segment`: the next position where a
frame's length and CRC hold) and name it as a :class:`Damage` - segment, record position,
the sequence numbers lost. Opening a spool whose last segment is damaged is refused
(:class:`SpoolCorrupt`) until the collector has shipped past it and recorded the loss; the
writer then starts a new segment.

Scrubbing: a running writer keeps the CRC32 of every :data:`SCRUB_CHUNK` of the segment it
writes (one ``crc32`` per written batch) and a background thread re-reads one chunk every
``scrub_interval_s`` (in both durability modes; ``None`` leaves only explicit
:meth:`Spool.scrub` calls). Bytes on disk that differ from what it wrote make it refuse
(``audit.spool.corrupt``: fail closed, the enforcement point allows nothing more), raise an
alert naming the damaged record, and seal the segment.

Failure (the Vault model, never OPA's silent drop): when a batch cannot be made durable
(``ENOSPC``, ``EROFS``, any ``OSError``, or a write that hangs beyond ``flush_timeout_s``)
the spool raises :class:`AuditUnavailable`, keeps the batch in memory, emits an ALERT and
enters a *refusing* state in which every ``append``/``flush`` raises too: the caller must
refuse new work. :meth:`Spool.recover` retries the write (after a hung write, reopen).
Closing while refusing tries the held batch once more; what still cannot be written is
counted in ``dropped_on_close`` and reported by an ``audit.spool.dropped_on_close`` alert
(those records' effects never left: nothing was allowed while refusing).
Memory is bounded: when ``max_buffer`` records are waiting, ``append`` flushes itself
(the caller pays for the write: backpressure).

Durability modes (``durability=``):

* ``"fsync"`` (:data:`DURABILITY_FSYNC`, the default): ``flush`` returns once the batch is
  written AND fsynced - durable against an OS crash or power loss; costs a disk flush
  (tens of microseconds to milliseconds) per batch.
* ``"write"`` (:data:`DURABILITY_WRITE`, what enforcement points use on the hop): ``flush``
  does ONE ``write()`` of the batch and returns. Bytes handed to the kernel survive the
  death of the process (``kill -9``, a crash): the page cache keeps them and writes them
  back. A background syncer thread fsyncs every ``sync_interval_s`` (a few milliseconds),
  so an OS crash or power loss can lose at most that window; a failing fsync puts the
  spool in the refusing state like a failing write. :meth:`Spool.sync` forces one now.

Compact decision records (:mod:`trustfabric.audit.compact`) are appended with
:meth:`Spool.append_decisions`; they share the spool's one sequence with full events, and
the collector expands them into full ``AuditEventV1`` records.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno as errno_codes
import itertools
import json
import os
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from trustfabric.audit.compact import DECISION_TAG, DecisionRow, encode_compact, record_seq
from trustfabric.audit.errors import AuditUnavailable, SpoolCorrupt, SpoolError
from trustfabric.audit.events import AuditEventV1, EventSink, Kind, encode_event
from trustfabric.clock import SYSTEM_CLOCK, Clock

FRAME_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 1 << 20
SEGMENT_SUFFIX = ".seg"
ACK_FILE = "ack.json"
DEFAULT_SEGMENT_BYTES = 64 << 20
DURABILITY_FSYNC = "fsync"  # flush = write + fsync (durable against an OS crash)
DURABILITY_WRITE = "write"  # flush = one write(); a background syncer fsyncs (durable against kill -9)
DURABILITY_MODES = (DURABILITY_FSYNC, DURABILITY_WRITE)
DEFAULT_SYNC_INTERVAL_S = 0.005
DEFAULT_SCRUB_INTERVAL_S = 0.05
SCRUB_CHUNK = 256 << 10  # the active segment is checked in pieces of this size, one per scrub step
SPOOL_CORRUPT = SpoolCorrupt.reason  # the alert a writer raises when its own segment is damaged
_crc32 = zlib.crc32
_pack_header = FRAME_HEADER.pack


def encode_frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan_frames(data: bytes | memoryview, offset: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """Complete, CRC-valid frames from ``offset``: ([(end_offset, payload)], end of the last good frame).

    Stops at the first incomplete or bad frame; whether that is a torn tail or corruption
    is for the caller to judge (by what follows it).
    """
    frames: list[tuple[int, bytes]] = []
    size = len(data)
    pos = offset
    header = FRAME_HEADER.size
    while pos + header <= size:
        length, crc = FRAME_HEADER.unpack_from(data, pos)
        end = pos + header + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size:
            break
        payload = bytes(data[pos + header:end])
        if zlib.crc32(payload) != crc:
            break
        frames.append((end, payload))
        pos = end
    return frames, pos


MAX_TORN_TAIL_SCAN = 8 << 20


def _next_frame(data: bytes | memoryview, start: int) -> int:
    """Where the next intact frame starts at or after ``start`` (-1: none): resynchronisation.

    A frame's length is at most :data:`MAX_RECORD_BYTES` (1 MiB), so its header starts with a
    zero byte and a byte of at most 0x10: only those positions are tried. A candidate must also
    end where the data ends or where another such header could start before its CRC is
    computed, so garbage costs a scan, not a CRC of up to a megabyte per zero byte.
    """
    header = FRAME_HEADER.size
    size = len(data)
    raw = bytes(data) if isinstance(data, memoryview) else data
    pos = raw.find(b"\0", start)
    while 0 <= pos <= size - header:
        length, crc = FRAME_HEADER.unpack_from(raw, pos)
        end = pos + header + length
        if (0 < length <= MAX_RECORD_BYTES and end <= size
                and (end == size or (raw[end] == 0 and (end + 1 == size or raw[end + 1] <= 0x10)))
                and zlib.crc32(raw[pos + header:end]) == crc):
            return pos
        pos = raw.find(b"\0", pos + 1)
    return -1


def is_torn_tail(data: bytes, bad: int) -> bool:
    """Whether the bytes from ``bad`` (where the last good frame ended) are a torn tail, not corruption.

    A torn tail is what a crash mid-write leaves: less than a header, or a frame whose length
    runs past the end of the file with no intact frame after it, or zeros (blocks allocated but
    never written before an OS crash). A complete frame whose CRC fails, a length no frame can
    have, or damage followed by intact frames is corruption.
    """
    rest = len(data) - bad
    header = FRAME_HEADER.size
    if rest < header:
        return True
    if rest > MAX_TORN_TAIL_SCAN:
        return False  # far larger than any batch: not a torn write
    if data.count(0, bad) == rest:
        return True
    length, _ = FRAME_HEADER.unpack_from(data, bad)
    if 0 < length <= MAX_RECORD_BYTES and bad + header + length > len(data):
        return _next_frame(data, bad + 1) < 0
    return False


def scan_segment(data: bytes, offset: int = 0, *, last: bool = False
                 ) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]], int]:
    """Every intact frame from ``offset``, resynchronising past damage.

    Returns ``(frames, damaged, end)``: the frames as ``(end offset, payload)``, the damaged
    byte ranges as ``(start, resume)`` (``resume`` is where intact frames start again, or the
    end of the data), and where reading stopped. In the ``last`` segment a torn tail (see
    :func:`is_torn_tail`) ends the reading without being damage: it is still being written,
    or a crash cut it.
    """
    frames: list[tuple[int, bytes]] = []
    damaged: list[tuple[int, int]] = []
    pos = offset
    size = len(data)
    while True:
        found, pos = scan_frames(data, pos)
        frames += found
        if pos >= size or (last and is_torn_tail(data, pos)):
            return frames, damaged, pos
        resume = _next_frame(data, pos + 1)
        if resume < 0:
            damaged.append((pos, size))
            return frames, damaged, size
        damaged.append((pos, resume))
        pos = resume


@dataclass(frozen=True, slots=True)
class Damage:
    """A damaged stretch of a spool segment: the records in it are lost; intact ones around it are not."""

    segment: int
    record: int  # position in the segment of the first damaged record (1 = its first record)
    offset: int  # byte offset of the bad frame
    resume: int  # byte offset where intact records start again (the segment's size: none after it)
    after_seq: int = 0  # sequence number of the last intact record before it (0: unknown)
    next_seq: int = 0  # sequence number of the first intact record after it (0: none yet)

    def describe(self) -> str:
        if not self.record:  # found by the writer's scrub without a frame to blame (cut short, overwritten)
            return (f"segment {self.segment:08d}{SEGMENT_SUFFIX} bytes {self.offset}-{self.resume} differ from what "
                    "was written")
        lost = (f"records after seq {self.after_seq} and before seq {self.next_seq}" if self.next_seq
                else f"records after seq {self.after_seq}")
        return (f"segment {self.segment:08d}{SEGMENT_SUFFIX} record {self.record} (bytes {self.offset}-{self.resume}) "
                f"is damaged: {lost} are lost")


def locate_damage(data: bytes, segment: int, start: int, resume: int, after_seq: int = 0) -> Damage:
    """The :class:`Damage` of the bad bytes ``[start, resume)`` of one segment, with its record position."""
    before, earlier, _ = scan_segment(data[:start])
    next_seq = 0
    if resume < len(data):
        with contextlib.suppress(Exception):  # an intact frame whose payload is no record: seq unknown
            next_seq = record_seq(scan_frames(data, resume)[0][0][1])
    if before:  # else the caller's: the last record of an earlier segment, or the ack's
        with contextlib.suppress(Exception):
            after_seq = record_seq(before[-1][1])
    return Damage(segment, len(before) + len(earlier) + 1, start, resume, after_seq, next_seq)


def segment_paths(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit())


def segment_number(path: Path) -> int:
    return int(path.stem)


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:08d}{SEGMENT_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Ack:
    """How far the collector has shipped this spool into the central log."""

    segment: int = 1
    offset: int = 0
    records: int = 0
    last_seq: int = 0


def read_ack(directory: Path) -> Ack:
    path = directory / ACK_FILE
    try:
        raw = json.loads(path.read_text())
        return Ack(int(raw["segment"]), int(raw["offset"]), int(raw["records"]), int(raw["last_seq"]))
    except FileNotFoundError:
        return Ack()
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolCorrupt(f"{path}: {exc}", reason="audit.spool.ack_corrupt") from None


def unshipped_bytes(directory: Path) -> int:
    """Bytes of a spool's segments after the collector's acknowledged position."""
    try:
        ack = read_ack(directory)
    except SpoolCorrupt:  # an unreadable ack: everything is unshipped
        ack = None
    total = 0
    for path in directory.glob(f"*{SEGMENT_SUFFIX}"):
        try:
            number, size = segment_number(path), path.stat().st_size
        except (OSError, ValueError):
            continue
        if ack is None or number > ack.segment:
            total += size
        elif number == ack.segment:
            total += max(0, size - ack.offset)
    return total


def write_ack(directory: Path, ack: Ack, *, write: Callable[[int, bytes], int] = os.write) -> None:
    """Atomically replace the ack file (write, fsync, rename, fsync the directory).

    A failure (a full or read-only filesystem...) is :class:`SpoolError`
    ``audit.spool.ack_unwritable`` and leaves the previous ack in place: the records it
    would have acknowledged are shipped again next time, and the central log skips them.
    """
    tmp = directory / (ACK_FILE + ".tmp")
    body = json.dumps({"segment": ack.segment, "offset": ack.offset, "records": ack.records,
                       "last_seq": ack.last_seq}).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if write(fd, body) != len(body):
                raise OSError(errno_codes.EIO, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / ACK_FILE)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SpoolError(f"{directory}: cannot write {ACK_FILE}: {exc.strerror or exc}; what was shipped is in "
                         "the central log and is shipped again (and skipped) next time",
                         reason="audit.spool.ack_unwritable") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SpoolCounters:
    records_in: int
    records_flushed: int
    records_shipped: int
    buffered: int
    refusing: bool


class Spool:
    """The durable local audit sink of one source (an :class:`EventSink`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        source: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_buffer: int = 4096,
        flush_timeout_s: float | None = None,
        alerts: EventSink | None = None,
        write: Callable[[int, bytes], int] = os.write,
        fsync: Callable[[int], None] = os.fsync,
        durability: str = DURABILITY_FSYNC,
        sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S,
        scrub_interval_s: float | None = DEFAULT_SCRUB_INTERVAL_S,
    ) -> None:
        if max_buffer < 1 or segment_bytes < 1:
            raise SpoolError("max_buffer and segment_bytes must be positive")
        if durability not in DURABILITY_MODES:
            raise SpoolError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if not sync_interval_s > 0:
            raise SpoolError("sync_interval_s must be positive")
        self.durability = durability
        self.sync_interval_s = float(sync_interval_s)
        self._sync_each_flush = durability == DURABILITY_FSYNC
        self._sync_lock = threading.Lock()
        self._sync_stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.syncs = 0
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.source = source
        self.clock = clock
        self.segment_bytes = segment_bytes
        self.max_buffer = max_buffer
        self.flush_timeout_s = flush_timeout_s
        self.alerts = alerts
        self._write = write
        self._fsync = fsync
        self._lock = threading.RLock()
        self._buffer: list[bytes] = []
        self._buffer_last_seq = 0
        self._prefix = os.urandom(6).hex()
        self._refusing: AuditUnavailable | None = None
        self.dropped_on_close = 0  # records still refused at close (each reported by an alert)
        self._poisoned = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.records_in = 0
        self.records_flushed = 0
        self.torn_bytes_truncated = 0
        self.scrub_interval_s = None if scrub_interval_s is None else max(0.001, float(scrub_interval_s))
        self._scrub_at = 0.0  # monotonic time of the next scrub step
        self._scrub_next = 0
        self._chunk_crcs: list[int] = []  # CRC32 of each complete SCRUB_CHUNK of the active segment
        self._tail_crc = 0  # CRC32 of the active segment's bytes after the last complete chunk
        self.damage: Damage | None = None  # what the scrub found (the spool then refuses)
        self._fd = -1
        self._open_tail()
        self._written_seq = self._synced_seq = self.last_seq
        if not self._sync_each_flush or self.scrub_interval_s is not None:
            self._syncer = threading.Thread(target=self._sync_loop, name=f"audit-sync:{source}", daemon=True)
            self._syncer.start()

    # -- recovery -------------------------------------------------------------------------
    def _open_tail(self) -> None:
        segments = segment_paths(self.directory)
        if not segments:
            segments = [segment_path(self.directory, 1)]
            segments[0].touch(mode=0o600)
            _fsync_dir(self.directory)
        last = segments[-1]
        number = segment_number(last)
        data = last.read_bytes()
        frames, damaged, good_end = scan_segment(data, last=True)
        ack = read_ack(self.directory)
        # Damage (not a torn tail) is never cut away nor written after: refused until the collector
        # has shipped past it and recorded the loss; then new records go to a new segment.
        if damaged and not (ack.segment > number or (ack.segment == number and ack.offset >= damaged[-1][1])):
            damage = locate_damage(data, number, *damaged[0])
            raise SpoolCorrupt(f"{last}: {damage.describe()}; nothing is cut away: ship the intact records "
                               "and record the loss with `trustfabric audit collect`, then reopen")
        if good_end < len(data):  # a torn tail: cut it off, durably
            self.torn_bytes_truncated = len(data) - good_end
            with open(last, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        last_seq = 0
        for payloads in itertools.chain((frames,), (scan_segment(p.read_bytes())[0] for p in reversed(segments[:-1]))):
            if payloads:
                last_seq = record_seq(payloads[-1][1])
                break
        self.last_seq = max(last_seq, ack.last_seq)
        self._segment = number
        self._offset = good_end
        self._fd = os.open(last, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._track_reset()
        self._track(data[:good_end], 0)
        if damaged:
            self._rotate_locked()

    # -- appending ------------------------------------------------------------------------
    @property
    def refusing(self) -> bool:
        return self._refusing is not None

    def emit(self, kind: str, **fields: Any) -> AuditEventV1:
        """Stamp (id, next sequence number, time) and append one event atomically."""
        with self._lock:
            self._check_accepting()
            seq = self.last_seq + 1
            event = AuditEventV1(event_id=f"{self._prefix}-{seq}", source=self.source, seq=seq,
                                 time_ns=int(self.clock.now() * 1e9), kind=kind, **fields)
            self.append(event)
            return event

    def append(self, event: AuditEventV1) -> None:
        """Buffer one event; raises :class:`AuditUnavailable` while refusing."""
        payload = encode_event(event)
        if len(payload) > MAX_RECORD_BYTES:
            raise SpoolError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}", reason="audit.spool.too_large")
        with self._lock:
            self._check_accepting()
            if event.source != self.source:
                raise SpoolError(f"event of source {event.source!r} in the spool of {self.source!r}",
                                 reason="audit.spool.wrong_source")
            if event.seq <= self.last_seq:
                raise SpoolError(f"sequence {event.seq} after {self.last_seq}", reason="audit.spool.out_of_order")
            if len(self._buffer) >= self.max_buffer:
                self.flush()  # backpressure: the caller pays for the write
            self._buffer.append(encode_frame(payload))
            self.last_seq = event.seq
            self.records_in += 1

    def append_decisions(self, rows: list[DecisionRow], time_ns: int) -> int:
        """Buffer compact decision records (one per row, see :mod:`trustfabric.audit.compact`).

        Each gets the next sequence number; ``time_ns`` stamps them all (the drain time).
        All rows are encoded before any is buffered: either the whole batch is taken or none.
        Returns the last sequence number given.
        """
        with self._lock:
            self._check_accepting()
            frames, seq = self._decision_frames(rows, time_ns)
            if len(self._buffer) + len(frames) > self.max_buffer:
                self._flush_locked()  # backpressure: the caller pays for the write
            self._buffer += frames
            self.last_seq = seq
            self.records_in += len(frames)
            return seq

    def write_decisions(self, rows: list[DecisionRow], time_ns: int) -> int:
        """:meth:`append_decisions` then :meth:`flush` under one lock: the hop's one call per batch.

        Returns the number of records written. In ``"write"`` mode with nothing else buffered
        this is a straight line: encode, frame, ONE ``write()``; anything unusual (a short or
        failed write, a refusing spool) takes the general path with its error handling.
        """
        with self._lock:
            if (self._buffer or self._sync_each_flush or self._refusing is not None or self._fd < 0
                    or self.flush_timeout_s is not None):
                self.append_decisions(rows, time_ns)
                return self._flush_locked()
            frames, seq = self._decision_frames(rows, time_ns)
            batch = frames[0] if len(frames) == 1 else b"".join(frames)
            count = len(frames)
            try:
                written = self._write(self._fd, batch)
            except OSError:
                written = -1
            self.last_seq = seq
            self.records_in += count
            if written != len(batch):  # undo a partial write, then the general path retries / refuses
                self._buffer += frames
                if written > 0:
                    try:
                        os.ftruncate(self._fd, self._offset)
                    except OSError as exc:  # a torn frame stays: writing after it would hide the batch
                        self._poisoned = True
                        raise self._enter_refusing(f"partial write not undone: {exc}",
                                                   exc.errno or errno_codes.EIO) from None
                return self._flush_locked()
            self._track(batch, self._offset)
            self._offset += written
            self.records_flushed += count
            self._written_seq = seq
            if self._offset >= self.segment_bytes:
                self._rotate()
            return count

    def _decision_frames(self, rows: list[DecisionRow], time_ns: int) -> tuple[list[bytes], int]:
        """The frames of compact decision records numbered after ``last_seq``, and the last number."""
        seq = self.last_seq
        source, prefix = self.source, self._prefix
        frames = []
        for row in rows:
            seq += 1
            payload = encode_compact((DECISION_TAG, source, prefix, seq, time_ns, row))
            frames.append(_pack_header(len(payload), _crc32(payload)) + payload)
        return frames, seq

    def _check_accepting(self) -> None:
        if self._refusing is not None:
            raise AuditUnavailable(f"spool {self.source} is refusing: {self._refusing.detail}",
                                   reason=self._refusing.reason)
        if self._fd < 0:
            raise SpoolError("the spool is closed", reason="audit.spool.closed")

    # -- making durable --------------------------------------------------------------------
    def flush(self) -> int:
        """Write every buffered record with one write and one fsync; the number written."""
        with self._lock:
            self._check_accepting()
            return self._flush_locked()

    def _flush_locked(self) -> int:
        buffer = self._buffer
        if not buffer:
            return 0
        batch = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        count = len(buffer)
        try:
            if self.flush_timeout_s is None:
                self._write_batch(batch)
            else:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit-spool")
                self._executor.submit(self._write_batch, batch).result(timeout=self.flush_timeout_s)
        except concurrent.futures.TimeoutError:
            self._poisoned = True  # the hung write may still land: only a reopen may resume
            raise self._enter_refusing("audit sink hung", errno_codes.ETIMEDOUT) from None
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._offset)  # best effort; reopen truncates a torn tail anyway
            except OSError:
                self._poisoned = True
            raise self._enter_refusing(os.strerror(exc.errno) if exc.errno else str(exc), exc.errno or 0) from None
        self._track(batch, self._offset)
        self._offset += len(batch)
        buffer.clear()
        self.records_flushed += count
        self._written_seq = self.last_seq
        if self._sync_each_flush:
            self._synced_seq = self.last_seq
        if self._offset >= self.segment_bytes:
            self._rotate()
        return count

    def _write_batch(self, batch: bytes) -> None:
        written = self._write(self._fd, batch)  # one write() in the common case
        if written != len(batch):
            view = memoryview(batch)
            while True:
                if written <= 0:
                    raise OSError(errno_codes.EIO, "short write")
                view = view[written:]
                if not view:
                    break
                written = self._write(self._fd, view)
        if self._sync_each_flush:
            self._fsync(self._fd)

    # -- background thread: sync (durability="write") and scrub ----------------------------
    def _sync_loop(self) -> None:
        syncing = not self._sync_each_flush
        interval = self.sync_interval_s if syncing else self.scrub_interval_s
        while not self._sync_stop.wait(interval):
            try:
                if syncing:
                    self.sync()
                if self.scrub_interval_s is not None:
                    self._scrub_if_due()
            except AuditUnavailable:
                pass  # the spool is refusing now; the alert is raised; the next flush refuses
            except Exception:  # noqa: BLE001 - the syncer never dies silently: refuse instead
                with self._lock:
                    if self._refusing is None:
                        self._enter_refusing("background sync failed", errno_codes.EIO)

    def sync(self) -> int:
        """fsync everything written so far; the highest sequence number now durable on disk.

        In ``"write"`` mode the background syncer calls this every ``sync_interval_s``; a
        failing fsync enters the refusing state (and raises :class:`AuditUnavailable`).
        """
        with self._sync_lock:
            target = self._written_seq
            if target <= self._synced_seq or self._fd < 0:
                return self._synced_seq
            try:
                self._fsync(self._fd)
            except OSError as exc:
                failure: OSError | None = exc
            else:
                failure = None
                self._synced_seq = target
                self.syncs += 1
        if failure is None:
            return target
        with self._lock:
            self._poisoned = True  # what the kernel held may be gone: only a reopen may resume
            raise self._enter_refusing(f"fsync failed: {failure}", failure.errno or errno_codes.EIO) from None

    @property
    def synced_seq(self) -> int:
        """The highest sequence number known to be fsynced (durable against an OS crash)."""
        return self._synced_seq

    def _rotate(self) -> None:
        with self._sync_lock:
            if not self._sync_each_flush and self._synced_seq < self._written_seq:
                self._fsync(self._fd)  # the old segment's tail is on disk before we move on
                self._synced_seq = self._written_seq
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        os.close(self._fd)
        self._segment += 1
        path = segment_path(self.directory, self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._offset = 0
        self._track_reset()
        _fsync_dir(self.directory)

    def _enter_refusing(self, why: str, code: int, *, reason: str | None = None,
                        extra: dict[str, Any] | None = None) -> AuditUnavailable:
        error = AuditUnavailable(f"spool {self.source}: {why} ({errno_codes.errorcode.get(code, code)}); "
                                 f"{len(self._buffer)} records held, refusing new work", reason=reason)
        first = self._refusing is None
        self._refusing = error
        if first and self.alerts is not None:
            self.alerts.append(AuditEventV1(
                event_id=f"{self._prefix}-alert-{self.records_in}", source=f"{self.source}#spool", seq=0,
                time_ns=int(self.clock.now() * 1e9), kind=Kind.ALERT, reason=error.reason,
                resource=str(self.directory), detail={"errno": errno_codes.errorcode.get(code, str(code)),
                                                      "held_records": len(self._buffer), "why": why,
                                                      **(extra or {})}))
        return error

    # -- scrubbing: the writer checks its own segment ---------------------------------------
    def _track_reset(self) -> None:
        self._chunk_crcs = []
        self._tail_crc = 0
        self._scrub_next = 0

    def _track(self, data: bytes, start: int) -> None:
        """Fold bytes just written at ``start`` of the active segment into the chunk CRCs (C speed)."""
        crc32 = _crc32
        room = SCRUB_CHUNK - start % SCRUB_CHUNK
        if len(data) < room:  # the common case: one batch inside one chunk
            self._tail_crc = crc32(data, self._tail_crc)
            return
        view = memoryview(data)
        while len(view) >= room:
            self._chunk_crcs.append(crc32(view[:room], self._tail_crc))
            self._tail_crc = 0
            view = view[room:]
            room = SCRUB_CHUNK
        if view:
            self._tail_crc = crc32(view, 0)

    def _scrub_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._scrub_at:
            self._scrub_at = now + (self.scrub_interval_s or 0.0)
            self.scrub()

    def scrub(self, *, whole: bool = False) -> Damage | None:
        """Re-read (part of) the active segment and check it against the CRCs of what was written.

        One :data:`SCRUB_CHUNK` per call, in turn (the spool's background thread calls it every
        ``scrub_interval_s``, off the writer's path), or the ``whole`` segment. Bytes on disk
        that differ from what this writer wrote - a flipped bit, an overwrite, a truncation - are
        damage: the spool refuses from then on (fail closed: nothing is acknowledged after
        records the collector may not be able to read), raises an ``audit.spool.corrupt`` alert
        naming the segment and record, and seals the segment (later writes, after a reopen, go
        to a new one). Returns the damage found, or None.
        """
        with self._lock:
            if self._fd < 0 or self._refusing is not None:
                return self.damage
            segment, end = self._segment, self._offset
            chunks = [(i * SCRUB_CHUNK, SCRUB_CHUNK, crc) for i, crc in enumerate(self._chunk_crcs)]
            if end > len(chunks) * SCRUB_CHUNK:
                chunks.append((len(chunks) * SCRUB_CHUNK, end - len(chunks) * SCRUB_CHUNK, self._tail_crc))
            if not chunks:
                return None
            if not whole:
                chunks = [chunks[self._scrub_next % len(chunks)]]
                self._scrub_next += 1
        bad = self._first_bad_chunk(segment_path(self.directory, segment), chunks)  # read outside the lock
        if bad is None:
            return None
        with self._lock:
            if self._segment != segment or self._fd < 0 or self._refusing is not None:
                return self.damage  # rotated or closed meanwhile: the collector judges the old segment
            return self._seal_damaged(segment, end, bad)

    @staticmethod
    def _first_bad_chunk(path: Path, chunks: list[tuple[int, int, int]]) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return 0  # the segment is gone
        try:
            for start, length, crc in chunks:
                got = os.pread(fd, length, start)
                if len(got) != length or _crc32(got) != crc:
                    return start
        except OSError:
            return chunks[0][0]
        finally:
            os.close(fd)
        return None

    def _seal_damaged(self, segment: int, end: int, bad_chunk: int) -> Damage:
        """The active segment differs from what was written: refuse, alert, and start a new segment."""
        path = segment_path(self.directory, segment)
        try:
            data = path.read_bytes()[:end]
        except OSError:
            data = b""
        _, damaged, _ = scan_segment(data)
        if damaged:
            damage = locate_damage(data, segment, *damaged[0])
        else:  # cut short, or changed without breaking a frame's CRC: the chunk is all we know
            damage = Damage(segment, 0, bad_chunk, end)
        self.damage = damage
        self._poisoned = True  # only a reopen may resume (and it starts a new segment)
        self._enter_refusing(damage.describe(), errno_codes.EIO, reason=SPOOL_CORRUPT,
                             extra={"segment": damage.segment, "record": damage.record, "offset": damage.offset,
                                    "after_seq": damage.after_seq})
        with contextlib.suppress(OSError):
            self._rotate_locked()  # seal: the damaged segment is no longer the one being written
        return damage

    def recover(self) -> int:
        """Retry the held batch after the cause is fixed; leaves the refusing state on success."""
        with self._lock:
            if self._refusing is None:
                return 0
            if self._poisoned:
                raise AuditUnavailable(f"spool {self.source}: a write may be in flight; reopen the spool")
            held, self._refusing = self._refusing, None
            try:
                return self._flush_locked()
            except AuditUnavailable:
                raise
            except BaseException:
                self._refusing = held
                raise

    @contextmanager
    def commit(self) -> Iterator["Spool"]:
        """``with spool.commit(): spool.append(...)``: the block's records are durable on exit."""
        try:
            yield self
        finally:
            self.flush()

    # -- bookkeeping ----------------------------------------------------------------------
    def counters(self) -> SpoolCounters:
        shipped = read_ack(self.directory).records
        return SpoolCounters(self.records_in, self.records_flushed, shipped, len(self._buffer), self.refusing)

    @property
    def id_prefix(self) -> str:
        """The prefix of this spool's event ids (``<prefix>-<seq>``), as its compact records carry it."""
        return self._prefix

    def emitter_start_seq(self) -> int:
        """Where an :class:`~trustfabric.audit.events.Emitter` for this spool must start."""
        return self.last_seq

    def close(self) -> None:
        self._sync_stop.set()
        syncer = self._syncer
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join(5)
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._refusing is None:
                    self._flush_locked()
                    if not self._sync_each_flush:
                        self.sync()
                elif self._buffer and not self._poisoned:
                    with contextlib.suppress(Exception):  # the cause may be gone: one last try
                        self.recover()
                        if not self._sync_each_flush:
                            self.sync()
            finally:
                if self._buffer:
                    self._report_dropped()
                os.close(self._fd)
                self._fd = -1
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)

    def _report_dropped(self) -> None:
        """Records still held at close are lost with the process: count them and raise an alert.

        Their effects never left (a refusing spool refuses new work), but they must not vanish
        without a trace: ``dropped_on_close`` counts them and the ``alerts`` sink gets an alert.
        """
        self.dropped_on_close = len(self._buffer)
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                self.alerts.append(AuditEventV1(
                    event_id=f"{self._prefix}-dropped-{self.records_in}", source=f"{self.source}#spool", seq=0,
                    time_ns=int(self.clock.now() * 1e9), kind=Kind.ALERT, reason="audit.spool.dropped_on_close",
                    resource=str(self.directory),
                    detail={"dropped_records": self.dropped_on_close,
                            "first_seq": self.last_seq - self.dropped_on_close + 1, "last_seq": self.last_seq}))
        self._buffer.clear()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_spool_records(directory: Path, start: Ack, *,
                       damaged: Callable[[Damage], bytes | None] | None = None) -> Iterator[tuple[int, int, bytes]]:
    """(segment, end offset, payload) of every intact record after ``start``, in order.

    Damage anywhere - a bad frame before a later segment, or one in the last segment that is
    not a torn tail (:func:`is_torn_tail`: a tail still being written, where reading stops) -
    raises :class:`SpoolCorrupt` naming the segment and record, after the records before it.
    With ``damaged``, reading goes on instead: ``damaged(damage)`` is called, reading resumes
    at the next intact record, and what it returns (unless None) is yielded in the damaged
    records' place, ending at the resume offset (the collector ships an alert there).
    """
    segments = [p for p in segment_paths(directory) if segment_number(p) >= start.segment]
    header = FRAME_HEADER.size
    last_payload: bytes | None = None
    for i, path in enumerate(segments):
        number = segment_number(path)
        offset = start.offset if number == start.segment else 0
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SpoolError(f"{path}: {exc.strerror or exc}", reason="audit.spool.unreadable") from None
        frames, regions, _ = scan_segment(data, offset, last=i == len(segments) - 1)
        pending = iter(regions)
        region = next(pending, None)
        for end, payload in frames:
            while region is not None and region[0] < end - header - len(payload):
                yield from _damaged(data, number, region, last_payload, start, damaged)
                region = next(pending, None)
            yield number, end, payload
            last_payload = payload
        while region is not None:
            yield from _damaged(data, number, region, last_payload, start, damaged)
            region = next(pending, None)


def _damaged(data: bytes, number: int, region: tuple[int, int], last_payload: bytes | None, start: Ack,
             damaged: Callable[[Damage], bytes | None] | None) -> Iterator[tuple[int, int, bytes]]:
    after_seq = start.last_seq
    if last_payload is not None:
        with contextlib.suppress(Exception):
            after_seq = record_seq(last_payload)
    damage = locate_damage(data, number, region[0], region[1], after_seq)
    if damaged is None:
        raise SpoolCorrupt(damage.describe())
    replacement = damaged(damage)
    if replacement is not None:
        yield number, damage.resume, replacement
