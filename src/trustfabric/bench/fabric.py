"""``bench fabric``: the fabric beyond one machine (NATS JetStream, PostgreSQL) beside the embedded default.

Everything runs in scratch space: a trust domain of its own, a ``nats-server`` this run starts
(loopback, its own port and JetStream store, the configuration ``bus config`` writes), and a
fresh PostgreSQL schema (dropped afterwards).

* ``revocation_ms_p50`` / ``_p99``: a quarantine published by the control plane's bus identity
  to the moment each of ``points`` enforcement points has closed the quarantined principal's
  session. The points run in ``hosts`` processes (this module's ``__main__``), each point a real
  :class:`~trustfabric.enforcement.pep.EnforcementPoint` with the revocation set attached and
  its own NATS connection under a service identity of the floor (mTLS, least-privilege
  subjects). Beside it, ``embedded_revocation_ms_*``: the same quarantine through an in-process
  revocation set to the same number of in-process points (one machine, no bus).
* ``audit_ingest_records_per_s``: the central log's ingest into PostgreSQL (COPY), beside
  ``embedded_audit_ingest_records_per_s`` into SQLite, from the same spool
  (:func:`trustfabric.bench.audit.run`).
* ``session_open_ms_p50``: session opens at the floor's enforcement points (token check,
  admission, the decision table from the control plane over mTLS) on a zero-trust floor whose
  identity store and central log are on PostgreSQL and whose bus is NATS, run by two control-plane
  replicas; ``session_open_replica_ms_p50`` over the points whose tables a follower replica issued
  (it reads the shared state's versions before each answer), with how many requests the replicas
  answered and how many fell back to the lease holder; beside it the same floor embedded (SQLite).
  The floor's points open few sessions (they are long-lived), so ``replica_table_ms_p50`` / ``_p99``
  measure the hard case many times over: a table asked for at the follower right after the holder
  moved that principal's epoch (written to the store, then pushed), so that each answer catches up
  first; ``holder_table_ms_*`` the same at the holder, alternately.
* ``failover_s_p50`` / ``_max``: ``kill -9`` of the active control plane of a floor run as
  ``trustfabric up --standbys 1`` on PostgreSQL, to the moment every service has moved to the
  standby (``lease_s``: to the moment the standby held the lease), over ``failover_rounds`` floors.
* ``fail_open``: summed over every point and every floor (must be 0).

Times across processes are wall-clock (``time.time()``) on one host.

This module is also each host's program: the floor, the identity plane and the bus are
imported inside the functions that use them, so a host process loads only what its points need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from trustfabric.audit.events import NullSink
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.errors import IdentityError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.percentiles import percentile
from trustfabric.transport.tls import PeerIdentity

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
RESOURCE = "svc/bench"


class _NoTokens:
    def verify(self, token, audience, presented_cert_der=None, now=None):  # noqa: ANN001, ANN201
        raise IdentityError("certificate-only sessions", reason="token.not_accepted")


def _peer(principal: str) -> PeerIdentity:
    return PeerIdentity(spiffe_id=SpiffeId.parse(principal), cert_der=b"bench", fingerprint_sha256="00" * 32,
                        serial=1, not_after=time.time() + 3600)


class _Points:
    """``n`` enforcement points, each holding one open session per principal; a close is timestamped."""

    def __init__(self, names: list[str], principals: list[str], closed: Callable[[str, str, float], None]) -> None:
        table = {"principals": {p: [{"action": "connect", "resource": RESOURCE}] for p in principals}}
        self.points: list[tuple[EnforcementPoint, RevocationSet]] = []
        for name in names:
            revocations = RevocationSet()
            pep = EnforcementPoint(name, StaticTableSource.from_mapping(table), _NoTokens(), sink=NullSink())
            pep.attach_revocations(revocations)
            for principal in principals:
                session = pep.open_connection(_peer(principal))
                session.on_close = lambda _reason, n=name, p=principal: closed(n, p, time.time())
            self.points.append((pep, revocations))

    @property
    def fail_open(self) -> int:
        return sum(pep.fail_open for pep, _ in self.points)


# -- a "host": points in their own process, each on the bus under a service identity --------------------
async def _host(spec: dict[str, Any]) -> None:
    from trustfabric.control.nats_bus import NatsBus, client_tls

    out = sys.stdout

    def closed(point: str, principal: str, at: float) -> None:
        out.write(json.dumps({"closed": principal, "point": point, "at": at}) + "\n")
        out.flush()

    names = [p["name"] for p in spec["points"]]
    points = _Points(names, spec["principals"], closed)
    buses = []
    for (pep, revocations), p in zip(points.points, spec["points"]):
        creds = Path(p["creds"])
        bus = await NatsBus(spec["url"], client_tls(creds / "cert.pem", creds / "key.pem", creds / "bundle.pem"),
                            p["name"]).connect()

        def apply(data: dict, revocations: RevocationSet = revocations) -> None:
            if data.get("kind") == "spiffe_id" and not revocations.is_quarantined(data.get("value", "")):
                revocations.revoke_spiffe_id(data["value"], time.time(), data.get("reason", "quarantine"))

        await bus.on_revocation(apply)
        await bus.nc.flush()
        buses.append(bus)
    out.write(json.dumps({"ready": len(buses)}) + "\n")
    out.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    out.write(json.dumps({"fail_open": points.fail_open}) + "\n")
    out.flush()
    for bus in buses:
        await bus.close()


# -- the parent ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embedded_revocation(points: int, rounds: int) -> tuple[list[float], int]:
    """The same quarantine through an in-process revocation set to ``points`` in-process points."""
    principals = [f"spiffe://prod.acme.example/algo/bench-{i}" for i in range(rounds)]
    closes: dict[str, list[float]] = {p: [] for p in principals}
    pts = _Points([f"pep-{i}" for i in range(points)], principals, lambda _n, p, at: closes[p].append(at))
    shared = RevocationSet()
    for _pep, revocations in pts.points:  # the control plane's push, in process: one subscriber per point
        shared.subscribe(lambda e, r=revocations: r.revoke_spiffe_id(e.value, e.revoked_at, e.reason))
    samples = []
    for principal in principals:
        t0 = time.time()
        shared.revoke_spiffe_id(principal, t0, "quarantine.bench")
        samples += [(at - t0) * 1000 for at in closes[principal]]
    return samples, pts.fail_open


async def _bus_revocation(work: Path, points: int, hosts: int, rounds: int,
                          progress: Callable[[str], None]) -> tuple[list[float], int, int]:
    from trustfabric.control.nats_bus import NatsBus, client_tls, write_server_files
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.identity.workload import issue_for_test
    from trustfabric.policy.paths import FLOOR_MANIFEST
    from trustfabric.policy.topology import Topology

    topology = Topology.load(FLOOR_MANIFEST)
    control_id = f"spiffe://{topology.trust_domain}/control/control-plane"
    port = _free_port()
    services = sorted(topology.services)
    with IdentityPlane(work / "home") as plane:
        plane.init(topology.firm)
        conf = write_server_files(plane, topology, work / "bus", f"127.0.0.1:{port}", control_id)
        ca = plane.ca(topology.trust_domain)
        now = time.time()
        issue_for_test(ca, control_id, now).write(work / "creds" / "control-plane")
        for name in services:
            issue_for_test(ca, topology.spiffe_id(name), now).write(work / "creds" / name)
    server = subprocess.Popen([NATS, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        principals = [f"spiffe://{topology.trust_domain}/algo/bench-{uuid.uuid4().hex[:8]}" for _ in range(rounds)]
        url = f"tls://127.0.0.1:{port}"
        progress(f"{points} enforcement points in {hosts} host processes joining the bus")
        for h in range(hosts):
            mine = [i for i in range(points) if i % hosts == h]
            spec = {"url": url, "principals": principals,
                    "points": [{"name": f"host{h + 1}-pep{i}", "creds": str(work / "creds" / services[i % len(services)])}
                               for i in mine]}
            proc = subprocess.Popen([sys.executable, "-m", "trustfabric.bench.fabric"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        for proc in procs:
            line = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            if "ready" not in line:
                raise RuntimeError(f"a host process did not join: {line}")
        creds = work / "creds" / "control-plane"
        bus = await NatsBus(url, client_tls(creds / "cert.pem", creds / "key.pem", creds / "bundle.pem"),
                            "control-plane").connect()
        await bus.prepare()
        sent: dict[str, float] = {}
        progress(f"{rounds} quarantines through NATS")
        for principal in principals:
            sent[principal] = time.time()
            await bus.publish_revocation("spiffe_id", principal, "quarantine.bench", msg_id=f"bench:{principal}")
            await asyncio.sleep(0.02)
        await bus.close()
        await asyncio.sleep(0.5)
        samples: list[float] = []
        fail_open = 0
        for proc in procs:
            proc.stdin.close()  # type: ignore[union-attr]
            for raw in proc.stdout:  # type: ignore[union-attr]
                line = json.loads(raw)
                if "closed" in line:
                    samples.append((line["at"] - sent[line["closed"]]) * 1000)
                elif "fail_open" in line:
                    fail_open += int(line["fail_open"])
            proc.wait(10)
        missing = points * rounds - len(samples)
        return samples, fail_open, missing
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.terminate()
        server.wait(10)


async def _floor_session_opens(home: Path, seconds: float, bus_url: str = "", replicas: int = 1) -> dict[str, Any]:
    """Session opens on a floor (with ``replicas`` control planes, over ``bus_url``): p50 over every point, and over
    the points whose tables came from a follower replica; how many requests the replicas answered."""
    from trustfabric.trading.launcher import Floor

    floor = Floor(home, "zero-trust", services=("market-data", "algo-momentum", "pre-trade-risk", "order-router",
                                               "venue-a", "oms", "settlement"), bus_url=bus_url, replicas=replicas)
    await floor.start()
    try:
        await floor.wait_for(lambda: floor.total("pep_allowed") > 50, 60.0)
        await asyncio.sleep(seconds)
        if replicas > 1:  # the services report what their replica answered on their report cadence
            await floor.wait_for(lambda: floor.total("replica_answered") > 0, 10.0)
        stats = [s for s in floor.stats().values() if s.get("session_opens", 0) > 0]
        opens = [s.get("session_open_ms_p50", 0.0) for s in stats]
        remote = [s.get("session_open_ms_p50", 0.0) for s in stats if s.get("replica_answered", 0) > 0]
        out = {"p50": percentile(opens, 50) if opens else 0.0,
               "replica_p50": percentile(remote, 50) if remote else None,
               "replica_answered": int(floor.total("replica_answered")),
               "replica_fell_back": int(floor.total("replica_fell_back")),
               "fail_open": int(floor.total("fail_open"))}
        if replicas > 1:
            out.update(await _tables_after_a_change(floor, TABLE_ROUNDS))
    finally:
        await floor.stop()
    return out


TABLE_ROUNDS = 200


async def _tables_after_a_change(floor: Any, rounds: int) -> dict[str, Any]:
    """A decision table asked for right after the lease holder moved the principal's epoch, ``rounds`` times at a
    follower replica and at the holder, alternately, over venue-a's own mTLS identity: the follower catches up
    with the shared state (one query, then the change applied) and decides; the holder decides."""
    from trustfabric.control.client import ControlClient
    from trustfabric.identity.workload import WorkloadCredentials
    from trustfabric.transport.tls import RotatingCredentials, TLSConfig

    plane = floor.plane
    tls = TLSConfig(RotatingCredentials(WorkloadCredentials.load(floor.home / "floor" / "creds" / "venue-a")),
                    revocation=RevocationSet())
    ports = {"replica": floor.standby_ports[0][1], "holder": floor.server.control_port}
    clients = {k: ControlClient(floor.control_host, port, tls, plane.control_id, "venue-a") for k, port in ports.items()}
    principal = plane.topology.spiffe_id("order-router")
    samples: dict[str, list[float]] = {k: [] for k in clients}
    refused = 0
    try:
        for client in clients.values():
            await client.connect()
        for _ in range(rounds):
            for kind, client in clients.items():
                plane.engine.bump([principal], "bench.change", "bench")  # written to the store, then pushed
                t0 = time.perf_counter()
                reply = await client.table(principal, plane.clock.now())
                samples[kind].append((time.perf_counter() - t0) * 1000)
                refused += not reply.ok
    finally:
        for client in clients.values():
            client.close()
    return {f"{kind}_table_ms_p50": round(percentile(v, 50), 3) for kind, v in samples.items()} | \
        {f"{kind}_table_ms_p99": round(percentile(v, 99), 3) for kind, v in samples.items()} | {"table_refusals": refused}


def _floor_bus(home: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """A nats-server for the floor of ``home`` (its CA, its identities' permissions): (process, URL)."""
    from trustfabric.control.nats_bus import write_server_files
    from trustfabric.identity.plane import IdentityPlane
    from trustfabric.policy.paths import FLOOR_MANIFEST
    from trustfabric.policy.topology import Topology

    topology = Topology.load(FLOOR_MANIFEST)
    port = _free_port()
    with IdentityPlane(home) as plane:
        plane.init(topology.firm)
        conf = write_server_files(plane, topology, work, f"127.0.0.1:{port}",
                                  f"spiffe://{topology.trust_domain}/control/control-plane")
    server = subprocess.Popen([NATS, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        time.sleep(0.05)
    return server, f"tls://127.0.0.1:{port}"


def _failover_once(home: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(failover_s, lease_s, fail_open) of one floor whose active control plane is killed with SIGKILL."""
    import signal

    manifest = home / "floor" / "runtime.json"

    def read() -> dict:
        try:
            return json.loads(manifest.read_text())
        except (OSError, ValueError):
            return {}

    def wait(predicate: Callable[[], Any], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    home.mkdir(parents=True, exist_ok=True)
    errors = home / "up.err"
    with open(errors, "wb") as err:
        up = subprocess.Popen([sys.executable, "-m", "trustfabric.cli", "up", "--standbys", "1", "--duration", "300"],
                              env={**env, "TRUSTFABRIC_HOME": str(home), "COLUMNS": "200"}, stdout=subprocess.DEVNULL,
                              stderr=err, start_new_session=True)
    standby = 0
    try:
        if not wait(lambda: read().get("standbys"), 90.0):
            raise RuntimeError(f"the floor did not come up: {errors.read_text(errors='replace')[-400:]}")
        standby = read()["standbys"][0]["pid"]
        time.sleep(2.0)  # trading
        killed = time.time()
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        if not wait(lambda: read().get("takeover", {}).get("all_moved_at"), 30.0):
            raise RuntimeError(f"no takeover: {read().get('takeover')}")
        takeover = read()["takeover"]
        time.sleep(1.0)
    finally:
        if up.poll() is None:
            up.kill()
    if standby:
        with contextlib.suppress(ProcessLookupError):
            os.kill(standby, signal.SIGTERM)
        wait(lambda: "summary" in read(), 60.0)
    return takeover["all_moved_at"] - killed, takeover["lease_at"] - killed, int(read().get("summary", {}).get(
        "fail_open", 0))


def run(*, points: int = 20, hosts: int = 3, rounds: int = 50, database: str, records: int = 100_000,
        floor_seconds: float = 5.0, failover_rounds: int = 3,
        progress: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
    from trustfabric.audit import postgres
    from trustfabric.bench.audit import run as audit_run

    work = Path(tempfile.mkdtemp(prefix="tf-bench-fabric-"))
    schema = f"tf_bench_{uuid.uuid4().hex[:10]}"
    saved = {k: os.environ.get(k) for k in ("TRUSTFABRIC_DATABASE_URL", "TRUSTFABRIC_DATABASE_SCHEMA",
                                            "TRUSTFABRIC_KEK", "TRUSTFABRIC_HOME")}
    try:
        progress("revocation through NATS")
        bus_ms, bus_fail_open, missing = asyncio.run(_bus_revocation(work, points, hosts, rounds, progress))
        embedded_ms, embedded_fail_open = _embedded_revocation(points, rounds)
        progress(f"audit ingest, {records:,} records")
        audit = audit_run(records, 128, database)
        progress("session opens on a floor on PostgreSQL and NATS, two control-plane replicas")
        postgres.migrate(database, schema)
        os.environ.update(TRUSTFABRIC_DATABASE_URL=database, TRUSTFABRIC_DATABASE_SCHEMA=schema,
                          TRUSTFABRIC_KEK=os.urandom(32).hex(), TRUSTFABRIC_HOME=str(work / "floor-pg"))
        nats_server, nats_url = _floor_bus(work / "floor-pg", work / "floor-bus")
        try:
            pg = asyncio.run(_floor_session_opens(work / "floor-pg", floor_seconds, nats_url, replicas=2))
        finally:
            nats_server.terminate()
            nats_server.wait(10)
        pg_open, pg_fail_open = pg["p50"], pg["fail_open"]
        for key in ("TRUSTFABRIC_DATABASE_URL", "TRUSTFABRIC_DATABASE_SCHEMA", "TRUSTFABRIC_KEK"):
            os.environ.pop(key, None)
        progress("session opens on the embedded floor")
        os.environ["TRUSTFABRIC_HOME"] = str(work / "floor-embedded")
        embedded = asyncio.run(_floor_session_opens(work / "floor-embedded", floor_seconds))
        embedded_open, embedded_floor_fail_open = embedded["p50"], embedded["fail_open"]
        failovers: list[tuple[float, float, int]] = []
        for i in range(failover_rounds):
            progress(f"kill -9 of the active control plane, floor {i + 1} of {failover_rounds}")
            fo_schema = f"{schema}_f{i}"
            postgres.migrate(database, fo_schema)
            env = {**os.environ, "TRUSTFABRIC_DATABASE_URL": database, "TRUSTFABRIC_DATABASE_SCHEMA": fo_schema,
                   "TRUSTFABRIC_KEK": os.urandom(32).hex()}
            try:
                failovers.append(_failover_once(work / f"floor-failover-{i}", env))
            finally:
                _drop_schema(database, fo_schema)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _drop_schema(database, schema)
        shutil.rmtree(work, ignore_errors=True)
    failover_s = [f[0] for f in failovers]
    failover_fail_open = sum(f[2] for f in failovers)
    return {
        "points": points,
        "hosts": hosts,
        "rounds": rounds,
        "revocation_ms_p50": round(percentile(bus_ms, 50), 3) if bus_ms else None,
        "revocation_ms_p99": round(percentile(bus_ms, 99), 3) if bus_ms else None,
        "revocation_ms_max": round(max(bus_ms), 3) if bus_ms else None,
        "revocations_missing": missing,
        "embedded_revocation_ms_p50": round(percentile(embedded_ms, 50), 4),
        "embedded_revocation_ms_p99": round(percentile(embedded_ms, 99), 4),
        "audit_ingest_records_per_s": audit.get("postgres_ingest_records_per_s"),
        "embedded_audit_ingest_records_per_s": audit["central_ingest_records_per_s"],
        "session_open_ms_p50": round(pg_open, 3),
        "session_open_replica_ms_p50": round(pg["replica_p50"], 3) if pg["replica_p50"] is not None else None,
        "replica_answered": pg["replica_answered"],
        "replica_table_ms_p50": pg.get("replica_table_ms_p50"),
        "replica_table_ms_p99": pg.get("replica_table_ms_p99"),
        "holder_table_ms_p50": pg.get("holder_table_ms_p50"),
        "holder_table_ms_p99": pg.get("holder_table_ms_p99"),
        "table_refusals": pg.get("table_refusals"),
        "replica_fell_back": pg["replica_fell_back"],
        "embedded_session_open_ms_p50": round(embedded_open, 3),
        "failover_rounds": len(failover_s),
        "failover_s_p50": round(percentile(failover_s, 50), 3) if failover_s else None,
        "failover_s_min": round(min(failover_s), 3) if failover_s else None,
        "failover_s_max": round(max(failover_s), 3) if failover_s else None,
        "failover_lease_s_max": round(max(f[1] for f in failovers), 3) if failovers else None,
        "fail_open": bus_fail_open + embedded_fail_open + pg_fail_open + embedded_floor_fail_open + failover_fail_open,
        "targets_met": {
            "revocation_ms_p99<=10": bool(bus_ms) and percentile(bus_ms, 99) <= 10 and missing == 0,
            "audit_ingest>=50000": (audit.get("postgres_ingest_records_per_s") or 0) >= 50_000,
            "session_open_ms_p50<=5": pg_open <= 5 and pg["replica_answered"] > 0
            and (pg.get("replica_table_ms_p50") or 99) <= 5,
            "failover_s<=2": bool(failover_s) and max(failover_s) <= 2,
            "fail_open==0": bus_fail_open + embedded_fail_open + pg_fail_open + embedded_floor_fail_open
            + failover_fail_open == 0,
        },
    }


def _drop_schema(database: str, schema: str) -> None:
    with contextlib.suppress(Exception):
        import psycopg
        from psycopg import sql

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    # nats-py closes TLS connections through asyncio's eof_received, which logs a warning per connection
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    spec = json.loads(sys.stdin.readline())
    asyncio.run(_host(spec))


if __name__ == "__main__":
    main()
