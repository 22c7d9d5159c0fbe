"""A floor run machine by machine, without the launcher: two ``control serve`` replicas, three ``host serve`` runners.

One deployment file fixes every address and port: two control-plane replicas on 127.0.0.1 and three hosts on
127.0.0.2-4, each runner with a home of its own (its own machine, as far as the floor can tell), the state of
record in a fresh PostgreSQL schema and the bus on a nats-server of the test's own. A security officer enrols
each host (``host enrol``: its posture keys registered, join tokens issued - refused for a trader); each
runner reports its hosts' posture to the lease holder and starts its services, which join at a replica and
trade across the hosts. ``kill -9`` of the lease holder: the other replica takes the lease and the floor
trades on; a quarantine goes through it. The killed replica started again follows; the holder hangs
(SIGSTOP): the follower takes the lease, and the hung one, back, fences itself and exits. Nothing fails
open, and the central log verifies.
"""

from __future__ import annotations

import json
import os
import re
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
from trustfabric.trading.launcher import _ephemeral_low
from trustfabric.trading.launcher import free_port as below_ephemeral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONTROL = "spiffe://prod.acme.example/control/control-plane"
HOSTS = {"md-algos": ("127.0.0.2", ["market-data", "algo-momentum", "algo-meanrev"]),
         "risk-oms": ("127.0.0.3", ["pre-trade-risk", "order-router", "oms", "settlement", "risk-dashboard"]),
         "venues": ("127.0.0.4", ["venue-a", "venue-b"])}


