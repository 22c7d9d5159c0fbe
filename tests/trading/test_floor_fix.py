"""The fix-gateway as a running process: a real FIX client over mTLS against the floor (both modes)."""

import asyncio
import time

import pytest

from trustfabric.trading.fix.edge import EdgePki, gateway_address
from trustfabric.trading.launcher import Floor, free_port
from trustfabric.trading.services.fix_client import EdgeFixClient, place_orders

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

FIX_FLOOR = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
             "fix-gateway")


def _client_dir(floor: Floor, name: str) -> str:
    return floor.fix_edge["client_dirs"][name]


@pytest.mark.parametrize("mode", ["zero-trust", "perimeter"])
async def test_fix_client_logs_on_and_orders_are_acknowledged(tmp_path, mode):
    floor = Floor(tmp_path, mode, services=FIX_FLOOR)
    await floor.start()
    try:
        assert await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, 20.0)
        result = {}
        for attempt in range(10):  # until risk holds reference prices for the symbols
            result = await place_orders(floor.fix_port, _client_dir(floor, "client-a"), "CLIENT-A", orders=3,
                                        prefix=f"t{attempt}", timeout_s=5.0)
            if all(o["statuses"] and o["statuses"][0] == "0" for o in result["orders"]):
                break
            await asyncio.sleep(0.3)
        assert result["logon"]
        assert all(o["statuses"][0] == "0" for o in result["orders"]), result  # ExecutionReport New
        assert await floor.wait_for(lambda: floor.stats()["fix-gateway"]["fix_logons"] >= 1
                                    and floor.stats()["fix-gateway"]["fix_reports"] >= 3, 3.0)
        # the client orders are kept: sealed in the vault (zero-trust), plain records (perimeter)
        if mode == "zero-trust":
            assert await floor.wait_for(lambda: floor.stats()["oms"].get("vault_sealed", 0) >= 1, 15.0), \
                floor.stats()["oms"]
            sealed = list(tmp_path.rglob("*.sealed"))
            assert sealed and not any(b"CLIENT-A" in p.read_bytes() for p in sealed)
            assert not list(tmp_path.rglob("records/oms/*/*.jsonl"))
            # settlement's key service is attached too; its end-of-day read of the trade history is refused nothing
            floor.command("settlement", "eod")
            assert await floor.wait_for(lambda: "vault_opened" in floor.stats()["settlement"], 15.0), \
                floor.stats()["settlement"]
            assert floor.stats()["settlement"]["vault_refused"] == 0
        else:
            assert await floor.wait_for(lambda: bool(list(tmp_path.rglob("records/oms/client-confidential/*"))),
                                        15.0), floor.stats()["oms"]
            assert any(b"CLIENT-A" in p.read_bytes() for p in tmp_path.rglob("records/oms/client-confidential/*"))
    finally:
        await floor.stop()


async def test_fix_refusals_identity_mismatch_and_message_before_logon(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=("pre-trade-risk", "oms", "settlement", "fix-gateway",
                                                     "order-router", "venue-a", "venue-b", "market-data"))
    await floor.start()
    try:
        # the right certificate logs on; sequence numbers continue across reconnects
        good = await EdgeFixClient(floor.fix_port, _client_dir(floor, "client-a"), "CLIENT-A").connect()
        logon = await good.logon(reset=True)
        assert logon is not None and logon.message_type == b"A"
        good.send(good.fix.logout(time.time()))
        await good.read_until(lambda m: m.message_type == b"5", 2.0)
        await good.close()
        again = await EdgeFixClient(floor.fix_port, _client_dir(floor, "client-a"), "CLIENT-A").connect()
        again.fix.next_out = good.fix.next_out
        logon2 = await again.logon()
        assert logon2 is not None and logon2.message_type == b"A"
        assert int(logon2.get(34)) > int(logon.get(34))  # the gateway's outgoing sequence went on
        await again.close()

        # client-b's certificate claiming CLIENT-A's SenderCompID: Logout, connection closed
        impostor = await EdgeFixClient(floor.fix_port, _client_dir(floor, "client-b"), "CLIENT-A").connect()
        reply = await impostor.logon(reset=True)
        assert reply is not None and reply.message_type == b"5"
        assert b"not bound" in (reply.get(58) or b"")
        await impostor.read_until(lambda m: False, 2.0)
        assert impostor.closed
        await impostor.close()

        # an order before Logon: no answer, connection closed
        early = await EdgeFixClient(floor.fix_port, _client_dir(floor, "client-a"), "CLIENT-A").connect()
        early.send(early.fix.new_order_single(time.time(), "x-1", "AAPL", "buy", 100, 1_895_000))
        got = await early.read_until(lambda m: True, 3.0)
        assert got == [] and early.closed
        await early.close()

        # the response engine quarantined the impostor's identity: the edge now refuses its handshake
        quarantined = "spiffe://fix-edge." + floor.topology.trust_domain + "/client/client-b"
        assert await floor.wait_for(lambda: floor.plane.identity.revocations.is_quarantined(quarantined), 5.0)
        back = await EdgeFixClient(floor.fix_port, _client_dir(floor, "client-b"), "CLIENT-B").connect()
        assert await back.logon(reset=True, timeout_s=3.0) is None and back.closed
        await back.close()

        gw = floor.stats()
        assert await floor.wait_for(
            lambda: floor.stats()["fix-gateway"]["fix_logon_refusals"] >= 1
            and floor.stats()["fix-gateway"]["fix_session_problems"] >= 2
            and floor.stats()["fix-gateway"]["fix_tls_refusals"] >= 1, 3.0), gw
    finally:
        await floor.stop()


