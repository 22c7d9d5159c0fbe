"""Child processes for the kill -9 tests (run as scripts with the test's interpreter).

``writer DIR``: an enforcement point under load. It appends batches of decisions to its
spool, flushes (group commit), and only then "releases" their effects, reporting each
released batch on stdout as ``R first_seq last_seq``. The parent kills it at any moment.

``collector SPOOL_DIR AUDIT_DIR``: a collector shipping small batches and reporting
``S n`` after each central commit + ack; the parent kills it mid-ship.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool


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
    {"writer": writer, "collector": collector}[sys.argv[1]](*sys.argv[2:])
