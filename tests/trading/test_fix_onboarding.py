"""Onboarding FIX clients: the edge CA and registry, the CLI, and a client added while the gateway runs."""

import os
import socket
import time

import pytest
from typer.testing import CliRunner

from trustfabric.errors import ConfigError
from trustfabric.identity.plane import IdentityPlane
from trustfabric.trading.errors import FixError
from trustfabric.trading.fix import edge as fe
from trustfabric.trading.launcher import Floor

from tests.trading.fix_edge_harness import GatewayHarness

pytestmark = pytest.mark.timeout(60)


def test_client_certificates_live_days_and_the_registry_refuses_bad_input(tmp_path):
    now = time.time()
    pki = fe.EdgePki.open(tmp_path, "test.acme", now)
    entry = pki.add_client("ACME-1", "acct-acme", now, days=10)
    assert entry.spiffe_id == "spiffe://fix-edge.test.acme/client/ACME-1"
    assert abs(entry.not_after - (now + 10 * fe.DAY_S)) < 2
    assert oct(os.stat(os.path.join(entry.credentials_dir, "key.pem")).st_mode & 0o777) == "0o600"
    for comp_id, account, reason in (("bad id", "a", fe.BAD_CLIENT_ID), ("TRUSTFABRIC", "a", fe.BAD_CLIENT_ID),
                                     ("X", "", fe.BAD_ACCOUNT), ("X", "a b", fe.BAD_ACCOUNT),
                                     ("ACME-1", "a", fe.CLIENT_EXISTS)):
        with pytest.raises(FixError) as err:
            pki.add_client(comp_id, account, now)
        assert err.value.reason == reason
    for days in (0, fe.MAX_CLIENT_DAYS + 1):
        with pytest.raises(FixError) as err:
            pki.add_client("ACME-2", "a", now, days=days)
        assert err.value.reason == fe.BAD_DAYS
    with pytest.raises(FixError) as err:
        pki.renew_client("NOPE", now)
    assert err.value.reason == fe.UNKNOWN_CLIENT
    # the CA is kept: a second open (the next floor) has the same CA and sees the client
    again = fe.EdgePki.open(tmp_path, "test.acme", now + 60)
    assert again.ca.bundle_pem() == pki.ca.bundle_pem() and [e.comp_id for e in again.clients()] == ["ACME-1"]


def test_an_unreadable_registry_admits_no_registered_client(tmp_path):
    pki = fe.EdgePki.open(tmp_path, "test.acme", time.time())
    pki.add_client("ACME-1", "acct-acme", time.time())
    registry = fe.ClientRegistry(tmp_path, {"CLIENT-A": "spiffe://x/client/client-a"})
    assert registry.get("ACME-1") and registry.account("ACME-1") == "acct-acme"
    pki.registry_path.write_text("{not json")
    assert registry.get("ACME-1") is None and registry.account("ACME-1") == ""
    assert registry.get("CLIENT-A") == "spiffe://x/client/client-a" and registry.read_errors == 1


async def test_a_client_added_while_the_gateway_runs_logs_on_and_trades_only_its_account(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        pki = fe.EdgePki.open(tmp_path, "test.acme", gw.clock.now())
        entry = pki.add_client("ACME-1", "acct-acme", gw.clock.now())
        c = await gw.logged_on("ACME-1", credentials_dir=entry.credentials_dir)
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 100, 1_000_000))  # no tag 1
        [ack] = await c.read_until(lambda m: m.message_type == b"8", 3.0)
        assert ack.get(150) == b"0" and ack.get(1) == b"acct-acme"
        c.send(c.fix.new_order_single(gw.clock.now(), "o2", "AAPL", "buy", 100, 1_000_000, account="acct-other"))
        [rej] = await c.read_until(lambda m: m.get(11) == b"o2", 3.0)
        assert rej.get(150) == b"8" and rej.get(58) == b"gateway.account_not_permitted"
        assert gw.risk.actions().count("submit_order") == 1
        # another client's certificate cannot use ACME-1's CompID
        impostor = await gw.client("ACME-1", "client-b")
        impostor.send(impostor.fix.logon(gw.clock.now(), reset=True))
        [out] = await impostor.read_until(lambda m: m.message_type in (b"A", b"5"), 3.0)
        assert out.message_type == b"5"
        await c.close()
        await impostor.close()


