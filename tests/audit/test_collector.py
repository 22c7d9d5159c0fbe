"""The collector: ack after commit, counters balance, acked segments deleted, failures alerted not dropped."""

from __future__ import annotations

import threading

import pytest

from trustfabric.audit.collector import Collector, PeriodicCollector, unshipped
from trustfabric.audit.errors import SpoolCorrupt
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool, read_ack, segment_number, segment_paths
from trustfabric.audit.treehead import load_or_create_signer, load_public_key, log_id_of
from trustfabric.audit.verify import verify_log


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
    collector = Collector(sqlite_log, tmp_path / "spool", alerts=Emitter("audit-collector", alerts))
    stop = threading.Event()
    stop.set()  # one pass, then stop
    collector.run(stop)
    [alert] = alerts.of_kind(Kind.ALERT)
    assert alert.reason == "audit.log.out_of_order"
    assert read_ack(spool_dir).records == 0  # nothing acknowledged: the records stay in the spool


ALGO = "spiffe://prod.acme.example/algo/momentum"


def _row(allowed: bool, reason: str = "") -> tuple:
    return (ALGO, "submit_order", "risk/orders", allowed, reason, 1, ["p1"], "C1", "ff", None, 0.0, 100.0, "AAPL")


def test_a_pass_flushes_in_process_spools_and_hands_over_every_decision_in_time_order(tmp_path, sqlite_log) -> None:
    plane = Spool(tmp_path / "spool" / "control-plane", "control-plane")  # buffers until flushed
    plane.emit(Kind.TOKEN_ISSUED, principal=ALGO)
    plane.emit(Kind.DECISION, principal=ALGO, action="connect", resource="risk", decision="deny")
    pep = Spool(tmp_path / "spool" / "pre-trade-risk", "pre-trade-risk", durability="write")
    pep.write_decisions([_row(True), _row(True)], time_ns=3_000)
    pep.write_decisions([_row(False, "pep.rate")], time_ns=1_000)  # shipped after, decided before
    handed: list = []
    collector = Collector(sqlite_log, tmp_path / "spool", flush_first=[plane.flush], on_decisions=handed.extend)
    result = collector.collect_once()
    assert sqlite_log.size == 5 and result.decisions == 4
    assert sorted((e.source, e.decision) for e in handed) == [
        ("control-plane", "deny"), ("pre-trade-risk", "allow"), ("pre-trade-risk", "allow"), ("pre-trade-risk", "deny")]
    assert [e.time_ns for e in handed] == sorted(e.time_ns for e in handed)
    assert collector.collect_once().decisions == 0  # each record handed over once
    plane.close()
    pep.close()


def test_one_unreadable_spool_does_not_hold_back_the_others_and_the_pass_still_fails(tmp_path, sqlite_log) -> None:
    with Spool(tmp_path / "spool" / "a-broken", "a-broken") as broken:
        broken.emit(Kind.DECISION)
    (tmp_path / "spool" / "a-broken" / "ack.json").write_text("{not json")
    with Spool(tmp_path / "spool" / "b-good", "b-good") as good:
        for _ in range(3):
            good.emit(Kind.DECISION)
    collector = Collector(sqlite_log, tmp_path / "spool")
    with pytest.raises(SpoolCorrupt):
        collector.collect_once()
    assert sqlite_log.size == 3 and read_ack(tmp_path / "spool" / "b-good").records == 3


def test_a_failing_observer_is_alerted_once_and_loses_no_record(tmp_path, sqlite_log) -> None:
    def broken(events) -> None:
        raise RuntimeError("baseline down")

    alerts = MemorySink()
    collector = Collector(sqlite_log, tmp_path / "spool", on_decisions=broken,
                          alerts=Emitter("audit-collector", alerts))
    for round_ in range(3):
        with Spool(tmp_path / "spool" / "pep", "pep") as spool:
            spool.emit(Kind.DECISION, decision="allow")
        assert collector.collect_reporting() is not None
    assert sqlite_log.size == 3 and collector.observer_errors == 3
    assert [a.reason for a in alerts.of_kind(Kind.ALERT)] == ["audit.collector.observer_failed"]


