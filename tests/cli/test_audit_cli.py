"""``trustfabric audit ...`` end to end over a real home directory: collect, verify, prove, query, report."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from trustfabric.audit import merkle
from trustfabric.audit.events import AuditEventV1, Kind, encode_event
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool
from trustfabric.cli import app

runner = CliRunner()
ALGO = "spiffe://prod.acme.example/algo/momentum"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    with Spool(tmp_path / "spool" / "pep-risk", "pep-risk") as spool:
        for i in range(30):
            spool.emit(Kind.DECISION, principal=ALGO, action="submit_order", resource="risk/orders",
                       decision="allow" if i % 3 else "deny", reason="" if i % 3 else "risk.notional",
                       trace_id=f"ord-{i % 5}")
        spool.emit(Kind.DECISION, principal=ALGO, action="connect", resource="settlement/treasury",
                   segment="settlement", decision="deny", reason="policy.lateral")
        spool.emit(Kind.USER_MFA, principal="user:alice", decision="allow")
        spool.emit(Kind.DECISION, principal="user:alice", action="halt", resource="market/kill-switch", decision="allow")
        spool.emit(Kind.DECISION, principal="user:bob", action="read_positions", resource="risk/positions", decision="allow")
        spool.emit(Kind.ALERT, principal=ALGO, reason="response.lateral_movement", detail={"incident": "inc-1", "ttd_ms": 12.5})
        spool.emit(Kind.CONTAINMENT, principal=ALGO, detail={"incident": "inc-1", "ttc_ms": 140.0})
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, ["audit", *args], catch_exceptions=False)


def test_collect_checkpoint_verify_prove_consistency(home, tmp_path) -> None:
    assert invoke("collect").exit_code == 0
    first = invoke("checkpoint", "--export", "-")
    assert first.exit_code == 0
    head1 = json.loads(first.stdout)
    assert head1["tree_size"] == 36 and head1["public_key"]
    ok = invoke("verify")
    assert ok.exit_code == 0 and "intact" in ok.stdout

    proof = json.loads(invoke("prove", "5").stdout)
    merkle.verify_inclusion(merkle.leaf_hash(proof["leaf_data"].encode()), proof["index"], proof["tree_size"],
                            [bytes.fromhex(h) for h in proof["proof"]], bytes.fromhex(proof["root_hash"]))

    with Spool(home / "spool" / "pep-risk", "pep-risk") as spool:
        for _ in range(7):
            spool.emit(Kind.DECISION)
    invoke("collect")
    invoke("checkpoint")
    c = json.loads(invoke("consistency", "36").stdout)
    merkle.verify_consistency(c["old_size"], c["new_size"], [bytes.fromhex(h) for h in c["proof"]],
                              bytes.fromhex(c["old_root"]), bytes.fromhex(c["new_root"]))
    assert invoke("consistency", "35").exit_code == 2  # no signed head of that size


def test_verify_refuses_tampered_log_naming_position(home) -> None:
    invoke("collect")
    invoke("checkpoint")
    db = sqlite3.connect(home / "audit" / "audit.db")
    with db:
        db.execute("DELETE FROM records WHERE idx = 4")
    db.close()
    bad = invoke("verify", str(home / "audit"))
    assert bad.exit_code == 3
    assert "audit.tamper.deleted" in bad.stderr and "position 4" in bad.stderr


def test_verify_with_witnessed_head_catches_rollback(home, tmp_path) -> None:
    invoke("collect")
    witness = tmp_path / "witness.json"
    assert invoke("checkpoint", "--export", str(witness)).exit_code == 0
    db = sqlite3.connect(home / "audit" / "audit.db")
    with db:
        db.execute("DELETE FROM records WHERE idx >= 30")
        db.execute("DELETE FROM tree_heads")
    db.close()
    assert invoke("verify").exit_code == 0  # nothing in the store contradicts it
    bad = invoke("verify", "--head", str(witness))
    assert bad.exit_code == 3 and "audit.tamper.truncated" in bad.stderr
    witness.write_text("{}")
    assert invoke("verify", "--head", str(witness)).exit_code == 2


def test_verify_a_demo_run_by_name_latest_or_path_and_refuse_a_tampered_or_missing_run(home) -> None:
    import os
    import shutil

    assert invoke("verify", "--run", "latest").exit_code == 2  # no floor-* run yet
    invoke("collect")
    invoke("checkpoint")
    older, newer = home / "floor-older", home / "floor-newer"
    for run in (older, newer):
        shutil.copytree(home / "audit", run / "audit")
    os.utime(older / "audit" / "audit.db", (1, 1))
    db = sqlite3.connect(older / "audit" / "audit.db")
    with db:
        db.execute("DELETE FROM records WHERE idx = 2")
    db.close()
    os.utime(older / "audit" / "audit.db", (1, 1))  # still the older run
    latest = invoke("verify", "--run", "latest")
    assert latest.exit_code == 0 and "intact" in latest.stdout
    assert invoke("verify", "--run", "floor-newer").exit_code == 0
    bad = invoke("verify", "--run", str(older))
    assert bad.exit_code == 3 and "audit.tamper" in bad.stderr
    missing = invoke("verify", "--run", "floor-none")
    assert missing.exit_code == 2 and "audit.run.missing" in missing.stderr
    assert invoke("verify", str(home / "audit"), "--run", "latest").exit_code == 2  # one or the other


def test_verify_without_log_fails(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    assert invoke("verify").exit_code == 2


def test_query_by_trace_and_principal(home) -> None:
    invoke("collect")
    out = invoke("query", "--trace", "ord-2", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 6 and {r["trace_id"] for r in rows} == {"ord-2"}
    denies = invoke("query", "--principal", ALGO, "--decision", "deny", "--json").stdout.splitlines()
    assert len(denies) == 11
    table = invoke("query", "--action", "halt")
    assert table.exit_code == 0 and "1 audit records" in table.stdout
    assert invoke("query", "--since", "not-a-time").exit_code == 2


@pytest.mark.parametrize("framework", ["nydfs500", "regsci", "15c3-5"])
def test_report_for_each_framework(home, tmp_path, framework) -> None:
    invoke("collect")
    invoke("checkpoint")
    out = tmp_path / "reports"
    result = invoke("report", "--framework", framework, "--out", str(out))
    assert result.exit_code == 0
    md = (out / f"{framework}.md").read_text()
    html = (out / f"{framework}.html").read_text()
    assert "Verified intact" in md and "<table>" in html
    if framework == "nydfs500":
        assert "coverage 50.0%" in md and "user:bob" in md  # bob accessed without MFA
        assert "settlement/treasury" in md  # the lateral movement attempt
        assert "| inc-1 |" in md and "12.5" in md and "140.0" in md
    if framework == "15c3-5":
        assert "risk.notional" in md and "### Order ord-0" in md


def test_report_rejects_unknown_framework(home, tmp_path) -> None:
    invoke("collect")
    assert invoke("report", "--framework", "sox", "--out", str(tmp_path)).exit_code == 2


def test_collect_signs_and_verify_require_signed_fails_over_an_unsigned_tail_until_signed(home) -> None:
    assert invoke("collect").exit_code == 0
    assert invoke("verify", "--require-signed").exit_code == 0  # collect signed what it shipped
    log = open_log(home / "audit")  # a writer that ingested without signing (no head due yet)
    log.ingest([encode_event(AuditEventV1(event_id=f"w-{s}", source="writer", seq=s, time_ns=s, kind=Kind.DECISION))
                for s in (1, 2, 3)])
    log.close()
    plain = invoke("verify")
    assert plain.exit_code == 0 and "intact" in plain.stdout and "3 records beyond the last signed tree head" in plain.stdout
    strict = invoke("verify", "--require-signed")
    assert strict.exit_code == 4 and "audit.verify.unsigned_tail" in strict.stderr and "intact" not in strict.stdout
    assert invoke("checkpoint").exit_code == 0
    signed = invoke("verify", "--require-signed")
    assert signed.exit_code == 0 and "0 records beyond the last signed tree head" in signed.stdout


def test_verify_is_never_intact_over_records_still_in_a_spool(home) -> None:
    assert invoke("collect").exit_code == 0
    with Spool(home / "spool" / "control-plane", "control-plane") as spool:  # written after the last collect
        spool.emit(Kind.CONTAINMENT, principal=ALGO)
        spool.emit(Kind.ALERT, principal=ALGO)
    left = invoke("verify")
    assert left.exit_code == 4 and "intact" not in left.stdout
    assert "audit.verify.unshipped" in left.stderr and "control-plane: 2" in left.stderr
    assert invoke("collect").exit_code == 0
    assert invoke("verify", "--require-signed").exit_code == 0


def test_verify_is_never_intact_over_a_spool_it_cannot_read(home) -> None:
    assert invoke("collect").exit_code == 0
    (home / "spool" / "pep-risk" / "ack.json").write_text("{garbled")
    bad = invoke("verify")
    assert bad.exit_code == 4 and "audit.verify.spool_unreadable" in bad.stderr and "intact" not in bad.stdout


def test_report_evidence_says_incomplete_while_records_wait_in_a_spool(home, tmp_path) -> None:
    invoke("collect")
    with Spool(home / "spool" / "identity", "identity") as spool:
        spool.emit(Kind.USER_MFA, principal="carol", decision="allow")
    assert invoke("report", "--framework", "nydfs500", "--out", str(tmp_path / "r")).exit_code == 0
    md = (tmp_path / "r" / "nydfs500.md").read_text()
    assert "INCOMPLETE: 1 records in spools" in md and "identity: 1" in md