async def test_a_client_onboarded_while_the_floor_runs_trades_on_the_fixed_port(tmp_path):
    port = free_port()
    floor = Floor(tmp_path, "zero-trust", services=FIX_FLOOR, fix_port_fixed=port)
    await floor.start()
    try:
        assert floor.fix_port == port and gateway_address(tmp_path)["port"] == port
        assert await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, 20.0)
        entry = EdgePki.open(tmp_path, floor.topology.trust_domain, time.time()).add_client(
            "ACME-1", "acct-acme", time.time())
        result = {}
        for attempt in range(10):  # until risk holds reference prices for the symbols
            result = await place_orders(port, entry.credentials_dir, "ACME-1", orders=2, account="acct-acme",
                                        prefix=f"a{attempt}", timeout_s=5.0)
            if result["logon"] and all(o["statuses"] and o["statuses"][0] == "0" for o in result["orders"]):
                break
            await asyncio.sleep(0.3)
        assert result["logon"] and all(o["statuses"][0] == "0" for o in result["orders"]), result
    finally:
        await floor.stop()


async def test_a_client_onboarded_on_the_running_floor_logs_on_and_orders_without_a_restart(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.people import PASSWORD, Pool, enrol
    from trustfabric.cli import app

    def cli(*args: str):
        return asyncio.to_thread(CliRunner().invoke, app, list(args))

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    floor = Floor(tmp_path, "zero-trust", services=FIX_FLOOR)
    await floor.start()
    try:
        users = floor.plane.identity.users()
        officers, trader = Pool(users), enrol(users, "tess", "trader")
        refused = await cli("fix", "client", "add", "ACME-1", "--account", "acct-acme",
                            "--user", "tess", "--totp", trader.code())
        assert refused.exit_code == 1 and "operator.not_permitted" in refused.output
        added = await cli("fix", "client", "add", "ACME-1", "--account", "acct-acme", *officers.args())
        assert added.exit_code == 0, added.output
        assert "on the running floor" in " ".join(added.output.split())
        assert f"SocketConnectPort={floor.fix_port}" in added.output
        creds = str(tmp_path / "fix-edge" / "clients" / "ACME-1")
        assert await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, 20.0)
        result = {}
        for attempt in range(10):  # until risk holds reference prices for the symbols
            result = await place_orders(floor.fix_port, creds, "ACME-1", orders=2, prefix=f"o{attempt}",
                                        account="acct-acme", timeout_s=5.0)
            if result["logon"] and all(o["statuses"] and o["statuses"][0] == "0" for o in result["orders"]):
                break
            await asyncio.sleep(0.3)
        assert result["logon"] and all(o["statuses"][0] == "0" for o in result["orders"]), result
        # renewed on the running floor: the new certificate logs on, no restart
        renewed = await cli("fix", "client", "renew", "ACME-1", *officers.args())
        assert renewed.exit_code == 0, renewed.output
        again = await EdgeFixClient(floor.fix_port, creds, "ACME-1").connect()
        logon = await again.logon(reset=True)
        assert logon is not None and logon.message_type == b"A"
        await again.close()
    finally:
        await floor.stop()
    # the control plane applied it under the officer's name
    from trustfabric.audit.log import Query, audit_dir, open_log

    log = open_log(audit_dir(tmp_path))
    try:
        rows = log.query(Query(action="fix.client_add"))
    finally:
        log.close()
    assert any(r.principal.startswith("user:officer") and r.decision == "allow" for r in rows)
