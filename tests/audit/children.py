"""Child processes for the kill -9 tests (run as scripts with the test's interpreter).

``writer DIR``: an enforcement point under load. It appends batches of decisions to its
spool, flushes (group commit), and only then "releases" their effects, reporting each
released batch on stdout as ``R first_seq last_seq``. The parent kills it at any moment.

``writer-compact DIR``: the same in the spool's ``durability="write"`` mode, as an
enforcement point on the hop spools: compact decision records (one ``write()`` per batch,
no fsync before the release; the background syncer fsyncs), mixed with full events.

``writer-paced DIR``: ``writer-compact`` at about a batch a millisecond in one segment, until
its spool refuses (it then says ``REFUSED <reason>`` and exits 3).

``collector SPOOL_DIR AUDIT_DIR``: a collector shipping small batches and reporting
``S n`` after each central commit + ack; the parent kills it mid-ship.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from trustfabric.audit.collector import Collector
from trustfabric.audit.errors import AuditUnavailable
from trustfabric.audit.events import Kind
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import DURABILITY_WRITE, Spool


def writer(directory: str) -> None:
    rng = random.Random()
    spool = Spool(Path(directory), "pep-kill", segment_bytes=64 * 1024)
    out = sys.stdout
    while True:
        size = rng.randint(1, 64)
        first = None
        for _ in range(size):
            decision = "allow" if rng.random() < 0.8 else "deny"
            event = spool.emit(Kind.DECISION, principal="spiffe://prod.acme/algo/momentum",
                               action="submit_order", resource="risk/orders", decision=decision)
            first = first or event.seq
        spool.flush()  # durable: only now may the effects leave
        out.write(f"R {first} {event.seq}\n")
        out.flush()


def writer_compact(directory: str) -> None:
    rng = random.Random()
    spool = Spool(Path(directory), "pep-kill", segment_bytes=64 * 1024, durability=DURABILITY_WRITE)
    out = sys.stdout
    while True:
        first = spool.emit(Kind.SESSION_OPEN, principal="spiffe://prod.acme/algo/momentum").seq
        rows = [("spiffe://prod.acme/algo/momentum", "submit_order", "risk/orders", rng.random() < 0.8,
                 "enforcement.allow", 3, ["floor.algo_submit"], f"ord-{i}", "ab" * 32, 7, time.time(), 100.0, "AAPL")
                for i in range(rng.randint(1, 64))]
        last = spool.write_decisions(rows, time.time_ns())  # one write(): only now may the effects leave
        out.write(f"R {first} {last}\n")
        out.flush()


def writer_paced(directory: str) -> None:
    spool = Spool(Path(directory), "pep-paced", durability=DURABILITY_WRITE, scrub_interval_s=0.01)
    out = sys.stdout
    while True:
        rows = [("spiffe://prod.acme/algo/momentum", "submit_order", "risk/orders", True, "enforcement.allow", 3,
                 ["floor.algo_submit"], f"ord-{i}", "ab" * 32, 7, time.time(), 100.0, "AAPL") for i in range(8)]
        try:
            last = spool.write_decisions(rows, time.time_ns())
        except AuditUnavailable as exc:
            out.write(f"REFUSED {exc.reason}\n")
            out.flush()
            spool.close()
            sys.exit(3)
        out.write(f"R {last - len(rows) + 1} {last}\n")
        out.flush()
        time.sleep(0.001)


def collector(spool_dir: str, audit_dir: str) -> None:
    log = open_log(Path(audit_dir), checkpoint_every=500)
    c = Collector(log, Path(spool_dir), batch=97)
    while True:
        result = c.collect_once()
        sys.stdout.write(f"S {result.appended}\n")
        sys.stdout.flush()
        if result.read == 0:
            print("DONE", flush=True)
            return


if __name__ == "__main__":
    {"writer": writer, "writer-compact": writer_compact, "writer-paced": writer_paced,
     "collector": collector}[sys.argv[1]](*sys.argv[2:])
