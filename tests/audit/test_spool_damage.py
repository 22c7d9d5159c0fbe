"""A damaged spool is never read as a tail still being written: writer, collector and reader all see it.

A flipped byte anywhere - in an earlier segment or the one being written - is found: the
running writer refuses and alerts, the collector ships every intact record before and after
it and names the damaged record (segment and position), and the central log keeps an alert
in its place. A torn tail (what ``kill -9`` mid-write leaves) is still recovered silently.
"""

from __future__ import annotations

import errno
import time

import pytest

from trustfabric.audit.collector import Collector
from trustfabric.audit.damage import losses
from trustfabric.audit.errors import AuditUnavailable, SpoolCorrupt, SpoolError
from trustfabric.audit.events import Kind, MemorySink
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import (DURABILITY_WRITE, FRAME_HEADER, Ack, Spool, encode_frame, is_torn_tail,
                                     locate_damage, read_spool_records, scan_segment, segment_paths, write_ack)
from trustfabric.clock import FakeClock

SOURCE = "pep-a"


def _fill(directory, n, **kw) -> Spool:
    spool = Spool(directory, SOURCE, clock=FakeClock(), **kw)
    for i in range(n):
        spool.emit(Kind.DECISION, action="submit_order", trace_id=f"o{i}")
    spool.flush()
    return spool


def _frame_offsets(path) -> list[int]:
    data = path.read_bytes()
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, pos)[0]
    return offsets


