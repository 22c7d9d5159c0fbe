"""The kill switch on the running floor: people with MFA through the control plane, four-eyes resume."""

import asyncio
import time

import pyotp
import pytest

from trustfabric.control.client import kill_switch as send_kill_switch
from trustfabric.control.protocol import KillSwitchRequest
from trustfabric.trading.launcher import Floor
from trustfabric.trading.services.fix_client import place_orders

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

FLOOR = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk", "fix-gateway")
PASSWORD = "correct horse battery"


def _enrol(floor: Floor, name: str, role: str) -> pyotp.TOTP:
    enrolment = floor.plane.identity.users().enrol(name, role, PASSWORD, time.time())
    return pyotp.TOTP(enrolment.totp_secret)


async def _order(floor: Floor, prefix: str) -> dict:
    result = await place_orders(floor.fix_port, floor.fix_edge["client_dirs"]["client-a"], "CLIENT-A", orders=1,
                                prefix=prefix, timeout_s=5.0)
    return result["orders"][0]


async def _accepted(floor: Floor, prefix: str) -> None:
    """An order of client-a is accepted, and none on the way was refused for a halt (``risk.halted``).

    The FIX client prices at the start prices +-1 %; the floor's market moves, so an order may meet a
    business reject (the price collar) on a busy machine: that one is not a halt, and the next is tried."""
    tried = []
    for attempt in range(10):
        order = await _order(floor, f"{prefix}{attempt}")
        tried.append((order["statuses"], order["text"]))
        assert "risk.halted" not in order["text"], tried
        if order["statuses"][:1] == ["0"]:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"no order of client-a accepted: {tried}")


async def test_halt_refuses_orders_and_resume_needs_a_second_person(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=FLOOR)
    await floor.start()
    try:
        bob, carol = _enrol(floor, "bob", "risk_officer"), _enrol(floor, "carol", "risk_officer")
        alice = _enrol(floor, "alice", "trader")
        assert await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, 20.0)
        for attempt in range(10):  # risk has reference prices
            if (await _order(floor, f"warm{attempt}"))["statuses"][:1] == ["0"]:
                break
            await asyncio.sleep(0.3)
        now = time.time()

        # refusals: a trader is not privileged, a wrong TOTP code, a wrong password
        r = await floor.kill_switch("halt", "agent", "client-a", user="alice", password=PASSWORD, totp=alice.at(now))
        assert not r["ok"] and r["reason"] == "killswitch.not_privileged"
        r = await floor.kill_switch("halt", "agent", "client-a", user="bob", password=PASSWORD, totp="000000")
        assert not r["ok"] and r["reason"] in ("user.bad_totp", "user.totp_replay")
        r = await floor.kill_switch("halt", "agent", "client-a", user="bob", password="wrong password!!",
                                    totp=bob.at(now))
        assert not r["ok"] and r["reason"] == "user.bad_credentials"
        await _accepted(floor, "still")  # nothing was halted

        # bob halts client-a (over the operator endpoint, as the CLI does)
        manifest = floor.manifest_path.read_text()
        assert "bundle_pem" in manifest
        reply = await send_kill_switch("127.0.0.1", floor.server.bootstrap_port,
                                       bundle_pem=floor.plane.credentials.bundle_pem, control_id=floor.plane.control_id,
                                       request=KillSwitchRequest(user="bob", password=PASSWORD, totp=bob.at(now),
                                                                 action="halt", scope="agent", target="client-a"))
        assert reply.ok and reply.state == "HALTED", reply
        halted = await _order(floor, "halted")
        assert halted["statuses"] == ["8"] and halted["text"] == ["risk.halted"]

        # carol asks to resume; carol cannot approve her own request; bob (a second person) can
        r = await floor.kill_switch("resume", "agent", "client-a", user="carol", password=PASSWORD,
                                    totp=carol.at(now))
        assert r["ok"] and r["pending"] and r["state"] == "HALTED"
        r = await floor.kill_switch("resume", "agent", "client-a", user="carol", password=PASSWORD,
                                    totp=carol.at(now + 30))
        assert not r["ok"] and r["reason"] == "killswitch.four_eyes"
        assert (await _order(floor, "pending"))["text"] == ["risk.halted"]
        r = await floor.kill_switch("resume", "agent", "client-a", user="bob", password=PASSWORD, totp=bob.at(now + 30))
        assert r["ok"] and r["state"] == "ACTIVE" and not r["pending"]
        await _accepted(floor, "again")
    finally:
        await floor.stop()


async def test_perimeter_floor_has_no_kill_switch_endpoint(tmp_path):
    floor = Floor(tmp_path, "perimeter", services=("pre-trade-risk", "market-data", "order-router", "oms"))
    await floor.start()
    try:
        r = await floor.kill_switch("halt", "firm", "", user="bob", password=PASSWORD, totp="123456")
        assert not r["ok"] and r["reason"] == "control.perimeter_mode"
    finally:
        await floor.stop()
