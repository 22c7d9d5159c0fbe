"""Audit collection during a floor run: the central log holds the run, signs checkpoints, and verifies.

The demo run's audit (collected, verifiable, one order traced end to end) is checked on the demo run of
``tests/trading/test_floor_run.py``, which starts that same run once for both."""

import os
import subprocess
import sys

import pytest

from trustfabric.audit.log import DB_FILE, Query, SQLiteAuditStore, open_log
from trustfabric.trading.launcher import Floor

pytestmark = pytest.mark.timeout(120)


def _cli(home, *args):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "trustfabric.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


TRADING = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk", "algo-momentum")


@pytest.mark.slow
async def test_a_running_floor_signs_checkpoints_its_baselines_learn_allowed_orders_and_stop_leaves_nothing_unsigned(
        tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=TRADING)
    await floor.start()
    algo = floor.topology.spiffe_id("algo-momentum")
    baselines = floor.plane.response.baselines
    try:
        assert await floor.wait_for(lambda: (tmp_path / "audit" / DB_FILE).exists(), 30.0)
        store = SQLiteAuditStore(tmp_path / "audit" / DB_FILE)

        def signed() -> int:
            heads = store.tree_heads()
            return heads[-1].tree_size if heads else 0

        assert await floor.wait_for(lambda: signed() > 0, 30.0)
        first = signed()
        assert await floor.wait_for(lambda: signed() > first, 30.0)  # the checkpoint advances while it runs
        learned = lambda: baselines.events(algo) >= 20 and ("submit_order", "risk/orders") in baselines.pairs(algo)  # noqa: E731
        assert await floor.wait_for(learned, 60.0, 0.2)
        store.close()
    finally:
        await floor.stop()
    assert not floor.collector_error
    log = open_log(tmp_path / "audit")
    try:
        allowed = log.query(Query(principal=algo, action="submit_order", decision="allow"))
        denied = log.query(Query(principal=algo, decision="deny"))
    finally:
        log.close()
    assert allowed and baselines.events(algo) > len(denied)  # it learned from allowed orders, not denials alone
    verify = _cli(tmp_path, "audit", "verify", "--require-signed")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert "0 records beyond the last signed tree head" in verify.stdout
