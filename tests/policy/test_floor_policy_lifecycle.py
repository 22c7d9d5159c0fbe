"""On a real floor: an algo's least privilege learned from what it did, shipped as a signed version, live.

One zero-trust floor (real processes, mTLS on 127.0.0.1) trades for a while with algo-meanrev. A policy
directory in which algo-meanrev has no grant at all (the algo as a newcomer) is completed by
``policy suggest`` from the floor's central audit log; ``policy impact`` replays the log (nothing the algo
did flips, nothing high-risk); the change is bundled by a developer, signed by two risk officers and
activated by a security officer through the running control plane. The floor then serves the signed
version: the algo's grants are the suggested ones and it keeps trading under them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time

import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, enrol
from tests.policy.lifecycle_fixtures import POLICY_DIR
from trustfabric.audit.log import Query, audit_dir, open_log
from trustfabric.cli import app
from trustfabric.policy.bundle import PolicyVersions
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
            "algo-meanrev")
ALGO = "algo-meanrev"


def _as_newcomer(target):
    """The floor's policies with nothing granting algo-meanrev (policies, flows, its allow cases)."""
    shutil.copytree(POLICY_DIR, target)
    cedar = (target / "workloads.cedar").read_text()
    cedar = re.sub(r'@id\("algo-meanrev\.[^"]+"\)[^;]*;\n', "", cedar, flags=re.DOTALL)
    (target / "workloads.cedar").write_text(cedar)
    _drop_blocks(target / "floor.toml", "[[flow]]")
    for path in (target / "tests").glob("*.toml"):
        _drop_blocks(path, "[[case]]")
    return target


def _drop_blocks(path, header: str) -> None:
    """Remove the TOML array-of-tables entries ``header`` naming the algo as principal (they come last in a file)."""
    blocks = path.read_text().split(header)
    kept = [b for b in blocks[1:] if f'principal = "{ALGO}"' not in b]
    path.write_text(blocks[0] + "".join(header + b for b in kept))


async def _cli(*args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _orders(home, principal: str, since: float) -> list[str]:
    log = open_log(audit_dir(home))
    try:
        rows = log.query(Query(principal=principal, action="submit_order", kind="decision"))
    finally:
        log.close()
    return [r.decision for r in rows if float((r.event().detail or {}).get("decided_at", r.time_ns / 1e9)) >= since]


async def test_an_algo_onboarded_from_its_observed_traffic_on_a_running_floor(tmp_path, monkeypatch):
    home = tmp_path / "floor"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    newcomer = _as_newcomer(tmp_path / "newcomer")
    floor = Floor(home, "zero-trust", services=SERVICES)
    await floor.start()
    try:
        plane = floor.plane
        algo = plane.spiffe_id(ALGO)
        users = plane.identity.users()
        erin, bob, carol, dave = (enrol(users, "erin", "developer"), enrol(users, "bob", "risk_officer"),
                                  enrol(users, "carol", "risk_officer"), enrol(users, "dave", "security_officer"))
        assert await floor.wait_for(lambda: len(_orders(home, algo, 0.0)) >= 5, 90.0)

        await _cli("policy", "suggest", "--from-audit", str(audit_dir(home)), "--dir", str(newcomer),
                   "--principal", ALGO, "--headroom", "5", "--out", str(tmp_path / "proposed"))
        suggested = (tmp_path / "proposed" / "suggested.cedar").read_text()
        assert "suggested.algo-meanrev.risk.orders" in suggested and "suggested.algo-meanrev.connect" in suggested
        report = json.loads(await _cli("policy", "impact", "--proposed", str(tmp_path / "proposed"), "--replay",
                                       str(audit_dir(home)), "--json"))
        assert not report["high_risk"] and report["decisions"] > 0
        assert not [f for f in report["flips"] if f["principal"] == algo and f["direction"] == "allow->deny"]

        bundle = str(tmp_path / "v1.json")
        await _cli("policy", "bundle", str(tmp_path / "proposed"), "--out", bundle, "--user", "erin",
                   "--totp", erin.code(), "--reason", "algo-meanrev: least privilege from its traffic")
        await _cli("policy", "sign", bundle, "--user", "bob", "--totp", bob.code())
        await _cli("policy", "sign", bundle, "--user", "carol", "--totp", carol.code())
        epoch = plane.engine.global_epoch
        activated_at = time.time()
        await _cli("policy", "activate", bundle, "--user", "dave", "--totp", dave.code(), "--reason", "change 7")
        assert plane.engine.global_epoch == epoch + 1 and PolicyVersions(home / "policy").active_version() == 1
        table = plane.engine.decision_table(algo, time.time())
        assert table.lookup("submit_order", "risk/orders").policy_ids == ("suggested.algo-meanrev.risk.orders",)
        assert await floor.wait_for(lambda: "allow" in _orders(home, algo, activated_at), 60.0)
        assert "deny" not in _orders(home, algo, activated_at)
    finally:
        await floor.stop()
