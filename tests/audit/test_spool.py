"""The local spool: group commit, torn-tail recovery, rotation, sequence continuity, refusing state."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from trustfabric.audit.errors import AuditUnavailable, SpoolCorrupt, SpoolError
from trustfabric.audit.events import Emitter, Kind, MemorySink, decode_event
from trustfabric.audit.spool import Ack, Spool, read_spool_records, segment_paths
from trustfabric.clock import FakeClock


def payload_seqs(directory) -> list[int]:
    return [decode_event(p).seq for _, _, p in read_spool_records(directory, Ack())]


def test_group_commit_one_write_and_one_fsync_per_batch(tmp_path) -> None:
    writes, syncs = [], []

    def write(fd, data):
        writes.append(len(data))
        return os.write(fd, data)

    def fsync(fd):
        syncs.append(fd)
        os.fsync(fd)

    spool = Spool(tmp_path, "pep-a", clock=FakeClock(), write=write, fsync=fsync)
    for i in range(100):
        spool.emit(Kind.DECISION, action="submit_order", decision="allow", trace_id=f"o{i}")
    assert writes == [] and spool.records_flushed == 0
    assert spool.flush() == 100
    assert len(writes) == 1 and len(syncs) == 1
    with spool.commit():
        spool.emit(Kind.DECISION, decision="deny")
    assert spool.records_flushed == 101 and len(syncs) == 2
    spool.close()
    assert payload_seqs(tmp_path) == list(range(1, 102))


def test_torn_tail_truncated_and_sequence_continues(tmp_path) -> None:
    with Spool(tmp_path, "pep-a") as spool:
        for _ in range(10):
            spool.emit(Kind.DECISION)
    seg = segment_paths(tmp_path)[-1]
    good_size = seg.stat().st_size
    with open(seg, "ab") as fh:  # half a frame, as a kill -9 mid-write leaves it
        fh.write(b"\x00\x00\x01\x00\xde\xad")
    spool = Spool(tmp_path, "pep-a")
    assert spool.torn_bytes_truncated == 6 and seg.stat().st_size == good_size
    assert spool.last_seq == 10
    assert spool.emit(Kind.DECISION).seq == 11
    spool.close()
    assert payload_seqs(tmp_path) == list(range(1, 12))


def test_corruption_followed_by_intact_records_is_not_truncated(tmp_path) -> None:
    with Spool(tmp_path, "pep-a") as spool:
        for _ in range(10):
            spool.emit(Kind.DECISION)
    seg = segment_paths(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # bit rot inside the first record; nine intact records follow
    seg.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt):
        Spool(tmp_path, "pep-a")
    assert seg.stat().st_size == len(data)  # nothing was cut away


def test_rotation_and_emitter_start_seq(tmp_path) -> None:
    with Spool(tmp_path, "pep-a", segment_bytes=2000) as spool:
        emitter = Emitter("pep-a", spool, FakeClock(), start_seq=spool.emitter_start_seq())
        for _ in range(5):
            for _ in range(10):
                emitter.emit(Kind.DECISION, principal="spiffe://prod.acme/algo/momentum")
            spool.flush()
    assert len(segment_paths(tmp_path)) > 2
    reopened = Spool(tmp_path, "pep-a")
    assert reopened.last_seq == 50
    reopened.close()
    assert payload_seqs(tmp_path) == list(range(1, 51))


def test_out_of_order_and_foreign_source_refused(tmp_path) -> None:
    spool = Spool(tmp_path, "pep-a")
    spool.emit(Kind.DECISION)
    other = Emitter("pep-b", MemorySink()).emit(Kind.DECISION)
    with pytest.raises(SpoolError) as exc:
        spool.append(other)
    assert exc.value.reason == "audit.spool.wrong_source"
    stale = Emitter("pep-a", MemorySink()).emit(Kind.DECISION)  # seq 1 again
    with pytest.raises(SpoolError) as exc:
        spool.append(stale)
    assert exc.value.reason == "audit.spool.out_of_order"
    spool.close()


def test_corruption_before_a_later_segment_is_refused(tmp_path) -> None:
    with Spool(tmp_path, "pep-a", segment_bytes=500) as spool:
        for _ in range(20):
            spool.emit(Kind.DECISION)
            spool.flush()
    first = segment_paths(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[12] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt):
        list(read_spool_records(tmp_path, Ack()))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_write_failure_refuses_new_work_alerts_and_keeps_records(tmp_path, code) -> None:
    failing = {"on": False}

    def write(fd, data):
        if failing["on"]:
            raise OSError(code, os.strerror(code))
        return os.write(fd, data)

    alerts = MemorySink()
    spool = Spool(tmp_path, "pep-a", alerts=alerts, write=write)
    spool.emit(Kind.DECISION)
    spool.flush()
    failing["on"] = True
    spool.emit(Kind.DECISION, trace_id="held")
    with pytest.raises(AuditUnavailable):
        spool.flush()
    assert spool.refusing
    with pytest.raises(AuditUnavailable):  # callers must refuse new work
        spool.emit(Kind.DECISION)
    with pytest.raises(AuditUnavailable):
        spool.flush()
    [alert] = alerts.of_kind(Kind.ALERT)
    assert alert.reason == "audit.unavailable" and alert.detail["held_records"] == 1
    assert spool.counters().buffered == 1  # never dropped
    failing["on"] = False  # the operator frees space
    assert spool.recover() == 1
    assert not spool.refusing
    spool.emit(Kind.DECISION)
    spool.close()
    assert payload_seqs(tmp_path) == [1, 2, 3]


def test_hung_sink_times_out_into_refusing(tmp_path) -> None:
    release = threading.Event()
    hang = {"on": False}

    def write(fd, data):
        if hang["on"]:
            release.wait(5)
        return os.write(fd, data)

    alerts = MemorySink()
    spool = Spool(tmp_path, "pep-a", alerts=alerts, write=write, flush_timeout_s=0.05)
    hang["on"] = True
    spool.emit(Kind.DECISION)
    with pytest.raises(AuditUnavailable):
        spool.flush()
    assert spool.refusing and alerts.of_kind(Kind.ALERT)
    with pytest.raises(AuditUnavailable):  # a write may still land: only a reopen resumes
        spool.recover()
    release.set()
    spool.close()


def test_bounded_buffer_applies_backpressure(tmp_path) -> None:
    spool = Spool(tmp_path, "pep-a", max_buffer=8)
    for _ in range(20):
        spool.emit(Kind.DECISION)
        assert spool.counters().buffered <= 8
    assert spool.records_flushed == 16
    c = spool.counters()
    assert (c.records_in, c.records_flushed + c.buffered) == (20, 20)
    spool.close()


def test_close_while_refusing_writes_the_held_records_once_the_cause_is_gone(tmp_path) -> None:
    failing = {"on": True}

    def write(fd, data):
        if failing["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    spool = Spool(tmp_path, "pep-a", alerts=MemorySink(), write=write)
    spool.emit(Kind.DECISION, trace_id="held")
    spool.emit(Kind.DECISION, trace_id="held too")
    with pytest.raises(AuditUnavailable):
        spool.flush()
    assert spool.refusing
    failing["on"] = False  # space freed, but nobody called recover() before shutdown
    spool.close()
    assert spool.dropped_on_close == 0
    assert payload_seqs(tmp_path) == [1, 2]


def test_close_while_still_refusing_counts_and_alerts_the_dropped_records(tmp_path) -> None:
    def write(fd, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    alerts = MemorySink()
    spool = Spool(tmp_path, "pep-a", alerts=alerts, write=write)
    spool.emit(Kind.DECISION)
    spool.emit(Kind.DECISION)
    with pytest.raises(AuditUnavailable):
        spool.flush()
    spool.close()
    assert spool.dropped_on_close == 2
    dropped = [a for a in alerts.of_kind(Kind.ALERT) if a.reason == "audit.spool.dropped_on_close"]
    assert len(dropped) == 1 and dropped[0].detail["dropped_records"] == 2
    assert (dropped[0].detail["first_seq"], dropped[0].detail["last_seq"]) == (1, 2)
    assert payload_seqs(tmp_path) == []