def _wait(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def _port_base(address: str, span: int) -> int:
    """A base from which ``span`` consecutive ports are free on ``address`` (bounded search)."""
    for _ in range(200):
        base = below_ephemeral()  # not a port an outgoing connection's source may take meanwhile
        if base + span >= _ephemeral_low():
            continue
        socks = []
        try:
            for port in range(base, base + span):
                for where in {address, "127.0.0.1"}:  # the services' metrics listen on 127.0.0.1
                    s = socket.socket()
                    socks.append(s)
                    s.bind((where, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


def _count(conn, query: str, *args) -> int:
    return int(conn.execute(query, args).fetchone()[0])


def _running(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def test_a_floor_run_by_replicas_and_host_runners_trades_and_survives_losing_the_holder(tmp_path):
    schema = f"tf_runners_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, schema)
    control_home = tmp_path / "control"
    base_env = dict(os.environ, TRUSTFABRIC_DATABASE_URL=DSN, TRUSTFABRIC_DATABASE_SCHEMA=schema,
                    TRUSTFABRIC_KEK="66" * 32, TRUSTFABRIC_PASSWORD=PASSWORD, COLUMNS="200")
    control_env = dict(base_env, TRUSTFABRIC_HOME=str(control_home))
    bus_port = free_port()
    saved = {k: os.environ.get(k) for k in ("TRUSTFABRIC_DATABASE_URL", "TRUSTFABRIC_DATABASE_SCHEMA", "TRUSTFABRIC_KEK")}
    os.environ.update({k: base_env[k] for k in saved})
    try:
        with IdentityPlane(control_home) as plane:
            plane.init(Topology.load(FLOOR_MANIFEST).firm)
            conf = write_server_files(plane, Topology.load(FLOOR_MANIFEST), tmp_path / "bus",
                                      f"127.0.0.1:{bus_port}", CONTROL)
            officers = [enrol(plane.users(), f"officer{i}", "security_officer") for i in range(2)]
            trader = enrol(plane.users(), "tom", "trader")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    replicas = [(name, below_ephemeral(), below_ephemeral()) for name in ("cp-1", "cp-2")]
    text = f'control = "127.0.0.1"\nbus = "tls://127.0.0.1:{bus_port}"\ndatabase = "{DSN}"\n'
    for name, bootstrap, control in replicas:
        text += (f'\n[[replica]]\nname = "{name}"\naddress = "127.0.0.1"\nbootstrap_port = {bootstrap}\n'
                 f'control_port = {control}\n')
    for host, (address, services) in HOSTS.items():
        text += (f'\n[[host]]\nname = "{host}"\naddress = "{address}"\nservices = {json.dumps(services)}\n'
                 f'port_base = {_port_base(address, 2 * len(services))}\n')
    deployment = tmp_path / "floor.toml"
    deployment.write_text(text)
    cli = [sys.executable, "-m", "trustfabric.cli"]
    nats = start_nats(conf, bus_port)
    procs: dict[str, subprocess.Popen] = {}
    conn = psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}")
    try:
        for name, _b, _c in replicas:
            procs[name] = subprocess.Popen([*cli, "control", "serve", "--deployment", str(deployment), "--replica",
                                            name, "--duration", "200"], env=control_env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
            line = procs[name].stdout.readline()
            assert ("holds the floor's lease" if name == "cp-1" else "follower") in line, line
        refused = subprocess.run([*cli, "host", "enrol", "venues", "--deployment", str(deployment), "--out",
                                  str(tmp_path / "enrol-refused"), "--user", "tom", "--totp", trader.code()],
                                 env=control_env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "operator." in refused.stderr, refused.stdout + refused.stderr
        assert not (tmp_path / "enrol-refused" / "enrolment.json").exists()
        for i, host in enumerate(HOSTS):
            officer = officers[i // 2]
            out = subprocess.run([*cli, "host", "enrol", host, "--deployment", str(deployment), "--out",
                                  str(tmp_path / f"enrol-{host}"), "--user", officer.name, "--totp", officer.code()],
                                 env=control_env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and "on the running floor" in out.stdout, out.stdout + out.stderr
            assert oct((tmp_path / f"enrol-{host}" / "enrolment.json").stat().st_mode & 0o777) == "0o600"
        for host in HOSTS:
            env = dict(base_env, TRUSTFABRIC_HOME=str(tmp_path / f"home-{host}"))
            procs[host] = subprocess.Popen([*cli, "host", "serve", "--host", host, "--deployment", str(deployment),
                                            "--enrolment", str(tmp_path / f"enrol-{host}"), "--duration", "200"],
                                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           start_new_session=True)
        for host in HOSTS:
            line = procs[host].stdout.readline()
            started = re.search(r"(\d+) of (\d+) services running", line)
            assert started and started.group(1) == started.group(2), line + procs[host].stdout.read()[-3000:]
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE action = 'oms.fill'") > 0, 90.0), \
            "no order was filled across the hosts"
        status = json.loads(subprocess.run([*cli, "floor", "status", "--json"], env=control_env, capture_output=True,
                                           text=True, timeout=60).stdout)
        assert status["running"] and set(status["hosted"]) == {s for _a, services in HOSTS.values() for s in services}
        assert {(r["name"], r["role"]) for r in status["replica_processes"]} == {("cp-1", "holder"),
                                                                                ("cp-2", "follower")}
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE source = 'control-plane-cp-2' "
                                          "AND kind IN ('policy_table', 'decision')") > 0, 30.0), \
            "the follower replica issued nothing"
        killed_at = time.time()
        os.kill(procs["cp-1"].pid, signal.SIGKILL)
        procs["cp-1"].wait(10)
        assert _wait(lambda: "holds the floor's lease" in procs["cp-2"].stdout.readline(), 30.0)
        print(f"runner failover_s={time.time() - killed_at:.3f}")
        fills = _count(conn, "SELECT count(*) FROM records WHERE action = 'oms.fill'")
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE action = 'oms.fill'") > fills, 60.0), \
            "the floor stopped trading when its lease holder died"
        officer = officers[1]
        quarantine = subprocess.run([*cli, "response", "quarantine", "algo-meanrev", "--user", officer.name,
                                     "--totp", officer.code()], env=control_env, capture_output=True, text=True,
                                    timeout=60)
        assert quarantine.returncode == 0, quarantine.stdout + quarantine.stderr
        # cp-1 started again follows; the holder hangs (SIGSTOP): cp-1 takes the lease, the floor trades on, and
        # the hung one, back, finds the lease gone, fences itself and exits
        procs["cp-1"] = subprocess.Popen([*cli, "control", "serve", "--deployment", str(deployment), "--replica",
                                          "cp-1", "--duration", "200"], env=control_env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert "follower" in procs["cp-1"].stdout.readline()
        hung_at = time.time()
        os.kill(procs["cp-2"].pid, signal.SIGSTOP)
        assert _wait(lambda: "holds the floor's lease" in procs["cp-1"].stdout.readline(), 30.0)
        print(f"hang failover_s={time.time() - hung_at:.3f}")
        fills = _count(conn, "SELECT count(*) FROM records WHERE action = 'oms.fill'")
        assert _wait(lambda: _count(conn, "SELECT count(*) FROM records WHERE action = 'oms.fill'") > fills, 60.0), \
            "the floor stopped trading when its lease holder hung"
        os.kill(procs["cp-2"].pid, signal.SIGCONT)
        fenced, _ = procs["cp-2"].communicate(timeout=60)
        assert procs["cp-2"].returncode == 3 and "lost the lease" in fenced, fenced[-2000:]
    finally:
        summaries = {}
        for name, proc in procs.items():
            if _running(proc):
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate(timeout=10)
            summaries[name] = out or ""
        nats.terminate()
        nats.wait(10)
    try:
        for host in HOSTS:
            summary = json.loads(summaries[host][summaries[host].index("{"):])
            assert summary["failed"] == {} and summary["posture_submitted"] > 0, summaries[host]
        quarantined = _count(conn, "SELECT count(*) FROM identity_revocations WHERE kind = 'spiffe_id' AND value "
                                   "LIKE '%%algo-meanrev'")
        assert quarantined == 1
        holder = json.loads(summaries["cp-1"][summaries["cp-1"].index("{"):])
        assert holder["summary"]["fail_open"] == 0 and holder["summary"]["decisions_allowed"] > 0, holder
        verify = subprocess.run([*cli, "audit", "verify", "--require-signed"], env=control_env, capture_output=True,
                                text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        conn.close()
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
