"""The audit benchmark (``trustfabric bench audit``): durable append, central ingest and verify throughput, in one run.

* ``append_records_per_s``: records stamped and made durable by an enforcement point's spool,
  group-committed in batches (one write + one fsync per batch), as the transport flushes.
* ``append_fsync_each_records_per_s``: the same with one fsync per record (the baseline
  the batching is measured against; ``batching_speedup`` is the ratio).
* ``central_ingest_records_per_s``: the collector shipping those records into the SQLite log
  (dedupe, leaf hashes, incremental Merkle root, ack after commit).
* ``verify_records_per_s``: ``verify_log`` recomputing everything.
* ``postgres_ingest_records_per_s`` (with a DSN): the same records, the same collector, into the
  central log on PostgreSQL (a fresh schema, dropped afterwards), beside the SQLite figure.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind
from trustfabric.audit.log import DB_FILE, AuditLog, SQLiteAuditStore
from trustfabric.audit.spool import Spool
from trustfabric.audit.treehead import load_or_create_signer
from trustfabric.audit.verify import verify_log

TARGET_APPEND_PER_S = 50_000


def _append(directory: Path, records: int, batch: int) -> float:
    spool = Spool(directory, "bench-pep")
    start = time.perf_counter()
    for i in range(records):
        spool.emit(Kind.DECISION, principal="spiffe://prod.acme.example/algo/momentum", action="submit_order",
                   resource="risk/orders", decision="allow", trace_id=f"ord-{i}", epoch=7,
                   policy_ids=("algo-submit",))
        if (i + 1) % batch == 0:
            spool.flush()
    spool.flush()
    elapsed = time.perf_counter() - start
    spool.close()
    return records / elapsed


def _postgres_ingest(dsn: str, spool_root: Path, key_dir: Path) -> float:
    """The collector shipping ``spool_root`` into a fresh PostgreSQL schema; records/s (the schema is dropped)."""
    import psycopg
    from psycopg import sql

    from trustfabric.audit import postgres

    schema = f"tf_bench_{uuid.uuid4().hex[:10]}"
    postgres.migrate(dsn, schema)
    try:
        log = AuditLog(postgres.PostgresAuditStore(dsn, schema), load_or_create_signer(key_dir),
                       checkpoint_every=10_000)
        start = time.perf_counter()
        collected = Collector(log, spool_root).collect_once()
        log.checkpoint()
        rate = collected.appended / (time.perf_counter() - start)
        log.close()
        return rate
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run(records: int = 100_000, batch: int = 128, database: str = "") -> dict[str, Any]:
    """Append ``records`` (group commits of ``batch``), against one fsync per record; ingest; verify."""
    with tempfile.TemporaryDirectory(prefix="tf-bench-audit-") as tmp:
        root = Path(tmp)
        append_rate = _append(root / "spool" / "bench-pep", records, batch)
        baseline_n = max(200, min(2000, records // 50))
        fsync_each_rate = _append(root / "baseline" / "bench-pep", baseline_n, 1)
        if database:  # the same spool for the PostgreSQL run (the first collection acknowledges it)
            shutil.copytree(root / "spool", root / "spool-postgres")
        (root / "audit").mkdir()
        log = AuditLog(SQLiteAuditStore(root / "audit" / DB_FILE), load_or_create_signer(root / "audit"),
                       checkpoint_every=10_000)
        start = time.perf_counter()
        collected = Collector(log, root / "spool").collect_once()
        log.checkpoint()
        ingest_rate = collected.appended / (time.perf_counter() - start)
        start = time.perf_counter()
        report = verify_log(log.store, log.signer.public_key)
        verify_rate = report.size / (time.perf_counter() - start)
        log.close()
        postgres_rate = _postgres_ingest(database, root / "spool-postgres", root / "audit") if database else None
    result = {
        "records": records,
        "batch": batch,
        "append_records_per_s": round(append_rate),
        "append_fsync_each_records_per_s": round(fsync_each_rate),
        "batching_speedup": round(append_rate / fsync_each_rate, 1),
        "central_ingest_records_per_s": round(ingest_rate),
        "verify_records_per_s": round(verify_rate),
        "append_target_records_per_s": TARGET_APPEND_PER_S,
        "append_meets_target": append_rate >= TARGET_APPEND_PER_S,
    }
    if postgres_rate is not None:
        result["postgres_ingest_records_per_s"] = round(postgres_rate)
        result["postgres_vs_sqlite_ingest"] = round(postgres_rate / ingest_rate, 2)
    return result
