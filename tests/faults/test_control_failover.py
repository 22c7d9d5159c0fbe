"""``kill -9`` of the active control plane under floor traffic: the standby takes the floor over.

The floor runs as ``trustfabric up --standbys 1`` (its own process, the way an operator runs it);
the test kills that process with SIGKILL. The standby (started by it, in its own session) takes
the lease, serves the running services on its own control port, and every service moves to it;
the enforcement points keep serving the sessions they hold meanwhile. Then the standby stops the
floor: no service is left running, nothing failed open, and the central log verifies with each
service's move recorded once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustfabric.audit.log import Query, open_log
from trustfabric.errors import ConfigError
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _manifest(home: Path) -> dict:
    try:
        return json.loads((home / "floor" / "runtime.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def _trading(home: Path) -> tuple[dict, int]:
    """Once the floor is up with its standby and has allowed 50 decisions: (its services, the standby's pid)."""
    assert _wait(lambda: bool(_manifest(home).get("standbys")), 90.0), "the floor did not come up"
    first = _manifest(home)
    log = open_log(home / "audit")
    try:
        assert _wait(lambda: len(log.query(Query(kind="decision", decision="allow", limit=50))) >= 50, 60.0)
    finally:
        log.close()
    return first["services"], first["standbys"][0]["pid"]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_kill_9_of_the_active_control_plane_hands_the_floor_to_the_standby(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home), COLUMNS="200")
    up = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--standbys", "1", "--duration", "150"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    standby_pid = 0
    try:
        services, standby_pid = _trading(home)
        killed_at = time.time()
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        assert _wait(lambda: _manifest(home).get("takeover", {}).get("all_moved_at"), 30.0), _manifest(home)
        after = _manifest(home)
        failover_s = after["takeover"]["all_moved_at"] - killed_at
        print(f"failover_s={failover_s:.3f} lease_s={after['takeover']['lease_at'] - killed_at:.3f}")
        assert after["pid"] == standby_pid and failover_s < 20.0
        status = subprocess.run([sys.executable, "-m", "trustfabric.cli", "floor", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        report = json.loads(status.stdout)
        assert report["running"] and report["control_plane"]["pid"] == standby_pid and report["takeover"]["lease_at"]
        assert all(s["alive"] for s in report["services"].values())
        assert all(_running(entry["pid"]) for entry in services.values())  # the services were not restarted
        moved_at = after["takeover"]["all_moved_at"]
        time.sleep(2.0)  # trading on under the new plane
    finally:
        if up.poll() is None:
            up.kill()
    os.kill(standby_pid, signal.SIGTERM)
    assert _wait(lambda: not _running(standby_pid), 60.0)
    assert not [name for name, entry in services.items() if _running(entry["pid"])], "services left running"
    final = _manifest(home)
    assert final["summary"]["fail_open"] == 0 and final["summary"]["decisions_allowed"] > 0
    log = open_log(home / "audit")
    try:
        moves = log.query(Query(action="control.failover"))
        served = log.query(Query(kind="decision", decision="allow", since_ns=int(moved_at * 1e9)))
    finally:
        log.close()
    assert sorted({r.principal for r in moves}) == sorted(e["spiffe_id"] for e in services.values())
    assert len(moves) == len(services)  # each service's move recorded once
    assert served, "nothing was allowed after the takeover"
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_hung_control_plane_is_taken_over_and_fences_itself_when_it_comes_back(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home), COLUMNS="200")
    up = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--standbys", "1", "--duration", "150"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True)
    standby_pid = 0
    try:
        services, standby_pid = _trading(home)
        hung_at = time.time()
        os.kill(up.pid, signal.SIGSTOP)  # hung, not dead: it keeps its sockets and its locks
        assert _wait(lambda: _manifest(home).get("takeover", {}).get("all_moved_at"), 30.0), _manifest(home)
        print(f"hang failover_s={_manifest(home)['takeover']['all_moved_at'] - hung_at:.3f}")
        os.kill(up.pid, signal.SIGCONT)
        out, _ = up.communicate(timeout=60)  # it finds the lease gone, fences itself and exits
        assert "lost the lease" in out and '"fenced": true' in out
        assert all(_running(entry["pid"]) for entry in services.values())  # it left the services to the holder
        assert _manifest(home)["pid"] == standby_pid
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
    os.kill(standby_pid, signal.SIGTERM)
    assert _wait(lambda: not _running(standby_pid), 60.0)
    assert not [name for name, entry in services.items() if _running(entry["pid"])], "services left running"
    assert _manifest(home)["summary"]["fail_open"] == 0
    log = open_log(home / "audit")
    try:
        fenced = log.query(Query(action="control.fenced"))
        moves = log.query(Query(action="control.failover"))
    finally:
        log.close()
    assert len(fenced) == 1 and fenced[0].decision == "deny"
    assert len(moves) == len(services)
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_second_control_plane_on_a_running_floor_is_refused(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=("market-data", "algo-momentum", "pre-trade-risk"))
    await floor.start()
    try:
        second = Floor(tmp_path, "zero-trust", services=("market-data",))
        with pytest.raises(ConfigError) as held:
            await second.start()
        assert held.value.reason == "config.floor.lease_held"
    finally:
        await floor.stop()
