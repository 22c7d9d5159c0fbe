"""The spool's durability="write" mode and compact decision records.

One write() per batch and no fsync on the caller's path; a background syncer fsyncs;
a failing fsync refuses like a failing write; compact records share the spool's one
sequence with full events and expand into the same AuditEventV1.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from trustfabric.audit.compact import canonical, expand_event, is_compact, record_seq
from trustfabric.audit.errors import AuditError, AuditUnavailable, SpoolError
from trustfabric.audit.events import Kind, MemorySink, decode_event
from trustfabric.audit.spool import DURABILITY_WRITE, Ack, Spool, read_spool_records
from trustfabric.clock import FakeClock

ROW = ("spiffe://prod.acme/algo/momentum", "submit_order", "risk/orders", True, "enforcement.allow", 4,
       ["floor.algo"], "ord-1", "ff" * 32, 12, 1_790_000_000.25, 2500.0, "AAPL")


def test_write_mode_one_write_no_fsync_on_the_callers_path(tmp_path) -> None:
    writes, syncs = [], []
    gate = threading.Event()

    def write(fd, data):
        writes.append(len(data))
        return os.write(fd, data)

    def fsync(fd):
        syncs.append(fd)
        os.fsync(fd)
        gate.set()

    spool = Spool(tmp_path, "pep-a", clock=FakeClock(), write=write, fsync=fsync, durability=DURABILITY_WRITE,
                  sync_interval_s=3600)  # the syncer does not run during the test
    spool.emit(Kind.SESSION_OPEN, principal="p")
    last = spool.write_decisions([ROW] * 5, 1_790_000_000_000_000_000)
    assert last == 6 and len(writes) == 1 and syncs == []
    assert spool.synced_seq == 0
    assert spool.sync() == 6 and len(syncs) == 1 and spool.synced_seq == 6
    assert spool.sync() == 6 and len(syncs) == 1  # nothing new: no fsync
    spool.close()
    payloads = [p for _, _, p in read_spool_records(tmp_path, Ack())]
    assert [record_seq(p) for p in payloads] == [1, 2, 3, 4, 5, 6]
    assert not is_compact(payloads[0]) and all(is_compact(p) for p in payloads[1:])


def test_background_syncer_fsyncs_written_batches(tmp_path) -> None:
    synced = threading.Event()

    def fsync(fd):
        os.fsync(fd)
        synced.set()

    with Spool(tmp_path, "pep-a", fsync=fsync, durability=DURABILITY_WRITE, sync_interval_s=0.002) as spool:
        spool.write_decisions([ROW], 1)
        assert synced.wait(5)
        for _ in range(500):  # bounded: the syncer runs every 2 ms
            if spool.synced_seq == 1:
                break
            synced.clear()
            synced.wait(0.05)
        assert spool.synced_seq == 1 and spool.syncs >= 1


def test_failing_background_fsync_refuses_new_work_and_alerts(tmp_path) -> None:
    alerts = MemorySink()
    failed = threading.Event()

    def fsync(fd):
        failed.set()
        raise OSError(errno.EIO, "I/O error")

    spool = Spool(tmp_path, "pep-a", fsync=fsync, durability=DURABILITY_WRITE, sync_interval_s=0.002, alerts=alerts)
    spool.write_decisions([ROW], 1)
    assert failed.wait(5)
    for _ in range(500):
        if spool.refusing:
            break
        failed.clear()
        failed.wait(0.05)
    assert spool.refusing
    with pytest.raises(AuditUnavailable):
        spool.write_decisions([ROW], 2)
    with pytest.raises(AuditUnavailable):
        spool.emit(Kind.DECISION, decision="allow")
    assert [a.kind for a in alerts.events] == [Kind.ALERT]
    with pytest.raises(AuditUnavailable):
        spool.recover()  # what the kernel held may be gone: only a reopen resumes


def test_refusing_spool_takes_no_compact_rows(tmp_path) -> None:
    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = Spool(tmp_path, "pep-a", write=write, durability=DURABILITY_WRITE, sync_interval_s=3600)
    with pytest.raises(AuditUnavailable):
        spool.write_decisions([ROW], 1)
    assert spool.last_seq == 1 and spool.counters().buffered == 1  # held, not dropped
    with pytest.raises(AuditUnavailable):
        spool.write_decisions([ROW], 2)
    assert spool.last_seq == 1  # refused whole: no sequence number given


def test_partial_write_that_cannot_be_undone_refuses(tmp_path, monkeypatch) -> None:
    """A torn frame left in the segment would hide every later record from the collector:
    the spool refuses instead of writing the batch again after it."""
    def write(fd, data):
        return os.write(fd, data[:5])  # a short write

    def ftruncate(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    alerts = MemorySink()
    spool = Spool(tmp_path, "pep-a", write=write, durability=DURABILITY_WRITE, sync_interval_s=3600,
                  alerts=alerts)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with pytest.raises(AuditUnavailable):
        spool.write_decisions([ROW], 1)
    monkeypatch.undo()
    assert spool.refusing and spool.counters().buffered == 1  # held, not dropped
    assert [a.kind for a in alerts.events] == [Kind.ALERT]
    with pytest.raises(AuditUnavailable):
        spool.recover()  # only a reopen (which cuts the torn tail) may resume
    assert (tmp_path / "00000001.seg").stat().st_size == 5  # nothing written after the torn bytes


def test_bad_durability_mode_refused(tmp_path) -> None:
    with pytest.raises(SpoolError):
        Spool(tmp_path, "pep-a", durability="maybe")
    with pytest.raises(SpoolError):
        Spool(tmp_path, "pep-a", durability=DURABILITY_WRITE, sync_interval_s=0)


def test_compact_record_expands_into_the_full_event(tmp_path) -> None:
    with Spool(tmp_path, "pep-a", durability=DURABILITY_WRITE) as spool:
        spool.write_decisions([ROW, ROW[:3] + (False, "enforcement.rate") + ROW[5:9] + (None, 1.5, 0.0, None)], 77)
    compact = [p for _, _, p in read_spool_records(tmp_path, Ack())]
    allow, deny = (decode_event(canonical(p)) for p in compact)
    assert allow == expand_event(compact[0])
    assert (allow.kind, allow.source, allow.seq, allow.time_ns) == (Kind.DECISION, "pep-a", 1, 77)
    assert (allow.principal, allow.action, allow.resource, allow.decision, allow.reason) == (
        ROW[0], "submit_order", "risk/orders", "allow", "enforcement.allow")
    assert allow.policy_ids == ("floor.algo",) and allow.epoch == 4 and allow.trace_id == "ord-1"
    assert allow.detail == {"decided_at": 1_790_000_000.25, "notional": 2500.0, "symbol": "AAPL", "session": 12}
    assert deny.decision == "deny" and deny.detail == {"decided_at": 1.5} and deny.seq == 2


@pytest.mark.parametrize("garbage", [b"\x93\xa2d1\x01\x02", b"\x96\xa2zz\xa1s\xa1p\x01\x01\x90", b"\xdc\x00\x01\xc1"])
def test_malformed_compact_records_are_refused(garbage) -> None:
    assert is_compact(garbage)
    with pytest.raises(AuditError):
        canonical(garbage)
