"""The floor over three hosts on NATS JetStream and PostgreSQL, from one deployment file, with two control replicas.

``trustfabric up --deployment FILE --replicas 2``: the file places the services on three loopback hosts and
names the bus (a nats-server this test starts with the configuration ``bus config`` writes) and
the database (a fresh PostgreSQL schema). The floor trades, every service listens on its host's
address, the follower replica issues tables and tokens beside the lease holder, a quarantine reaches
the services over the bus, the state of record (identity, the
central log) is in PostgreSQL, and the log verifies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONTROL = "spiffe://prod.acme.example/control/control-plane"
EXAMPLE = Path(__file__).parents[2] / "deploy" / "three-hosts.toml"


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def _manifest(home: Path) -> dict:
    try:
        return json.loads((home / "floor" / "runtime.json").read_text())
    except (OSError, ValueError):
        return {}


def test_up_with_a_deployment_runs_the_floor_over_three_hosts_on_nats_and_postgres(tmp_path):
    schema = f"tf_hosts_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, schema)
    home = tmp_path / "home"
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home), TRUSTFABRIC_DATABASE_SCHEMA=schema,
               TRUSTFABRIC_KEK="33" * 32, TRUSTFABRIC_PASSWORD=PASSWORD, COLUMNS="200")
    env.pop("TRUSTFABRIC_DATABASE_URL", None)  # the deployment file names the database
    port = free_port()
    os.environ.update({k: env[k] for k in ("TRUSTFABRIC_DATABASE_SCHEMA", "TRUSTFABRIC_KEK")})
    os.environ["TRUSTFABRIC_DATABASE_URL"] = DSN
    try:
        with IdentityPlane(home) as plane:  # the CA lives in PostgreSQL: the bus's certificate comes from it
            plane.init(Topology.load(FLOOR_MANIFEST).firm)
            conf = write_server_files(plane, Topology.load(FLOOR_MANIFEST), tmp_path / "bus", f"127.0.0.1:{port}",
                                      CONTROL)
            officer = enrol(plane.users(), "dora", "security_officer")
    finally:
        for key in ("TRUSTFABRIC_DATABASE_URL", "TRUSTFABRIC_DATABASE_SCHEMA", "TRUSTFABRIC_KEK"):
            os.environ.pop(key, None)
    deployment = tmp_path / "deploy.toml"
    deployment.write_text(f'bus = "tls://127.0.0.1:{port}"\ndatabase = "{DSN}"\n' + EXAMPLE.read_text())
    nats = start_nats(conf, port)
    up = None
    try:
        up = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--deployment", str(deployment),
                               "--replicas", "2", "--duration", "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
        assert _wait(lambda: _manifest(home).get("services"), 90.0), "the floor did not come up"
        manifest = _manifest(home)
        assert {e["address"] for e in manifest["services"].values()} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        for name, entry in manifest["services"].items():
            with socket.socket() as s:
                assert s.connect_ex((entry["address"], entry["port"])) == 0, name
        with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
            assert _wait(lambda: conn.execute("SELECT count(*) FROM records WHERE kind = 'decision'").fetchone()[0]
                         > 50, 60.0), "no decisions reached the central log in PostgreSQL"
            assert _wait(lambda: conn.execute("SELECT count(*) FROM records WHERE action = 'oms.fill'").fetchone()[0]
                         > 0, 60.0), "no order was filled across the hosts"
            # two control-plane replicas: the follower issued tables and tokens too (its records, its source)
            assert _wait(lambda: conn.execute("SELECT count(*) FROM records WHERE source LIKE 'control-plane-replica-%%' "
                                              "AND kind IN ('policy_table', 'decision')").fetchone()[0] > 0, 30.0), \
                "the follower replica issued nothing"
        assert manifest["replicas"] == 2 and len(manifest["standbys"]) == 1
        quarantine = subprocess.run([sys.executable, "-m", "trustfabric.cli", "response", "quarantine",
                                     "algo-meanrev", "--user", "dora", "--totp", officer.code()],
                                    env={**env, "TRUSTFABRIC_DATABASE_URL": DSN}, capture_output=True, text=True,
                                    timeout=60)
        assert quarantine.returncode == 0, quarantine.stdout + quarantine.stderr
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGINT)
            out, _ = up.communicate(timeout=90)
        nats.terminate()
        nats.wait(10)
    summary = json.loads(out[out.index("{"):]) if out and "{" in out else {}
    assert summary.get("fail_open") == 0 and summary.get("fills", 0) > 0, out[-2000:]
    with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        quarantined = conn.execute("SELECT count(*) FROM identity_revocations WHERE kind = 'spiffe_id' AND value "
                                   "LIKE '%algo-meanrev'").fetchone()[0]
        heard = conn.execute("SELECT count(*) FROM records WHERE action = 'bus.join'").fetchone()[0]
    assert quarantined == 1 and heard == 0  # the revocation is in the shared store; no service failed to join the bus
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                            env={**env, "TRUSTFABRIC_DATABASE_URL": DSN}, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