def _flip(path, offset) -> None:
    """Flip one bit in place (a running writer may be reading the file meanwhile)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x01]))


def _flip_record(path, record: int) -> None:
    """Flip one byte inside the payload of the ``record``-th frame (1 = first) of a segment."""
    _flip(path, _frame_offsets(path)[record - 1] + FRAME_HEADER.size + 5)


def _central_seqs(log) -> list[int]:
    return [r.seq for r in log.store.records() if r.source == SOURCE]


# -- the writer ---------------------------------------------------------------------------------


def test_a_running_writer_finds_a_flipped_byte_in_its_own_segment_refuses_and_alerts(tmp_path):
    alerts = MemorySink()
    spool = Spool(tmp_path, SOURCE, clock=FakeClock(), alerts=alerts, durability=DURABILITY_WRITE,
                  sync_interval_s=0.002, scrub_interval_s=0.002)
    for _ in range(200):
        spool.emit(Kind.DECISION)
    spool.flush()
    _flip_record(segment_paths(tmp_path)[0], 120)
    refused = None
    deadline = time.monotonic() + 10  # the syncer thread scrubs on its own; bounded wait
    while refused is None and time.monotonic() < deadline:
        try:
            spool.emit(Kind.DECISION)
            spool.flush()
        except AuditUnavailable as exc:
            refused = exc
        time.sleep(0.005)
    assert refused is not None and refused.reason == "audit.spool.corrupt"
    assert spool.damage is not None and (spool.damage.segment, spool.damage.record) == (1, 120)
    [alert] = alerts.events
    assert alert.kind == Kind.ALERT and alert.reason == "audit.spool.corrupt"
    assert (alert.detail["segment"], alert.detail["record"], alert.detail["after_seq"]) == (1, 120, 119)
    with pytest.raises(AuditUnavailable):
        spool.recover()  # only a reopen may resume
    spool.close()
    assert len(segment_paths(tmp_path)) == 2  # the damaged segment is sealed; a reopen writes a new one


def test_in_fsync_mode_the_background_scrub_finds_it_and_the_next_flush_refuses(tmp_path):
    spool = _fill(tmp_path, 50, scrub_interval_s=0.002)
    _flip_record(segment_paths(tmp_path)[0], 7)
    deadline = time.monotonic() + 10
    while not spool.refusing and time.monotonic() < deadline:  # bounded wait for the scrub thread
        time.sleep(0.005)
    with pytest.raises(AuditUnavailable) as refused:
        spool.emit(Kind.DECISION)
    assert refused.value.reason == "audit.spool.corrupt" and spool.damage.record == 7
    spool.close()


def test_a_whole_scrub_of_an_intact_segment_finds_nothing_across_chunks(tmp_path):
    spool = _fill(tmp_path, 3000, segment_bytes=1 << 30)  # > one 256 KiB scrub chunk
    assert segment_paths(tmp_path)[0].stat().st_size > 300_000
    assert spool.scrub(whole=True) is None and not spool.refusing
    spool.close()


# -- reading and collecting -----------------------------------------------------------------------


def test_collect_ships_every_intact_record_around_damage_in_the_active_segment_and_names_it(tmp_path):
    directory = tmp_path / "spool" / SOURCE
    spool = _fill(directory, 500, scrub_interval_s=None)
    _flip_record(segment_paths(directory)[0], 200)
    log = open_log(tmp_path / "audit")
    collector = Collector(log, tmp_path / "spool")
    collector.collect_once()
    assert _central_seqs(log) == [s for s in range(1, 501) if s != 200]  # before AND after the damage
    [(where, damage)] = collector.damaged
    assert (damage.segment, damage.record, damage.after_seq, damage.next_seq) == (1, 200, 199, 201)
    assert "segment 00000001.seg record 200" in damage.describe()
    assert [line.split(": ", 1)[0] for line in losses(log.store)] == [SOURCE]
    # The running writer finds the damage when it scrubs and refuses; reopened, it writes a new
    # segment. Collecting again ships only what is new; the alert for the damaged record is stored once.
    spool.emit(Kind.DECISION)
    assert spool.scrub(whole=True) is not None
    with pytest.raises(AuditUnavailable):
        spool.flush()
    spool.close()
    assert spool.dropped_on_close == 1  # never acknowledged, and alerted
    spool = Spool(directory, SOURCE, clock=FakeClock())
    for _ in range(5):
        spool.emit(Kind.DECISION)
    spool.flush()
    again = Collector(log, tmp_path / "spool")
    again.collect_once()
    assert _central_seqs(log)[-5:] == list(range(501, 506)) and again.damaged == []
    assert len(losses(log.store)) == 1
    spool.close()
    log.close()


def test_damage_in_an_earlier_segment_ships_the_records_before_and_after_it(tmp_path):
    directory = tmp_path / "spool" / SOURCE
    spool = Spool(directory, SOURCE, clock=FakeClock(), segment_bytes=4000)
    for _ in range(100):
        spool.emit(Kind.DECISION)
        spool.flush()
    spool.close()
    first = segment_paths(directory)[0]
    in_first = len(_frame_offsets(first))
    _flip_record(first, 4)
    log = open_log(tmp_path / "audit")
    collector = Collector(log, tmp_path / "spool")
    collector.collect_once()
    assert _central_seqs(log) == [s for s in range(1, 101) if s != 4]
    [(_, damage)] = collector.damaged
    assert (damage.segment, damage.record) == (1, 4) and in_first > 4
    log.close()


def test_a_strict_reader_refuses_damage_in_the_last_segment_naming_the_record(tmp_path):
    _fill(tmp_path, 20).close()
    _flip_record(segment_paths(tmp_path)[0], 20)  # the very last record: a complete frame with a bad CRC
    with pytest.raises(SpoolCorrupt) as refused:
        list(read_spool_records(tmp_path, Ack()))
    assert "record 20" in str(refused.value) and "after seq 19" in str(refused.value)


def test_a_writer_reopens_a_damaged_last_segment_only_once_the_collector_recorded_the_loss(tmp_path):
    directory = tmp_path / "spool" / SOURCE
    _fill(directory, 20).close()
    _flip_record(segment_paths(directory)[0], 20)
    with pytest.raises(SpoolCorrupt):
        Spool(directory, SOURCE)  # nothing is cut away, nothing written after it
    log = open_log(tmp_path / "audit")
    Collector(log, tmp_path / "spool").collect_once()
    assert _central_seqs(log) == list(range(1, 20)) and len(losses(log.store)) == 1
    reopened = Spool(directory, SOURCE)  # the loss is recorded: a new segment, the sequence goes on
    assert reopened.last_seq == 20 and len(segment_paths(directory)) == 2
    assert reopened.emit(Kind.DECISION).seq == 21
    reopened.close()
    log.close()


def test_a_torn_tail_is_still_no_damage(tmp_path):
    directory = tmp_path / "spool" / SOURCE
    _fill(directory, 10).close()
    with open(segment_paths(directory)[0], "ab") as fh:  # half a frame, as kill -9 mid-write leaves it
        fh.write(b"\x00\x00\x01\x00\xde\xad\xbe\xef" + b"x" * 40)
    log = open_log(tmp_path / "audit")
    collector = Collector(log, tmp_path / "spool")
    collector.collect_once()
    assert _central_seqs(log) == list(range(1, 11)) and collector.damaged == [] and losses(log.store) == []
    reopened = Spool(directory, SOURCE)
    assert reopened.torn_bytes_truncated == 48 and reopened.last_seq == 10
    reopened.close()
    log.close()


def test_a_failing_ack_write_is_a_typed_refusal_and_nothing_is_lost(tmp_path, monkeypatch):
    directory = tmp_path / "spool" / SOURCE
    _fill(directory, 30).close()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SpoolError) as refused:
        write_ack(directory, Ack(1, 10, 1, 1), write=full)
    assert refused.value.reason == "audit.spool.ack_unwritable"
    assert not (directory / "ack.json.tmp").exists()
    log = open_log(tmp_path / "audit")
    with monkeypatch.context() as patch:
        patch.setattr("trustfabric.audit.collector.write_ack", lambda d, a: write_ack(d, a, write=full))
        with pytest.raises(SpoolError):
            Collector(log, tmp_path / "spool").collect_once()
    Collector(log, tmp_path / "spool").collect_once()  # shipped again, stored once
    assert _central_seqs(log) == list(range(1, 31))
    log.close()


# -- torn tail or damage: the pure classification -------------------------------------------------

GOOD = b"".join(encode_frame(b'{"seq": %d}' % i) for i in range(1, 4))


@pytest.mark.parametrize("tail, torn", [
    (b"\x00\x00", True),  # less than a header
    (encode_frame(b"x" * 40)[:20], True),  # a last frame cut short (kill -9 mid-write)
    (b"\x00" * 300, True),  # blocks allocated, never written (OS crash)
    (encode_frame(b"x" * 40)[:-1] + b"y", False),  # complete, bad CRC
    (b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"x" * 10, False),  # a length no frame has
    (encode_frame(b"x" * 40)[:20] + encode_frame(b"z" * 10), False),  # a cut frame with an intact one after it
])
def test_a_torn_tail_is_told_from_damage(tail, torn):
    data = GOOD + tail
    assert is_torn_tail(data, len(GOOD)) is torn
    frames, damaged, end = scan_segment(data, last=True)
    assert len(frames) >= 3
    assert (damaged == []) is torn and (end == len(GOOD) if torn else end == len(data))


@pytest.mark.parametrize("offset", [0, 2, 5, 9, 14])  # the length field, the CRC, the payload
def test_a_flip_anywhere_in_a_frame_costs_that_frame_only(offset):
    frames = [encode_frame(b'{"seq": %d, "pad": "%s"}' % (i, b"p" * i)) for i in range(1, 8)]
    data = bytearray(b"".join(frames))
    at = sum(len(f) for f in frames[:3]) + offset  # inside the 4th frame
    data[at] ^= 0x40
    found, damaged, _ = scan_segment(bytes(data), last=True)
    assert [p for _, p in found] == [f[8:] for i, f in enumerate(frames) if i != 3]
    [(start, resume)] = damaged
    assert (start, resume) == (sum(len(f) for f in frames[:3]), sum(len(f) for f in frames[:4]))
    assert locate_damage(bytes(data), 1, start, resume).record == 4
