"""The collector: ack after commit, counters balance, acked segments deleted, failures alerted not dropped."""

from __future__ import annotations

import threading

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind, MemorySink
from trustfabric.audit.spool import Spool, read_ack, segment_number, segment_paths


def test_ships_acks_and_counters_balance(tmp_path, sqlite_log) -> None:
    spool_dir = tmp_path / "spool" / "pep-a"
    spool = Spool(spool_dir, "pep-a", segment_bytes=3000)
    for i in range(100):
        spool.emit(Kind.DECISION, decision="allow")
        if i % 10 == 9:
            spool.flush()
    created = len(segment_paths(spool_dir))
    collector = Collector(sqlite_log, tmp_path / "spool", batch=33)
    result = collector.collect_once()
    assert (result.read, result.appended, result.duplicates) == (100, 100, 0)
    c = spool.counters()
    assert c.records_in == c.records_flushed == c.records_shipped == 100
    assert read_ack(spool_dir).last_seq == 100
    ack = read_ack(spool_dir)  # fully shipped segments before the ack's are removed, the rest kept
    assert created > 2 and [segment_number(p) for p in segment_paths(spool_dir)][0] == ack.segment
    assert collector.collect_once().read == 0
    spool.close()
    reopened = Spool(spool_dir, "pep-a")  # sequence survives deleted segments
    assert reopened.emit(Kind.DECISION).seq == 101
    reopened.close()


def test_reshipping_after_lost_ack_is_deduplicated(tmp_path, sqlite_log) -> None:
    spool_dir = tmp_path / "spool" / "pep-a"
    with Spool(spool_dir, "pep-a") as spool:
        for _ in range(40):
            spool.emit(Kind.DECISION)
    Collector(sqlite_log, tmp_path / "spool", delete_acked=False).collect_once()
    (spool_dir / "ack.json").unlink()  # as if killed between the central commit and the ack
    result = Collector(sqlite_log, tmp_path / "spool").collect_once()
    assert (result.read, result.appended, result.duplicates) == (40, 0, 40)
    assert sqlite_log.size == 40


def test_run_loop_alerts_and_keeps_records_on_failure(tmp_path, sqlite_log) -> None:
    spool_dir = tmp_path / "spool" / "pep-a"
    with Spool(spool_dir, "pep-a") as spool:
        for _ in range(5):
            spool.emit(Kind.DECISION)
    sqlite_log.ingest([])  # a working log, then a rogue record that makes pep-a's spool out of order
    from .conftest import payloads
    sqlite_log.ingest(payloads("pep-a", 3, 4))
    alerts = MemorySink()
    collector = Collector(sqlite_log, tmp_path / "spool", alerts=alerts)
    stop = threading.Event()
    stop.set()  # one pass, then stop
    collector.run(stop)
    [alert] = alerts.of_kind(Kind.ALERT)
    assert alert.reason == "audit.log.out_of_order"
    assert read_ack(spool_dir).records == 0  # nothing acknowledged: the records stay in the spool
