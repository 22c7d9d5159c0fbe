"""The control bus on NATS JetStream, itself zero trust: a nats-server this test starts (loopback, its own
port and store) with the configuration trustfabric generates from the floor's topology.

Shown: the control plane's revocation reaches an enforcement point; a service identity's forged
revocation is refused by NATS (permissions violation) and reaches nobody; a certificate of another
trust domain is refused at connect; a duplicated publish is stored once; an enforcement point that
connects later reads the whole revocation set from the bucket before anything else.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.natsd import NATS, free_port, start_nats
from trustfabric.control.errors import ControlRefused
from trustfabric.control.nats_bus import NatsBus, client_tls, server_config
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
CONTROL = "spiffe://prod.acme.example/control/control-plane"


@pytest.fixture
def bus(tmp_path):
    if not Path(NATS).exists():
        pytest.fail("nats-server is not installed (Debian's nats-server; .ci/run installs it)")
    topo = Topology.load(FLOOR_MANIFEST)
    now = time.time()
    ca = CertificateAuthority.create(topo.trust_domain, now - 60)
    dev = CertificateAuthority.create("dev.acme.example", now - 60)
    ids = {"server": (ca, f"spiffe://{topo.trust_domain}/bus/nats"), "control": (ca, CONTROL),
           "venue": (ca, topo.spiffe_id("venue-a")), "oms": (ca, topo.spiffe_id("oms")),
           "intruder": (dev, "spiffe://dev.acme.example/venue/venue-a")}
    for name, (issuer, sid) in ids.items():
        issue_for_test(issuer, sid, now - 60).write(tmp_path / name)
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(server_config(topo, listen=f"127.0.0.1:{port}", store_dir=tmp_path / "js",
                                  cert=tmp_path / "server" / "cert.pem", key=tmp_path / "server" / "key.pem",
                                  bundle=tmp_path / "server" / "bundle.pem", control_id=CONTROL))
    proc = start_nats(conf, port, log=tmp_path / "nats.log")
    bundle = tmp_path / "server" / "bundle.pem"

    def identity(name: str) -> NatsBus:
        d = tmp_path / name
        return NatsBus(f"tls://127.0.0.1:{port}", client_tls(d / "cert.pem", d / "key.pem", bundle), name)

    yield identity
    proc.terminate()
    proc.wait(10)


async def _until(predicate, timeout_s: float = 5.0) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_only_the_control_plane_revokes_and_every_point_hears_it(bus):
    control = await bus("control").connect()
    await control.prepare()
    venue = await bus("venue").connect()
    heard: list[dict] = []
    await venue.on_revocation(heard.append)
    await venue.nc.flush()
    assert await control.publish_revocation("serial", "12345", "compromised")
    assert await _until(lambda: heard == [{"kind": "serial", "value": "12345", "reason": "compromised"}])
    # a service forging a revocation: refused by NATS, delivered to nobody
    oms = await bus("oms").connect()
    await oms.nc.publish("tf.revocations.serial", b'{"kind": "serial", "value": "999"}')
    await oms.nc.flush()
    assert await _until(lambda: any("permissions violation" in e.lower() for e in oms.errors))
    await asyncio.sleep(0.2)
    assert [h["value"] for h in heard] == ["12345"]
    for b in (control, venue, oms):
        await b.close()


async def test_another_trust_domain_is_refused_at_connect(bus):
    with pytest.raises(ControlRefused) as refused:
        await bus("intruder").connect(timeout_s=2)
    assert refused.value.reason == "bus.unreachable"


async def test_a_duplicated_publish_is_stored_once_and_late_points_catch_up(bus):
    control = await bus("control").connect()
    await control.prepare()
    assert await control.publish_revocation("spiffe_id", "spiffe://prod.acme.example/algo/algo-momentum",
                                            "quarantine", msg_id="q-1")
    assert not await control.publish_revocation("spiffe_id", "spiffe://prod.acme.example/algo/algo-momentum",
                                                "quarantine", msg_id="q-1")  # a replay: de-duplicated
    info = await control.js.stream_info("TF_CONTROL")
    assert info.state.messages == 1
    late = await bus("venue").connect()  # it was away: the bucket gives it the whole set first
    snapshot = await late.revocation_snapshot()
    assert snapshot == [{"kind": "spiffe_id", "value": "spiffe://prod.acme.example/algo/algo-momentum",
                         "reason": "quarantine"}]
    await control.close()
    await late.close()


async def test_a_floor_hears_a_quarantine_on_the_bus(tmp_path, monkeypatch):
    """A floor started with a bus: the operator's quarantine reaches the services over NATS too."""
    from tests.people import PASSWORD, Pool
    from trustfabric.control.nats_bus import write_server_files
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.trading.launcher import Floor

    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    topo = Topology.load(FLOOR_MANIFEST)
    port = free_port()
    with IdentityPlane(home) as plane:
        plane.init(topo.firm)
        conf = write_server_files(plane, topo, tmp_path / "bus", f"127.0.0.1:{port}", CONTROL)
    proc = start_nats(conf, port)
    floor = None
    try:
        floor = Floor(home, "zero-trust", services=("market-data", "algo-momentum", "pre-trade-risk"),
                      bus_url=f"tls://127.0.0.1:{port}")
        await floor.start()
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 5, 30.0)
        # each service's first report may come after the first allows: wait for both, with no bus failure
        assert await floor.wait_for(lambda: all(floor.stats().get(s, {}).get("bus_failures", 1) == 0
                                                for s in ("market-data", "pre-trade-risk")), 10.0), floor.stats()
        from typer.testing import CliRunner

        from trustfabric.cli import app

        officers = Pool(floor.plane.identity.users())
        result = await asyncio.to_thread(CliRunner().invoke, app, ["response", "quarantine", "algo-momentum",
                                                                   *officers.args()])
        assert result.exit_code == 0, result.output
        assert await floor.wait_for(lambda: all(floor.stats()[s].get("bus_revocations", 0) >= 1
                                                for s in ("market-data", "pre-trade-risk")), 10.0), floor.stats()
    finally:
        if floor is not None:
            await floor.stop()
        proc.terminate()
        proc.wait(10)


