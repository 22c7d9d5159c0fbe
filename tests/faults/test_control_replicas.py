"""Two control-plane replicas on PostgreSQL and NATS: both issue, and ``kill -9`` of the holder moves the lease.

``trustfabric up --replicas 2 --bus URL`` (its own process, the way an operator runs it) starts the lease
holder and a follower replica in a process of its own; the services spread over both for their tokens,
tables and renewals. The test checks that the follower issued (its decisions and tables are in the central
log under its own source), kills the holder with SIGKILL, and sees the follower take the lease and the
floor: every service moves its subscription to it, sessions kept being allowed through the takeover, an
operator's quarantine goes through the new holder, nothing failed open, and the log verifies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.natsd import free_port, start_nats
from tests.people import PASSWORD, enrol
from trustfabric.audit import postgres
from trustfabric.control.nats_bus import write_server_files
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONTROL = "spiffe://prod.acme.example/control/control-plane"


def _wait(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def _manifest(home: Path) -> dict:
    try:
        return json.loads((home / "floor" / "runtime.json").read_text())
    except (OSError, ValueError):
        return {}


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _count(conn, query: str, *args) -> int:
    return int(conn.execute(query, args).fetchone()[0])


def test_both_replicas_issue_and_the_follower_takes_the_floor_when_the_holder_is_killed(tmp_path):
    schema = f"tf_replicas_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, schema)
    home = tmp_path / "home"
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home), TRUSTFABRIC_DATABASE_URL=DSN, TRUSTFABRIC_DATABASE_SCHEMA=schema,
               TRUSTFABRIC_KEK="55" * 32, TRUSTFABRIC_PASSWORD=PASSWORD, COLUMNS="200")
    port = free_port()
    saved = {k: os.environ.get(k) for k in ("TRUSTFABRIC_DATABASE_URL", "TRUSTFABRIC_DATABASE_SCHEMA", "TRUSTFABRIC_KEK")}
    os.environ.update({k: env[k] for k in saved})
    try:
        with IdentityPlane(home) as plane:  # the CA lives in PostgreSQL: the bus's certificate comes from it
            plane.init(Topology.load(FLOOR_MANIFEST).firm)
            conf = write_server_files(plane, Topology.load(FLOOR_MANIFEST), tmp_path / "bus", f"127.0.0.1:{port}",
                                      CONTROL)
            officer = enrol(plane.users(), "dora", "security_officer")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    nats = start_nats(conf, port)
    up = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--replicas", "2", "--bus",
                           f"tls://127.0.0.1:{port}", "--duration", "200"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    follower_pid = 0
    services: dict = {}
    conn = psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}")
    try:
        assert _wait(lambda: _manifest(home).get("services") and _manifest(home).get("standbys"), 90.0), \
            "the floor did not come up"
        first = _manifest(home)
        services, follower_pid = first["services"], first["standbys"][0]["pid"]
        assert first["replicas"] == 2
        # the follower issues: tables and token decisions under its own source reach the central log
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE source LIKE 'control-plane-replica-%%' "
                                          "AND kind IN ('policy_table', 'decision')") > 0, 60.0), \
            "the follower replica issued nothing"
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE kind = 'decision' AND "
                                          "decision = 'allow'") > 50, 60.0)
        killed_at = time.time()
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        assert _wait(lambda: _manifest(home).get("takeover", {}).get("all_moved_at"), 30.0), _manifest(home)
        after = _manifest(home)
        failover_s = after["takeover"]["all_moved_at"] - killed_at
        print(f"replica failover_s={failover_s:.3f} lease_s={after['takeover']['lease_at'] - killed_at:.3f}")
        assert after["pid"] == follower_pid and failover_s < 20.0
        assert all(_running(entry["pid"]) for entry in services.values())  # the services were not restarted
        quarantine = subprocess.run([sys.executable, "-m", "trustfabric.cli", "response", "quarantine",
                                     "algo-meanrev", "--user", "dora", "--totp", officer.code()],
                                    env=env, capture_output=True, text=True, timeout=60)
        assert quarantine.returncode == 0, quarantine.stdout + quarantine.stderr  # the new holder leads
        time.sleep(1.0)  # trading on under the new holder
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        if follower_pid:
            os.kill(follower_pid, signal.SIGTERM)
            assert _wait(lambda: not _running(follower_pid), 60.0)
        nats.terminate()
        nats.wait(10)
    try:
        assert not [name for name, entry in services.items() if _running(entry["pid"])], "services left running"
        final = _manifest(home)
        assert final["summary"]["fail_open"] == 0 and final["summary"]["decisions_allowed"] > 0
        moved_at = final["takeover"]["all_moved_at"]
        served = _count(conn, "SELECT count(*) FROM records WHERE kind = 'decision' AND decision = 'allow' AND "
                              "time_ns BETWEEN %s AND %s", int(killed_at * 1e9), int(moved_at * 1e9) + 1)
        print(f"allowed while the lease moved: {served}")
        assert served > 0, "nothing was allowed while the lease moved"
        quarantined = _count(conn, "SELECT count(*) FROM identity_revocations WHERE kind = 'spiffe_id' AND value "
                                   "LIKE '%%algo-meanrev'")
        assert quarantined == 1
        verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        conn.close()
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
