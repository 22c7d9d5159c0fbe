"""Nothing lost, nothing duplicated: real processes killed with SIGKILL under load."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trustfabric.audit.collector import Collector
from trustfabric.audit.events import Kind
from trustfabric.audit.log import open_log
from trustfabric.audit.spool import Spool
from trustfabric.audit.treehead import load_public_key
from trustfabric.audit.verify import verify_log

CHILD = Path(__file__).with_name("children.py")
pytestmark = pytest.mark.slow


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2] / "src"),
                                                                        os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, env=env)


def run_writer_and_kill(spool_dir: Path, rng: random.Random, kind: str = "writer") -> set[int]:
    """Start the writer, kill -9 it after a random number of released batches; what it released."""
    child = spawn(kind, str(spool_dir))
    released: set[int] = set()
    target = rng.randint(5, 120)
    try:
        for _ in range(target):
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            _, first, last = line.split()
            released.update(range(int(first), int(last) + 1))
    finally:
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()  # lines written before the kill were released too
        child.wait(10)
    for line in rest.decode().splitlines():
        if line.startswith("R ") and len(line.split()) == 3:
            _, first, last = line.split()
            released.update(range(int(first), int(last) + 1))
    assert child.returncode == -signal.SIGKILL
    return released


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_writer_killed_nothing_released_is_lost_nor_duplicated(tmp_path, seed) -> None:
    rng = random.Random(seed)
    spool_dir, audit_dir = tmp_path / "spool" / "pep-kill", tmp_path / "audit"
    released: set[int] = set()
    log = open_log(audit_dir, checkpoint_every=1000)
    collector = Collector(log, tmp_path / "spool")
    for round_ in range(3):  # kill, restart (torn tail recovered, seq continues), kill again
        released |= run_writer_and_kill(spool_dir, rng)
        if round_ == 1:
            collector.collect_once()  # ship part-way, between crashes
    collector.collect_once()
    log.checkpoint()
    seqs = [r.seq for r in log.store.records() if r.source == "pep-kill"]
    assert len(seqs) == len(set(seqs)), "a record is duplicated"
    missing = released - set(seqs)
    assert not missing, f"released but missing: {sorted(missing)[:10]}"
    assert seqs == list(range(1, len(seqs) + 1))  # sequence continued across restarts, no gap
    verify_log(log.store, load_public_key(audit_dir))
    log.close()


def test_collector_killed_mid_ship_nothing_lost_nor_duplicated(tmp_path) -> None:
    spool_dir, audit_dir = tmp_path / "spool" / "pep-a", tmp_path / "audit"
    total = 6000
    with Spool(spool_dir, "pep-a", segment_bytes=100_000) as spool:
        for i in range(total):
            spool.emit(Kind.DECISION, decision="allow", trace_id=f"ord-{i}")
            if i % 128 == 127:
                spool.flush()
    rng = random.Random(7)
    done = False
    for _ in range(4):
        child = spawn("collector", str(tmp_path / "spool"), str(audit_dir))
        for _ in range(rng.randint(1, 12)):
            line = child.stdout.readline()
            if not line or line.startswith(b"DONE"):
                done = True
                break
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if done:
            break
    log = open_log(audit_dir)
    Collector(log, tmp_path / "spool").collect_once()  # the last, clean run
    seqs = [r.seq for r in log.store.records()]
    assert seqs == list(range(1, total + 1))  # none lost, none twice, in order
    log.checkpoint()
    verify_log(log.store, load_public_key(audit_dir))
    log.close()


@pytest.mark.parametrize("seed", [4, 5])
def test_write_mode_compact_writer_killed_nothing_released_is_lost(tmp_path, seed) -> None:
    """durability="write": the batch is handed to the kernel with one write() before release, no fsync.

    kill -9 cannot take back what the kernel holds: every released record, full or compact,
    reaches the central log once, expanded into a complete AuditEventV1.
    """
    rng = random.Random(seed)
    spool_dir, audit_dir = tmp_path / "spool" / "pep-kill", tmp_path / "audit"
    released: set[int] = set()
    log = open_log(audit_dir, checkpoint_every=1000)
    collector = Collector(log, tmp_path / "spool")
    for round_ in range(3):
        released |= run_writer_and_kill(spool_dir, rng, "writer-compact")
        if round_ == 1:
            collector.collect_once()
    collector.collect_once()
    log.checkpoint()
    records = [r for r in log.store.records() if r.source == "pep-kill"]
    seqs = [r.seq for r in records]
    assert len(seqs) == len(set(seqs)), "a record is duplicated"
    assert not released - set(seqs), f"released but missing: {sorted(released - set(seqs))[:10]}"
    assert seqs == list(range(1, len(seqs) + 1))
    decisions = [r.event() for r in records if r.kind == Kind.DECISION]
    assert decisions and all(e.principal == "spiffe://prod.acme/algo/momentum" and e.policy_ids == ("floor.algo_submit",)
                             and e.decision in ("allow", "deny") and e.detail["symbol"] == "AAPL" for e in decisions)
    verify_log(log.store, load_public_key(audit_dir))
    log.close()


def test_a_byte_flipped_under_a_running_writer_process_stops_it_and_costs_only_the_damaged_record(tmp_path) -> None:
    spool_dir = tmp_path / "spool" / "pep-paced"
    child = spawn("writer-paced", str(spool_dir))
    released: set[int] = set()
    refusal = ""
    try:
        for _ in range(200):  # well into the segment, then one bit flipped inside an early record
            _, first, last = child.stdout.readline().split()
            released.update(range(int(first), int(last) + 1))
        segment = spool_dir / "00000001.seg"
        with open(segment, "r+b") as fh:
            fh.seek(1000)
            byte = fh.read(1)[0]
            fh.seek(1000)
            fh.write(bytes([byte ^ 0x01]))
        for line in iter(child.stdout.readline, b""):  # the writer goes on until its scrub finds it
            words = line.decode().split()
            if words[0] == "R":
                released.update(range(int(words[1]), int(words[2]) + 1))
            else:
                refusal = words[1]
        child.wait(10)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    assert refusal == "audit.spool.corrupt" and child.returncode == 3
    log = open_log(tmp_path / "audit")
    collector = Collector(log, tmp_path / "spool")
    collector.collect_once()
    [(_, damage)] = collector.damaged
    assert damage.segment == 1 and damage.record > 1
    lost = set(range(damage.after_seq + 1, damage.next_seq))
    central = {r.seq for r in log.store.records() if r.source == "pep-paced"}
    assert lost and released - lost <= central  # every released record but the damaged one is in the log
    assert len(lost) == 1
    log.close()