async def test_audit_records_cross_the_bus_once_committed_and_a_service_cannot_ship_for_another(bus, tmp_path):
    """A point's spool goes over the bus to the central log; its ack only after the commit; a forgery is refused."""
    from trustfabric.audit.events import Emitter, Kind
    from trustfabric.audit.log import AuditLog, MemoryAuditStore
    from trustfabric.audit.spool import Spool, read_ack
    from trustfabric.audit.treehead import load_or_create_signer
    from trustfabric.control.audit_bus import AuditConsumer, SpoolShipper

    spool = Spool(tmp_path / "spool" / "venue-a", "venue-a")
    emitter = Emitter("venue-a", spool)
    for i in range(50):
        emitter.emit(Kind.DECISION, principal="spiffe://prod.acme.example/routing/order-router", action="new_order",
                     resource="venue/orders", decision="allow", trace_id=f"o-{i}")
    spool.flush()
    spool.sync()
    log = AuditLog(MemoryAuditStore(), load_or_create_signer(tmp_path / "audit"))
    held: list = []  # batches the "collector" has not committed yet
    control, venue, oms = [await bus(n).connect() for n in ("control", "venue", "oms")]
    stop = asyncio.Event()
    consumer = AuditConsumer(control, lambda payloads, committed: held.append((payloads, committed)))
    task = asyncio.get_running_loop().create_task(consumer.run(stop))
    try:
        shipper = await SpoolShipper(venue, "venue-a", spool.directory).start()
        for _ in range(50):  # the stream exists once the consumer prepared it
            try:
                if await shipper.ship_once():
                    break
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.1)
        for _ in range(100):
            if held:
                break
            await asyncio.sleep(0.05)
        assert held and read_ack(spool.directory).records == 0  # received, not committed: nothing acknowledged
        payloads, committed = held.pop()
        log.ingest(payloads)
        committed(len(payloads))
        for _ in range(100):
            if read_ack(spool.directory).records:
                break
            await asyncio.sleep(0.05)
        assert read_ack(spool.directory).records == 50 and log.store.size() == 50 and shipper.shipped == 50
        await oms.nc.publish("tf.audit.records.venue-a", b"forged")  # oms may not publish venue-a's records
        await oms.nc.flush()
        await asyncio.sleep(0.3)
        assert any("permissions violation" in e.lower() for e in oms.errors), oms.errors
        assert consumer.malformed == 0 and not held  # the forgery reached nobody
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        for b in (control, venue, oms):
            await b.close()
        spool.close()
