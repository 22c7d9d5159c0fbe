"""Operators' commands on a running floor: the CLI goes through the control plane, and the floor acts on it.

One zero-trust floor (real processes, mTLS on 127.0.0.1); the CLI runs as an operator
would, with ``$TRUSTFABRIC_HOME`` pointing at the floor's home, in a thread (it runs its
own event loop while the floor's loop keeps serving). After each command the central
audit log (collected from every service's spool) must show the floor acted on it:
no decision allowed where the change says none may be, from the moment the reply came.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool, enrol
from trustfabric.audit.log import Query, audit_dir, open_log
from trustfabric.cli import app
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
            "algo-momentum")


async def _cli(*args: str):
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result


def _err(result) -> str:
    return result.stderr if result.stderr_bytes else result.output


def _submit_allowed(plane, principal: str) -> bool:
    """The live policy decision for ``principal``'s next order (what every enforcement point re-decides to)."""
    decision = plane.engine.decision_table(principal, time.time()).lookup("submit_order", "risk/orders")
    return decision is not None and decision.allowed is True


def _records(home, since: float = 0.0, until: float = float("inf"), **query):
    """Records of the central log whose decision was taken in [since, until) (a long poll's reply is
    logged when it leaves, with the time its decision was taken in ``decided_at``)."""
    log = open_log(audit_dir(home))
    try:
        rows = log.query(Query(**query))
    finally:
        log.close()
    out = []
    for r in rows:
        if r.source == "algo-momentum":
            continue  # the algo's own record of what it meant to do (order.intent): no decision about it
        decided = (r.event().detail or {}).get("decided_at", r.time_ns / 1e9)
        if since <= float(decided) < until:
            out.append(r)
    return out


async def test_operator_commands_act_on_the_running_floor(tmp_path, monkeypatch):
    home = tmp_path / "floor"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    floor = Floor(home, "zero-trust", services=SERVICES)
    await floor.start()
    marks: dict[str, float] = {}
    try:
        plane = floor.plane
        algo = plane.spiffe_id("algo-momentum")
        users = plane.identity.users()
        officers = Pool(users)
        trader = enrol(users, "tess", "trader")
        assert await floor.wait_for(lambda: floor.stats().get("algo-momentum", {}).get("link_up") == 1.0, 30.0)
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 20, 30.0)

        # refused before anything changes: a person without the role, a wrong TOTP code
        r = await _cli("response", "quarantine", "algo-momentum", "--user", "tess", "--totp", trader.code())
        assert r.exit_code == 1 and "operator.not_permitted" in _err(r)
        officer = officers.person()
        r = await _cli("response", "quarantine", "algo-momentum", "--user", officer.name,
                       "--totp", officer.wrong_code())
        assert r.exit_code == 1 and "user.bad_totp" in _err(r)
        r = await _cli("signal", "risk", "algo-momentum", "95", "--user", "tess", "--totp", trader.code())
        assert r.exit_code == 1 and "operator.not_permitted" in _err(r)
        assert not plane.is_quarantined(algo) and plane.hub.risk.get(algo) < 90

        # the market closes on the live floor: new orders are refused
        r = await _cli("signal", "market", "closed", *officers.args())
        assert r.exit_code == 0, _err(r)
        assert "on the running floor" in " ".join(r.output.split())
        marks["closed"] = time.time()
        assert json.loads((home / "policy" / "signals.json").read_text())["calendar"] == {"weekdays": []}
        assert not _submit_allowed(plane, algo)
        await asyncio.sleep(1.5)
        marks["opening"] = time.time()
        r = await _cli("signal", "market", "always-open", *officers.args())
        assert r.exit_code == 0, _err(r)
        await asyncio.sleep(1.5)  # trading again

        # a risk score of 95 for the algo: nothing of it is allowed
        r = await _cli("signal", "risk", "algo-momentum", "95", *officers.args())
        assert r.exit_code == 0, _err(r)
        marks["risky"] = time.time()
        assert not _submit_allowed(plane, algo)
        await asyncio.sleep(1.5)
        marks["calming"] = time.time()
        r = await _cli("signal", "risk", "algo-momentum", "0", *officers.args())
        assert r.exit_code == 0, _err(r)
        assert _submit_allowed(plane, algo)
        await asyncio.sleep(1.0)

        # a person's quarantine: contained everywhere before the command returns
        r = await _cli("response", "quarantine", "algo-momentum", "--reason", "test", *officers.args())
        assert r.exit_code == 0, _err(r)
        marks["quarantined"] = time.time()
        assert plane.is_quarantined(algo)
        incident = [i for i in plane.incidents() if i["principal"] == algo][-1]
        assert incident["contained"] and incident["trigger"].startswith("manual:user:officer")
        await asyncio.sleep(2.0)
    finally:
        await floor.stop()

    closed = _records(home, marks["closed"], marks["opening"], action="submit_order", decision="allow")
    assert closed == [], f"{len(closed)} orders allowed while the market was closed"
    risky = _records(home, marks["risky"], marks["calming"], principal=algo, decision="allow")
    # A fill at the OMS is the venue matching an order allowed earlier (a resting order meets
    # the market later): it is no decision about the algo, but its order's must predate the window.
    fills = [r for r in risky if r.action == "oms.fill"]
    risky = [r for r in risky if r.action != "oms.fill"]
    assert risky == [], f"{len(risky)} decisions allowed at risk 95"
    earlier = {r.trace_id for r in _records(home, 0.0, marks["risky"], principal=algo, decision="allow")
               if r.trace_id and r.action != "oms.fill"}  # the order's risk check and routing
    assert all(f.trace_id in earlier for f in fills), "a fill in the window of an order allowed inside it"
    after = _records(home, marks["quarantined"], principal=algo, decision="allow")
    assert after == [], f"{len(after)} decisions allowed after the quarantine returned"
    before = _records(home, until=marks["closed"], principal=algo, decision="allow")
    assert before  # the algo traded before: the empty sets above are refusals, not silence
    admin = _records(home, marks["quarantined"] - 5.0, kind="admin.action", decision="allow")
    assert any(r.principal.startswith("user:officer") and r.action == "quarantine" for r in admin)