def test_run_ends_with_a_last_pass_and_a_head_signed_over_the_whole_log(tmp_path, sqlite_log) -> None:
    with Spool(tmp_path / "spool" / "pep", "pep") as spool:
        for _ in range(7):  # fewer than checkpoint_every: no head would be due
            spool.emit(Kind.DECISION)
    stop = threading.Event()
    stop.set()  # the writers stopped: the last pass ships everything, then signs
    Collector(sqlite_log, tmp_path / "spool").run(stop)
    report = verify_log(sqlite_log.store, sqlite_log.signer.public_key)
    assert (report.size, report.signed_size, report.unsigned_tail) == (7, 7, 0)


def test_unshipped_counts_what_spools_hold_and_the_log_does_not(tmp_path, sqlite_log) -> None:
    with Spool(tmp_path / "spool" / "pep", "pep", durability="write") as spool:
        spool.emit(Kind.DECISION)
        spool.write_decisions([_row(True), _row(False)], time_ns=5)
    assert unshipped(tmp_path / "spool", sqlite_log.store) == {"pep": 3}
    Collector(sqlite_log, tmp_path / "spool", delete_acked=False).collect_once()
    assert unshipped(tmp_path / "spool", sqlite_log.store) == {}
    (tmp_path / "spool" / "pep" / "ack.json").unlink()  # an ack lost after the central commit: still shipped
    assert unshipped(tmp_path / "spool", sqlite_log.store) == {}


def test_the_periodic_collector_signs_checkpoints_while_records_arrive_and_ships_all_at_stop(tmp_path) -> None:
    logs = []

    def open_run_log():
        logs.append(open_log(tmp_path / "audit", checkpoint_interval_s=0.0))
        return logs[-1]

    collector = PeriodicCollector(open_run_log, tmp_path / "spool", interval_s=0.01).start()
    reader = open_log(tmp_path / "audit")
    spool = Spool(tmp_path / "spool" / "pep", "pep")
    sizes = []
    try:
        for round_ in range(1, 4):
            for _ in range(5):
                spool.emit(Kind.DECISION)
            spool.flush()
            for _ in range(2000):  # bounded: until the running collector signed a head over this round
                heads = reader.store.tree_heads()
                if heads and heads[-1].tree_size == 5 * round_:
                    break
                threading.Event().wait(0.01)
            sizes.append(reader.store.tree_heads()[-1].tree_size)
        spool.emit(Kind.DECISION)  # written last, buffered: shipped by the last pass after stop
    finally:
        spool.close()
        assert collector.stop(30.0)
    assert sizes == [5, 10, 15]
    report = verify_log(reader.store, reader.signer.public_key)
    assert (report.size, report.unsigned_tail) == (16, 0) and collector.collected == 16 and not collector.error
    assert unshipped(tmp_path / "spool", reader.store) == {}
    reader.close()


def test_a_log_that_cannot_be_opened_is_alerted_retried_and_the_alert_is_shipped_later(tmp_path) -> None:
    attempts = []

    def flaky_open():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk not mounted yet")
        return open_log(tmp_path / "audit")

    collector = PeriodicCollector(flaky_open, tmp_path / "spool", interval_s=0.01).start()
    for _ in range(2000):  # bounded: until the retry opened the log
        if collector.collector is not None:
            break
        threading.Event().wait(0.01)
    assert collector.stop(30.0) and len(attempts) == 2
    log = open_log(tmp_path / "audit")
    [alert] = [r.event() for r in log.store.records() if r.kind == Kind.ALERT]
    assert alert.source == "audit-collector" and alert.reason == "audit.collector.failed"
    assert "disk not mounted yet" in alert.detail["error"]
    log.close()


def test_two_openers_at_once_share_one_signing_key(tmp_path) -> None:
    for n in range(10):
        directory = tmp_path / f"audit-{n}"
        barrier = threading.Barrier(2)
        signers = []

        def open_() -> None:
            barrier.wait()
            signers.append(load_or_create_signer(directory))

        threads = [threading.Thread(target=open_) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ids = {log_id_of(s.public_key) for s in signers}
        assert len(signers) == 2 and ids == {log_id_of(load_public_key(directory))}
