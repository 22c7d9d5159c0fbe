"""``trustfabric up`` as a subprocess: live view columns, Ctrl-C or a bounded lifetime, no floor process left."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.trading.processes import alive

pytestmark = pytest.mark.timeout(120)

COLUMNS = ("orders/s", "fills", "decisions/s allowed", "decisions/s denied", "alerts", "hop ", "p50", "p99")


def _pids(home) -> list[int]:
    manifest = json.loads((home / "floor" / "runtime.json").read_text())
    return [s["pid"] for s in manifest["services"].values()]


@pytest.mark.slow
def test_up_shows_the_live_view_and_stops_on_ctrl_c_without_orphans(tmp_path):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(tmp_path), COLUMNS="160")
    proc = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--duration", "90"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "floor" / "runtime.json").exists():
            time.sleep(0.2)
        assert (tmp_path / "floor" / "runtime.json").exists()
        time.sleep(5.0)  # trading, reports, link latencies
        pids = _pids(tmp_path)
        assert pids and all(alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    for column in COLUMNS:
        assert column in out, (column, out[-3000:])
    assert "floor stopped" in out
    assert not [p for p in pids if alive(p)]
    # the stop shipped every spool and signed a tree head over the whole log
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert "0 records beyond the last signed tree head" in verify.stdout


@pytest.mark.slow
def test_up_with_a_bounded_lifetime_exits_by_itself(tmp_path):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(tmp_path), COLUMNS="160")
    out = subprocess.run([sys.executable, "-m", "trustfabric.cli", "up", "--mode", "perimeter", "--duration", "3"],
                         env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "orders/s" in out.stdout and "floor stopped" in out.stdout
    assert not [p for p in _pids(tmp_path) if alive(p)]


@pytest.mark.slow
def test_up_with_short_certificates_reports_renewals_and_no_expired_certificate_used(tmp_path):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(tmp_path), COLUMNS="160")
    out = subprocess.run([sys.executable, "-m", "trustfabric.cli", "up", "--cert-ttl", "12", "--posture-max-age", "8",
                          "--duration", "13"], env=env, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{\n"):])  # the final summary, after "floor stopped"
    assert summary["cert_ttl_s"] == 12 and summary["renewals"] >= 11  # every service renewed at least once
    assert summary["expired_cert_uses"] == 0 and summary["renewal_failures"] == 0
    assert summary["orders_filled"] > 0 and summary["fail_open"] == 0
    assert "expired used" in out.stdout  # the live view's certificates row
    assert not [p for p in _pids(tmp_path) if alive(p)]
