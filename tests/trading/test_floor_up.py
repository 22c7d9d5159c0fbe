"""``trustfabric up`` as a subprocess: short certificates renewed, live view columns, Ctrl-C or a bounded lifetime,
no floor process left."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.trading.processes import alive
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

CERT_TTL_S = 10  # the shortest lifetime ``up --cert-ttl`` takes: every service renews within seconds
COLUMNS = ("orders/s", "fills", "decisions/s allowed", "decisions/s denied", "alerts", "hop ", "p50", "p99")


def _pids(home) -> list[int]:
    manifest = json.loads((home / "floor" / "runtime.json").read_text())
    return [s["pid"] for s in manifest["services"].values()]


def _renewals(port: int) -> float | None:
    """The ``renewals`` a service reports on its metrics port (None while it reports none or cannot be reached)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trustfabric_service_stat" and sample.labels.get("stat") == "renewals":
                return sample.value
    return None


@pytest.mark.slow
def test_up_with_short_certificates_renews_shows_the_live_view_and_stops_on_ctrl_c_without_orphans(tmp_path):
    """One ``up`` run: ``--cert-ttl``/``--posture-max-age`` taken, every service renews under traffic while the floor
    runs, Ctrl-C stops it with the live view's columns and the final summary (renewals, no expired certificate
    used), no floor process left and the whole log signed."""
    env = dict(os.environ, TRUSTFABRIC_HOME=str(tmp_path), COLUMNS="160")
    proc = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--cert-ttl", str(CERT_TTL_S),
                             "--posture-max-age", "5", "--duration", "90"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "floor" / "runtime.json").exists(), 60.0, what="the floor's runtime.json",
                   interval_s=0.2)
        manifest = json.loads((tmp_path / "floor" / "runtime.json").read_text())
        ports = {n: p for n, p in manifest["metrics"].items() if n != "control-plane"}
        assert len(ports) >= 11, ports
        # trading, reports, link latencies - and every service's certificate renewed at least once
        wait_until(lambda: all((_renewals(p) or 0) >= 1 for p in ports.values()), 60.0, interval_s=0.5,
                   what="every service renewed its certificate")
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
    assert "expired used" in out  # the live view's certificates row
    summary = json.loads(out[out.index("{\n"):])  # the final summary, after "floor stopped"
    assert summary["cert_ttl_s"] == CERT_TTL_S and summary["renewals"] >= len(ports)
    assert summary["expired_cert_uses"] == 0 and summary["renewal_failures"] == 0
    assert summary["orders_filled"] > 0 and summary["fail_open"] == 0
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
