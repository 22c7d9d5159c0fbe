"""The audit benchmark (``trustfabric bench audit``): durable append, central ingest and verify throughput, in one run.

* ``append_records_per_s``: records stamped and made durable by an enforcement point's spool,
  group-committed in batches (one write + one fsync per batch), as the transport flushes.
* ``append_fsync_each_records_per_s``: the same with one fsync per record (the baseline
  the batching is measured against; ``batching_speedup`` is the ratio).
* ``central_ingest_records_per_s``: the collector shipping those records into the SQLite log
  (dedupe, leaf hashes, incremental Merkle root, ack after commit).
* ``verify_records_per_s``: ``verify_log`` recomputing everything.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool
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


def run(records: int = 100_000, batch: int = 128) -> dict[str, Any]:
    """Append ``records`` (group commits of ``batch``), against one fsync per record; ingest; verify."""
    with tempfile.TemporaryDirectory(prefix="tf-bench-audit-") as tmp:
        root = Path(tmp)
        append_rate = _append(root / "spool" / "bench-pep", records, batch)
        baseline_n = max(200, min(2000, records // 50))
        fsync_each_rate = _append(root / "baseline" / "bench-pep", baseline_n, 1)
        log = open_log(root / "audit", checkpoint_every=10_000)
        start = time.perf_counter()
        collected = Collector(log, root / "spool").collect_once()
        log.checkpoint()
        ingest_rate = collected.appended / (time.perf_counter() - start)
        start = time.perf_counter()
        report = verify_log(log.store, log.signer.public_key)
        verify_rate = report.size / (time.perf_counter() - start)
        log.close()
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
    return result
