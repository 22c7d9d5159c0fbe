"""The NATS server restarted under a running floor: a quarantine made while it is away reaches the bus
when it is back, every service catches up on reconnecting, the services' audit records (shipped over
the bus) resume and nothing is lost from the audit log.

The test starts its own nats-server (loopback, its own port and JetStream store, the configuration
trustfabric generates) so that it can stop and restart it; the floor's services join the bus.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.natsd import free_port, start_nats
from tests.people import PASSWORD, Pool
from trustfabric.cli import app
from trustfabric.control.nats_bus import write_server_files
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

CONTROL = "spiffe://prod.acme.example/control/control-plane"
SERVICES = ("market-data", "algo-momentum", "pre-trade-risk", "order-router", "venue-a", "oms", "settlement")
LISTENERS = ("market-data", "pre-trade-risk", "venue-a")


async def test_a_quarantine_made_while_the_bus_is_away_reaches_every_service_when_it_is_back(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    topology = Topology.load(FLOOR_MANIFEST)
    port = free_port()
    with IdentityPlane(home) as plane:
        plane.init(topology.firm)
        conf = write_server_files(plane, topology, tmp_path / "bus", f"127.0.0.1:{port}", CONTROL)
    nats = start_nats(conf, port)
    floor = Floor(home, "zero-trust", services=SERVICES, bus_url=f"tls://127.0.0.1:{port}")
    try:
        await floor.start()

        def heard(key: str, at_least: float) -> bool:
            stats = floor.stats()
            return all(stats.get(s, {}).get(key, 0) >= at_least for s in LISTENERS)

        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 20, 60.0)
        assert await floor.wait_for(lambda: all(floor.stats().get(s, {}).get("bus_failures", 1) == 0
                                                for s in LISTENERS), 20.0), floor.stats()
        # the services' audit goes over the bus: committed in the central log, then acknowledged to them
        assert await floor.wait_for(lambda: heard("audit_shipped", 1) and floor.audit_consumer.committed > 0, 20.0), \
            floor.stats()
        nats.terminate()
        nats.wait(10)
        officers = Pool(floor.plane.identity.users())
        result = await asyncio.to_thread(CliRunner().invoke, app, ["response", "quarantine", "algo-momentum",
                                                                   *officers.args()])
        assert result.exit_code == 0, result.output  # the control channel's push does not need the bus
        outbox = floor.bus_outbox
        assert await floor.wait_for(lambda: outbox.retries > 0 and outbox.pending >= 1, 20.0), \
            "the quarantine was not held for the bus"
        nats = start_nats(conf, port)  # the same store: the stream and the bucket survive the restart
        assert await floor.wait_for(lambda: outbox.pending == 0 and outbox.published >= 1, 30.0), outbox.last_error
        assert await floor.wait_for(lambda: heard("bus_reconnects", 1) and heard("bus_revocations", 1), 30.0), \
            floor.stats()
        shipped = floor.audit_consumer.committed
        assert await floor.wait_for(lambda: floor.audit_consumer.committed > shipped, 20.0)  # shipping resumed
        assert floor.total("fail_open") == 0
    finally:
        await floor.stop()
        nats.terminate()
        nats.wait(10)
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                            env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # the audit stream lost nothing
