"""Tamper evidence: verify names the first bad position for every kind of tampering."""

from __future__ import annotations

import sqlite3

import pytest

from trustfabric.audit import merkle
from trustfabric.audit.errors import TamperDetected
from trustfabric.audit.events import encode_event
from trustfabric.audit.log import DB_FILE, open_log
from trustfabric.audit.treehead import TreeHeadSigner, load_public_key
from trustfabric.audit.verify import verify_log

from .conftest import event, payloads


@pytest.fixture
def built(tmp_path, clock):
    """A log of 60 records from two sources, signed at 20, 40 and 60, plus an unsigned tail of 5."""
    d = tmp_path / "audit"
    log = open_log(d, clock, checkpoint_every=10**9, checkpoint_interval_s=10**9)
    for start in (1, 11, 21):
        log.ingest(payloads("pep-a", start, start + 10) + payloads("pep-b", start, start + 10))
        clock.advance(1)
        log.checkpoint()
    log.ingest(payloads("pep-a", 31, 36))
    log.close()
    return d


def check(d):
    log = open_log(d)
    try:
        return verify_log(log.store, load_public_key(d))
    finally:
        log.close()


def sql(d, statement, *args):
    db = sqlite3.connect(d / DB_FILE)
    with db:
        db.execute(statement, args)
    db.close()


def tampered(d) -> TamperDetected:
    with pytest.raises(TamperDetected) as exc:
        check(d)
    return exc.value


def test_intact_log_verifies_with_unsigned_tail(built) -> None:
    report = check(built)
    assert (report.size, report.signed_size, report.unsigned_tail, report.tree_heads_checked) == (65, 60, 5, 3)


def test_edited_record(built) -> None:
    sql(built, "UPDATE records SET data = replace(data, 'pep-a-7', 'pep-a-X') WHERE idx = 6")
    e = tampered(built)
    assert (e.position, e.reason) == (6, "audit.tamper.edited")


def test_edited_record_with_recomputed_leaf_hash(built) -> None:
    forged = encode_event(event("pep-a", 17, decision="allow"))  # idx 26 holds pep-a seq 17
    sql(built, "UPDATE records SET data = ?, leaf_hash = ? WHERE idx = 26", forged, merkle.leaf_hash(forged))
    e = tampered(built)
    assert (e.position, e.reason) == (20, "audit.tamper.rewritten")  # first index after the last good head


def test_deleted_record(built) -> None:
    sql(built, "DELETE FROM records WHERE idx = 33")
    e = tampered(built)
    assert (e.position, e.reason) == (33, "audit.tamper.deleted")


def test_reordered_records(built) -> None:
    db = sqlite3.connect(built / DB_FILE)
    with db:
        db.execute("UPDATE records SET idx = -1 WHERE idx = 3")
        db.execute("UPDATE records SET idx = 3 WHERE idx = 4")
        db.execute("UPDATE records SET idx = 4 WHERE idx = -1")
    db.close()
    e = tampered(built)
    assert (e.position, e.reason) == (3, "audit.tamper.reordered")


def test_truncated_below_signed_head(built) -> None:
    sql(built, "DELETE FROM records WHERE idx >= 50")
    e = tampered(built)
    assert (e.position, e.reason) == (50, "audit.tamper.truncated")


def test_truncated_tail_only_is_not_an_error(built) -> None:
    sql(built, "DELETE FROM records WHERE idx >= 62")  # unsigned tail: nothing was promised
    assert check(built).size == 62


def test_record_inserted_before_signed_head(built) -> None:
    db = sqlite3.connect(built / DB_FILE)
    with db:
        db.execute("UPDATE records SET idx = idx + 1000 WHERE idx >= 30")
        db.execute("UPDATE records SET idx = idx - 999 WHERE idx >= 1000")
        forged = encode_event(event("pep-c", 1))
        db.execute("INSERT INTO records VALUES (30, 'pep-c', 1, ?, ?, 0, 'decision', '', '', '', '', '')",
                   (merkle.leaf_hash(forged), forged))
    db.close()
    e = tampered(built)
    assert (e.position, e.reason) == (20, "audit.tamper.rewritten")


def test_forged_tree_head(built) -> None:
    sql(built, "UPDATE tree_heads SET root_hash = ? WHERE tree_size = 40", merkle.leaf_hash(b"x").hex())
    e = tampered(built)
    assert (e.position, e.reason) == (40, "audit.tamper.tree_head")


def test_tree_head_signed_by_another_key(built) -> None:
    other = TreeHeadSigner.generate().sign(65, 1, merkle.leaf_hash(b"x"))
    sql(built, "INSERT INTO tree_heads VALUES (?,?,?,?,?)", other.tree_size, other.timestamp_ns, other.root_hash,
        other.log_id, other.signature)
    e = tampered(built)
    assert (e.position, e.reason) == (65, "audit.tamper.tree_head")


def test_records_and_heads_deleted_together_caught_by_a_witnessed_head(built) -> None:
    log = open_log(built)
    witnessed = [h for h in log.store.tree_heads() if h.tree_size == 60]
    log.close()
    sql(built, "DELETE FROM records WHERE idx >= 45")
    sql(built, "DELETE FROM tree_heads WHERE tree_size > 40")
    assert check(built).size == 45  # the store alone cannot tell
    log = open_log(built)
    with pytest.raises(TamperDetected) as exc:
        verify_log(log.store, load_public_key(built), witnessed)
    log.close()
    assert (exc.value.position, exc.value.reason) == (45, "audit.tamper.truncated")