async def test_renewal_needs_no_restart_and_a_revoked_serial_is_refused_at_the_handshake(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        pki = fe.EdgePki.open(tmp_path, "test.acme", gw.clock.now())
        first = pki.add_client("ACME-1", "acct-acme", gw.clock.now())
        renewed = pki.renew_client("ACME-1", gw.clock.now(), days=60)
        assert renewed.serial != first.serial
        c = await gw.logged_on("ACME-1", credentials_dir=renewed.credentials_dir)
        await c.close()
        with IdentityPlane(tmp_path) as plane:  # what `trustfabric ca revoke SERIAL` does
            plane.revocations.revoke_serial(renewed.serial, gw.clock.now(), "client offboarded")
        refused = await gw.client("ACME-1", credentials_dir=renewed.credentials_dir)
        refused.send(refused.fix.logon(gw.clock.now(), reset=True))
        assert await refused.read_until(lambda m: True, 3.0) == [] and refused.closed
        assert gw.service.counters["fix_tls_refusals"] == 1
        await refused.close()


def test_cli_adds_lists_and_renews_a_client_and_prints_a_settings_block(tmp_path, monkeypatch):
    from tests.people import PASSWORD, Pool, enrol
    from trustfabric.audit.events import Emitter, MemorySink
    from trustfabric.cli import app
    from trustfabric.identity.store import open_default_store
    from trustfabric.identity.users import UserDirectory

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)  # onboarding is a person's change
    users = UserDirectory(open_default_store(), Emitter("test", MemorySink()))
    officers = Pool(users)
    trader = enrol(users, "tess", "trader")
    runner = CliRunner()
    # refused: no person at all, and a person whose role may not onboard clients
    nobody = runner.invoke(app, ["fix", "client", "add", "ACME-1", "--account", "acct-acme"])
    assert nobody.exit_code == 1 and "operator.unauthenticated" in nobody.output
    refused = runner.invoke(app, ["fix", "client", "add", "ACME-1", "--account", "acct-acme",
                                  "--user", "tess", "--totp", trader.code()])
    assert refused.exit_code == 1 and "operator.not_permitted" in refused.output
    assert not (tmp_path / "fix-edge" / "clients" / "ACME-1").exists()
    result = runner.invoke(app, ["fix", "client", "add", "ACME-1", "--account", "acct-acme", "--port", "9878",
                                 "--days", "90", *officers.args()])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "in the store" in out and "user:officer" in out
    creds = tmp_path / "fix-edge" / "clients" / "ACME-1"
    for line in ("SocketConnectHost=127.0.0.1", "SocketConnectPort=9878", "SenderCompID=ACME-1",
                 "TargetCompID=TRUSTFABRIC", "HeartBtInt=30", "BeginString=FIX.4.4",
                 f"ClientCertificateFile={creds / 'cert.pem'}", f"ClientCertificateKeyFile={creds / 'key.pem'}",
                 f"CertificationAuthoritiesFile={creds / 'bundle.pem'}"):
        assert line in out, line
    listed = runner.invoke(app, ["fix", "client", "ls"])
    assert listed.exit_code == 0 and "ACME-1" in listed.output and "acct-acme" in listed.output
    dup = runner.invoke(app, ["fix", "client", "add", "ACME-1", "--account", "acct-acme", *officers.args()])
    assert dup.exit_code == 1 and fe.CLIENT_EXISTS in dup.output
    renewed = runner.invoke(app, ["fix", "client", "renew", "ACME-1", *officers.args()])
    assert renewed.exit_code == 0 and "SenderCompID=ACME-1" in renewed.output
    serial = str(fe.EdgePki.open(tmp_path, "prod.acme.example", time.time()).client("ACME-1").serial)
    revoked = runner.invoke(app, ["ca", "revoke", serial, *officers.args()])
    assert revoked.exit_code == 0, revoked.output
    with IdentityPlane(tmp_path) as plane:
        assert plane.revocations.is_revoked(int(serial), "")


def test_help_points_clients_to_the_readme_section():
    from trustfabric.cli import app

    runner = CliRunner()
    for args in (["up", "--help"], ["fix", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Connecting a FIX client" in " ".join(result.output.split()), args


async def test_up_refuses_a_busy_fix_port_before_starting_anything(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        floor = Floor(tmp_path, "perimeter", services=("fix-gateway",), fix_port_fixed=port)
        with pytest.raises(ConfigError) as err:
            await floor.start()
        assert err.value.reason == "config.floor.fix_port" and floor.processes == {}
