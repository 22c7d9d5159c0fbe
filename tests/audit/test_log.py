"""The central log: dedupe, ordering, checkpoints, proofs a third party can check, queries."""

from __future__ import annotations

import pytest

from trustfabric.audit import merkle
from trustfabric.audit.errors import ProofError, SpoolError, TreeHeadError
from trustfabric.audit.events import Emitter, Kind
from trustfabric.audit.log import Query, open_log
from trustfabric.audit.treehead import TreeHead, load_public_key, verify_tree_head

from .conftest import payloads


@pytest.fixture(params=["sqlite", "memory"])
def log(request, sqlite_log, memory_log):
    return sqlite_log if request.param == "sqlite" else memory_log


def test_ingest_dedupes_on_source_and_seq(log) -> None:
    assert log.ingest(payloads("pep-a", 1, 6)) == 5
    assert log.ingest(payloads("pep-a", 3, 9)) == 3  # 3..5 re-shipped, 6..8 new
    assert log.ingest(payloads("pep-b", 1, 3) + payloads("pep-b", 1, 3)) == 2
    assert log.size == 10
    assert [r.seq for r in log.query(Query(principal=None)) if r.source == "pep-a"] == list(range(1, 9))


def test_log_is_an_event_sink_for_sources_without_a_spool(log, clock) -> None:
    ca = Emitter("ca-prod", log, clock)
    ca.emit(Kind.CERT_ISSUED, principal="spiffe://prod.acme/risk/risk-engine")
    ca.emit(Kind.CERT_REVOKED, principal="spiffe://prod.acme/risk/risk-engine")
    assert [r.kind for r in log.query(Query(principal="spiffe://prod.acme/risk/risk-engine"))] == [
        Kind.CERT_ISSUED, Kind.CERT_REVOKED]


def test_out_of_order_is_refused_not_dropped(log) -> None:
    log.ingest(payloads("pep-a", 1, 3) + payloads("pep-a", 5, 6))
    with pytest.raises(SpoolError) as exc:
        log.ingest(payloads("pep-a", 4, 5))
    assert exc.value.reason == "audit.log.out_of_order"
    assert log.size == 3


def test_checkpoints_every_n_records_and_on_demand(log, clock) -> None:
    log.ingest(payloads("pep-a", 1, 25))
    heads = log.store.tree_heads()
    assert [h.tree_size for h in heads] == [24]  # the first head is due at once, then every 10
    log.ingest(payloads("pep-a", 25, 30))
    assert log.latest_tree_head().tree_size == 24
    clock.advance(3601)
    log.ingest(payloads("pep-a", 30, 31))  # the interval has passed
    assert log.latest_tree_head().tree_size == 30
    log.ingest(payloads("pep-a", 31, 33))
    head = log.checkpoint()
    assert head.tree_size == 32 and head.root == log.root()
    verify_tree_head(head, log.signer.public_key)


def test_forged_tree_head_signature_refused(log) -> None:
    log.ingest(payloads("pep-a", 1, 5))
    head = log.checkpoint()
    forged = TreeHead(tree_size=head.tree_size, timestamp_ns=head.timestamp_ns,
                      root_hash=merkle.leaf_hash(b"x").hex(), log_id=head.log_id, signature=head.signature)
    with pytest.raises(TreeHeadError):
        verify_tree_head(forged, log.signer.public_key)


def test_inclusion_and_consistency_proofs_check_with_merkle_alone(log) -> None:
    log.ingest(payloads("pep-a", 1, 14))
    old = log.checkpoint()
    log.ingest(payloads("pep-a", 14, 38))
    new = log.checkpoint()
    for index in (0, 7, 13, 20, 36):
        p = log.prove_inclusion(index)
        merkle.verify_inclusion(merkle.leaf_hash(p["leaf_data"].encode()), p["index"], p["tree_size"],
                                [bytes.fromhex(h) for h in p["proof"]], bytes.fromhex(p["root_hash"]))
    c = log.prove_consistency(old.tree_size)
    merkle.verify_consistency(c["old_size"], c["new_size"], [bytes.fromhex(h) for h in c["proof"]],
                              old.root, new.root)
    with pytest.raises(ProofError):
        log.prove_consistency(15)  # no signed head of that size
    with pytest.raises(ProofError):
        log.prove_inclusion(37)


def test_query_by_principal_trace_decision_action_time(log) -> None:
    log.ingest(payloads("pep-a", 1, 4, principal="spiffe://prod.acme/algo/a", decision="allow",
                        action="submit_order", trace_id="ord-1"))
    log.ingest(payloads("pep-b", 1, 3, principal="user:alice", decision="deny", action="halt"))
    assert len(log.query(Query(principal="user:alice"))) == 2
    assert len(log.query(Query(trace_id="ord-1"))) == 3
    assert len(log.query(Query(decision="deny", action="halt"))) == 2
    since = 1_790_000_000_000_000_000 + 2 * 1_000_000
    assert len(log.query(Query(since_ns=since))) == 3  # seq 2,3 of pep-a, seq 2 of pep-b


def test_reopen_keeps_root_and_key(tmp_path, clock) -> None:
    d = tmp_path / "audit"
    log = open_log(d, clock)
    log.ingest(payloads("pep-a", 1, 100))
    root, head = log.root(), log.checkpoint()
    log.close()
    again = open_log(d, clock)
    assert again.root() == root and again.size == 99
    verify_tree_head(head, load_public_key(d))
    assert again.ingest(payloads("pep-a", 50, 101)) == 1
    assert oct((d / "tree_head.key").stat().st_mode & 0o777) == "0o600"
    again.close()
