"""The floor launcher: control plane, services as processes on 127.0.0.1, runtime manifest, shutdown.

:class:`Floor` does what a deployment pipeline and an orchestrator would:

1. starts the control plane in this process's event loop (zero-trust) - or, in
   perimeter mode, only a plain report channel;
2. promotes the release digest of every service it is about to start and asks for
   one join token per service instance;
3. starts every service (``python -m trustfabric.trading.services <name>``) with
   its boot line on stdin, waits (bounded) for ``READY <port>``, and writes
   ``$TRUSTFABRIC_HOME/floor/runtime.json`` (service -> port, pid, SPIFFE ID, mode); a
   service whose identity is quarantined is left out (``left_out``, an audit event)
   and the rest of the floor starts without it;
4. collects the services' reports (stats, per-link latency) and, on
   :meth:`Floor.stop`, sends SIGTERM, then SIGKILL after a bound: no orphans;
5. runs one posture agent per topology host on its own Unix socket under
   ``$TRUSTFABRIC_HOME/floor/run/posture/`` (:mod:`trustfabric.signals.agent_socket`;
   each service is told its host's socket and asks it for a fresh signed report
   before its join and every renewal), and a maintenance loop that has the agents
   report to the signal hub before their verdicts go stale and renews the control
   plane's own certificate at half its lifetime. ``cert_ttl_s`` (``up --cert-ttl``)
   is every certificate's lifetime; ``posture_max_age_s`` the posture window;
6. runs the audit :class:`~trustfabric.audit.collector.PeriodicCollector` over
   ``$TRUSTFABRIC_HOME/spool`` (the services' spools and this process's own: the
   control plane's and the identity plane's, flushed first) into the central log
   (``$TRUSTFABRIC_HOME/audit``) every ``collect_interval_s`` in its own thread,
   signing a tree head about every second; the decision records it ships - allowed
   and denied - go to the response engine's baselines on the event loop
   (:meth:`ResponseEngine.learn`). On :meth:`Floor.stop`, once every process and the
   control plane have stopped, a last pass ships everything and signs a tree head over
   the whole log: after a run nothing lies in a spool or beyond the last signed head.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfabric.audit.collector import PeriodicCollector
from trustfabric.audit.errors import AuditError
from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.audit.events import encode_event
from trustfabric.audit.log import audit_dir, database_schema, database_url, open_log
from trustfabric.audit.spool import Spool
from trustfabric.control.audit_bus import AuditConsumer, SpoolShipper
from trustfabric.control.lease import ControlLease
from trustfabric.control.metrics import ControlMetrics
from trustfabric.control.nats_bus import NatsBus, RevocationOutbox, client_tls
from trustfabric.control.plane import DEFAULT_POLICIES, SOURCE, STATE_CHECK_S, ControlPlane
from trustfabric.identity.plane import AUDIT_SOURCE
from trustfabric.control.protocol import KillSwitchRequest
from trustfabric.control.replica import Follower, SharedVersions
from trustfabric.control.server import ControlServer
from trustfabric.errors import ConfigError
from trustfabric.metrics import MetricsEndpoint
from trustfabric.policy.topology import Topology
from trustfabric.signals.agent_socket import PostureAgentServer
from trustfabric.trading.deployment import Deployment
from trustfabric.trading.failover import ControlFailover, _Adopted
from trustfabric.trading.processes import spawn_child, stop_processes
from trustfabric.trading import hosts
from trustfabric.trading.fix import operate as fix_operate
from trustfabric.trading.fix.edge import GATEWAY_CERT_TTL_S, EdgePki
from trustfabric.trading.marketdata import CsvReplay
from trustfabric.trading.services import SERVICES, module_file
from trustfabric.trading.services.base import MODES, ZERO_TRUST, code_digest_of

DEFAULT_SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
                    "risk-dashboard", "algo-meanrev", "algo-momentum", "fix-gateway")
FIX_CLIENTS = {"CLIENT-A": "client-a", "CLIENT-B": "client-b"}  # SenderCompID -> client name
FIX_COMP_ID = "TRUSTFABRIC"
READY_TIMEOUT_S = 30.0
FOLLOW_S = 0.2  # a follower replica's catch-up between requests
MD_CSV_SERVICES = ("market-data", "venue-a", "venue-b")  # replay a recorded session when md_csv is set
CHECKPOINT_INTERVAL_S = 1.0  # a signed tree head about every second while the floor runs
LEARN_CHUNK = 128  # decisions learned per event-loop callback (about 11 us each: the loop is never held long)
MAX_LEARN_PENDING = 200_000  # decisions waiting for the loop; beyond, a pass's are refused and alerted
SERVICE_QUARANTINED = "floor.service_quarantined"  # a service left out at start: its identity is quarantined


_PORT_FLOOR = 20000  # the lowest port a floor listens on


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (the source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port free now, chosen BELOW the ephemeral range.

    The floor tells every service its peers' ports before any of them binds, so a port
    must stay free between this check and the service's ``bind``. A port from the
    ephemeral range (``bind(0)``) can be taken meanwhile as the source port of any
    outgoing connection on the machine; a port below it cannot. ``taken`` holds ports
    already handed out for this floor.
    """
    low = _ephemeral_low()
    high = low - 1 if low - 1 > _PORT_FLOOR + 1000 else 32767
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(_PORT_FLOOR, high)
        if taken is not None and port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if taken is not None:
            taken.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_port_free(port: int) -> None:
    """A fixed port (``up --fix-port``) must be free now: refused before any process starts."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is outside 1..65535", reason="config.floor.fix_port")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"port {port} is not free: {exc.strerror}", reason="config.floor.fix_port") from None


def fix_edge_pki(home: Path, floor_trust_domain: str, clients: dict[str, str] = FIX_CLIENTS,
                 now: float | None = None) -> dict[str, Any]:
    """The FIX edge's own trust domain (``fix-edge.<floor domain>``): its CA (kept under the home
    across runs, :class:`~trustfabric.trading.fix.edge.EdgePki`, so clients onboarded with
    ``trustfabric fix client add`` stay trusted), the gateway's server certificate and one
    certificate per demo client, written under ``floor/fix-edge/``.

    Returns the gateway's boot fields (``fix_edge_dir``, ``fix_clients``: SenderCompID -> the
    client certificate's SPIFFE ID) and ``client_dirs`` (client name -> its credentials
    directory). The demo clients may name any account; onboarded clients are bound to theirs.
    """
    now = time.time() if now is None else now
    edge = EdgePki.open(home, floor_trust_domain, now)
    base = Path(home) / "floor" / "fix-edge"
    gateway_dir = base / "fix-gateway"
    edge.issue(f"spiffe://{edge.trust_domain}/gateway/fix-gateway", now, GATEWAY_CERT_TTL_S, gateway_dir)
    bindings, client_dirs = {}, {}
    for comp_id, client in clients.items():
        spiffe = f"spiffe://{edge.trust_domain}/client/{client}"
        edge.issue(spiffe, now, 3600, base / client)
        client_dirs[client] = str(base / client)
        bindings[comp_id] = spiffe
    return {"fix_edge_dir": str(gateway_dir), "fix_clients": bindings, "client_dirs": client_dirs,
            "fix_comp_id": FIX_COMP_ID}


async def start_service(home: Path, name: str, boot: dict[str, Any], *, mode: str, port: int, spiffe_id: str,
                        identity: str | None = None, timeout_s: float = READY_TIMEOUT_S) -> Process:
    """One service process (``python -m trustfabric.trading.services``, its boot line on stdin, its stderr in
    ``<home>/floor/logs``), once it said READY (or REFUSED, or nothing: its status and its log then say why)."""
    argv = [sys.executable, "-m", "trustfabric.trading.services", name, "--mode", mode]
    if identity:
        argv += ["--as-identity", identity]
    proc = await spawn_child(argv, boot, home / "floor" / "logs" / f"{identity or name}.log")
    assert proc.stdout is not None
    record = Process(identity or name, proc, port, spiffe_id)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout_s)).decode().strip()
    except TimeoutError:
        line = "TIMEOUT"
    if line.startswith("READY"):
        record.status = "ready"
        return record
    record.status = "refused" if line.startswith("REFUSED") else "failed"
    if not line:  # it ended before it said anything
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 2.0)
        line = f"exited with status {proc.returncode} before READY (floor/logs/{identity or name}.log)"
    record.detail = line
    return record


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    spiffe_id: str
    status: str = "starting"
    detail: str = ""


@dataclass
class Floor(ControlFailover):
    home: Path
    mode: str = ZERO_TRUST
    services: tuple[str, ...] = DEFAULT_SERVICES
    seed: int = 7
    md_interval_s: float = 0.2
    bus_url: str = ""  # NATS JetStream (tls://host:port) carrying revocations to every host, beside the push
    policies: Path = DEFAULT_POLICIES
    boot_extra: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    plane: ControlPlane | None = None
    server: ControlServer | None = None
    started_at: float = 0.0
    collect_audit: bool = True
    fix_port_fixed: int = 0  # the FIX gateway's edge port (0: a free port is chosen)
    collect_interval_s: float = 1.0
    md_csv: Path | None = None  # a recorded session (marketdata.write_csv) instead of GBM
    left_out: dict[str, str] = field(default_factory=dict)  # service -> why it was not started (quarantined)
    cert_ttl_s: int = 3600  # every certificate's lifetime (workloads and the control plane)
    posture_max_age_s: float | None = None  # the posture window; None: the trust domain's minimum
    standbys: int = 0  # standby control planes (own processes) that take the floor over when this one dies
    # control-plane replicas in all, beyond one machine (PostgreSQL and the bus): this one holds the lease, each
    # other one (its own process) issues certificates, tokens and tables too and takes the lease when it frees
    replicas: int = 1
    control_ports: tuple[int, int] = (0, 0)  # (bootstrap, control) to listen on; (0, 0): free ports
    instance: str = ""  # names this control plane's spools beside others of the same floor (a standby's)
    deployment: Deployment | None = None  # services placed on hosts by address (None: all on 127.0.0.1)
    table_ttl_s: float | None = None  # the decision tables' hard lifetime (None: the policy engine's, 300 s)
    bind: str = ""  # the control plane's listening address ("": the deployment's control address, or 127.0.0.1)
    # each control-plane replica ships its own spools over the bus (replicas on machines of their own: control serve)
    ship_spools: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}", reason="config.floor.mode")
        self.home = Path(self.home)
        self.topology_path = Topology.path_for(self.policies)
        self.topology = Topology.load(self.topology_path)
        self.ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        self.metrics: MetricsEndpoint | None = None
        self.bus: NatsBus | None = None
        self.bus_outbox: RevocationOutbox | None = None
        self._bus_task: asyncio.Task | None = None
        self.audit_consumer: AuditConsumer | None = None
        self._audit_task: asyncio.Task | None = None
        self._audit_stop: asyncio.Event | None = None
        self.approval_key = secrets.token_bytes(32).hex()
        self.fix_edge: dict[str, Any] = {}
        self.fix_port = 0
        self._collector: PeriodicCollector | None = None
        self._plane_lock = threading.Lock()  # the collector flushes the plane's spools; stop closes them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._learn_lock = threading.Lock()
        self._learn_pending = 0
        self.learn_errors = 0
        self.posture_agents: PostureAgentServer | None = None
        self._control_expired = 0  # kept for the summary after stop()
        self._maintenance: asyncio.Task | None = None
        self._state_watch: asyncio.Task | None = None
        self.lease = ControlLease(self.home)
        self.standby_ports: list[tuple[int, int]] = []  # (bootstrap, control) of each standby
        self.standby_procs: list[asyncio.subprocess.Process] = []
        self.takeover: dict[str, float] = {}  # when this plane took the floor over (a standby's)
        self.fenced = False  # this plane lost the lease (it hung, another took over): it no longer acts
        self._follow_task: asyncio.Task | None = None  # a follower replica's catch-up loop
        self.spool_shippers: list[SpoolShipper] = []  # this replica's own spools over the bus (ship_spools)
        self._ship_tasks: list[asyncio.Task] = []
        self._ship_stop = asyncio.Event()
        self._lease_task: asyncio.Task | None = None

    @property
    def followers(self) -> int:
        """The follower replicas this plane starts (``replicas`` - 1; standbys when the floor has replicas)."""
        return max(0, self.replicas - 1) if self.mode == ZERO_TRUST and not self.instance else 0

    @property
    def control_host(self) -> str:
        if self.bind:
            return self.bind
        return self.deployment.control if self.deployment is not None else "127.0.0.1"

    def address_of(self, service: str) -> str:
        return self.deployment.address_of(service) if self.deployment is not None else "127.0.0.1"

    @property
    def manifest_path(self) -> Path:
        return self.home / "floor" / "runtime.json"

    # ------------------------------------------------------------------ start
    async def start(self) -> "Floor":
        if self.fix_port_fixed and "fix-gateway" in self.services:
            _check_port_free(self.fix_port_fixed)
        if self.md_csv is not None:  # a bad file is refused here (marketdata.*), before any process starts

            self.md_csv = Path(self.md_csv).resolve()
            CsvReplay.open(self.md_csv, known_symbols=self.topology.symbols)
        (self.home / "floor" / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.followers and not (database_url() and self.bus_url):
            raise ConfigError("control-plane replicas share PostgreSQL ($TRUSTFABRIC_DATABASE_URL) and the bus "
                              "(--bus): give both", reason="config.floor.replicas")
        if self.mode == ZERO_TRUST:
            if not self.lease.try_acquire():
                raise ConfigError(f"another control plane holds the floor at {self.home}",
                                  reason="config.floor.lease_held")
            await self._start_control_plane()
        else:
            self.server = await ControlServer(None, mode=self.mode).start(self.control_host)
        taken: set[int] = {self.fix_port_fixed} if self.fix_port_fixed else set()
        if self.mode == ZERO_TRUST:
            self.standby_ports = [(free_port(taken), free_port(taken)) for _ in range(self.standbys + self.followers)]
        self.ports = {name: free_port(taken) for name in self.services}
        # Prometheus: one loopback port per service, and the control plane's (floor/runtime.json lists them)
        self.metrics_ports = {name: free_port(taken) for name in self.services}
        self.metrics = MetricsEndpoint(ControlMetrics(self.plane, self.server).collect).start("127.0.0.1", 0)
        if "fix-gateway" in self.services:
            self.fix_edge = fix_edge_pki(self.home, self.topology.trust_domain)
            self.fix_port = self.fix_port_fixed or free_port(taken)
            EdgePki.open(self.home, self.topology.trust_domain, time.time()).record_gateway(
                self.address_of("fix-gateway"), self.fix_port)
        self.started_at = time.time()
        if self.collect_audit:
            self._start_collector()
            self._consume_audit(self.services)
        if self.followers:  # serving before the services ask them for tables
            try:
                await self._start_standbys()
            except (ConfigError, TimeoutError) as exc:
                await self.stop()
                raise ConfigError(f"control-plane replicas did not start: {exc}", reason="config.floor.replicas"
                                  ) from None
        await asyncio.gather(*(self.spawn(name) for name in self._startable()))
        bad = {n: p.detail for n, p in self.processes.items() if p.status != "ready"}
        if not bad and self.standby_ports and not self.followers:
            try:
                await self._start_standbys()
            except (ConfigError, TimeoutError) as exc:
                bad["standby"] = str(exc)
        self.write_manifest()
        if bad:
            await self.stop()
            raise ConfigError(f"services did not start: {bad}", reason="config.floor.start_failed")
        return self

    async def _start_control_plane(self, *, writer: bool = True) -> None:
        """The control plane and its server; holding the lease, also its duties (:meth:`_lead`). A follower
        replica (``writer`` False) serves with the state of record caught up before every answer."""
        self.plane = ControlPlane(self.home, policies=self.policies, leaf_ttl_s=self.cert_ttl_s,
                                  posture_max_age_s=self.posture_max_age_s, instance=self.instance, writer=writer)
        fix_operate.register(self.plane)  # fix client add | renew: operator actions of this plane
        hosts.register(self.plane, self.deployment)  # host enrol: a machine's runner gets its keys and join tokens
        if self.table_ttl_s is not None:  # how long a point serves a table it cannot renew, at most
            self.plane.engine.table_ttl_s = float(self.table_ttl_s)
        if not writer:
            self.plane.follower = Follower(self.plane, SharedVersions(database_url(), database_schema()))
            await asyncio.to_thread(self.plane.follower.catch_up)
        self.server = await ControlServer(self.plane).start(self.control_host, bootstrap_port=self.control_ports[0],
                                                            control_port=self.control_ports[1])
        if writer:
            await self._lead()
            return
        loop = asyncio.get_running_loop()
        self._state_watch = loop.create_task(self._watch_state())
        self._follow_task = loop.create_task(self._follow())
        if self.bus_url:  # the security events a follower sees go to the lease holder's response engine
            bus = await self._connect_bus()
            plane = self.plane

            def relay(events: list[AuditEventV1]) -> None:
                raw = [encode_event(e) for e in events]
                loop.call_soon_threadsafe(lambda: loop.create_task(bus.publish_events(raw)))

            plane.relay_events = relay

    async def _lead(self) -> None:
        """The lease holder's duties: the bus (revocations out, followers' security events in), the enforcement
        points' registry, the posture agents, the state watch and the lease renewed."""
        assert self.plane is not None
        if self.bus_url:
            await self._start_bus()
        self.plane.register_points(list(self.services))
        await self._start_posture_agents()
        self._lease_task = asyncio.get_running_loop().create_task(self._hold_lease())

    async def _follow(self) -> None:
        """A follower replica catches up every ``FOLLOW_S`` as well, so that a request finds it current, and
        writes its spools out every ``collect_interval_s`` (the lease holder's collector ships them)."""
        flushed = time.monotonic()
        while self.plane is not None and self.plane.follower is not None:
            with contextlib.suppress(Exception):  # refused here means refused at the next request: fail closed
                await asyncio.to_thread(self.plane.follower.catch_up)
            if time.monotonic() - flushed >= self.collect_interval_s:
                flushed = time.monotonic()
                await asyncio.to_thread(self._flush_plane_spools)
            await asyncio.sleep(FOLLOW_S)

    async def take_over(self, services: dict[str, dict[str, Any]]) -> "Floor":
        """A standby holding the lease: run the control plane for services that are already running.

        ``services`` is the runtime manifest's (name -> port, pid, SPIFFE ID): they are adopted, not
        started; they find this plane on their next control endpoint. The collector ships what the
        dead plane left in the spools (the log stores each record once) and the manifest names this
        process as the floor's.
        """
        started = time.monotonic()
        self.takeover["lease_at"] = time.time()
        if self.plane is None:
            await self._start_control_plane()
        else:  # a follower replica, already serving: it leads from now on
            if self._follow_task is not None:
                self._follow_task.cancel()
                self._follow_task = None
            await asyncio.to_thread(self.plane.lead)
            await self._lead()
        assert self.plane is not None
        self.ports = {name: int(entry.get("port", 0)) for name, entry in services.items()}
        self.metrics = MetricsEndpoint(ControlMetrics(self.plane, self.server).collect).start("127.0.0.1", 0)
        self.started_at = time.time()
        if self.collect_audit:
            self._start_collector()
            self._consume_audit(tuple(services))
        for name, entry in services.items():
            self.processes[name] = Process(name, _Adopted(int(entry["pid"])), int(entry.get("port", 0)),  # type: ignore[arg-type]
                                           str(entry.get("spiffe_id", "")), status="ready")
        self.write_manifest()
        self.takeover["active_at"] = time.time()
        self.plane.emitter.emit(Kind.ADMIN_ACTION, principal=self.plane.control_id, action="control.takeover",
                                resource=str(self.home), decision="allow",
                                detail={"services": len(services), "took_ms": round((time.monotonic() - started) * 1000, 1)})
        return self

    async def serve_replica(self, stop: threading.Event, announce: Any = None) -> bool:
        """``trustfabric control serve``: this process is one of the deployment's control-plane replicas, on the
        ports the file gives it; the machines' runners start the services (nothing is spawned here). It holds
        the lease at once when it is free, else serves as a follower and takes the lease when it frees. False
        when ``stop`` came before it held the lease."""
        assert self.deployment is not None
        (self.home / "floor" / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.lease.try_acquire():
            await self._start_control_plane()
        else:
            await self._start_control_plane(writer=False)
            self.replica_status("follower")
            if announce is not None:
                announce("follower")
            if not await asyncio.to_thread(self.lease.acquire, stop):
                return False
            await self.take_over({})
        assert self.plane is not None
        for name in self.deployment.services:  # this installation's service releases, as the launcher does
            self.promote(name)
        self.ports, self.metrics_ports = self.deployment.ports(), self.deployment.metrics_ports()
        if self.metrics is None:
            self.metrics = MetricsEndpoint(ControlMetrics(self.plane, self.server).collect).start("127.0.0.1", 0)
        if self.collect_audit and self._collector is None:
            self._start_collector()
            self._consume_audit(self.deployment.services)
        self.started_at = self.started_at or time.time()
        self.write_manifest()
        self.replica_status("holder")
        return True

    async def close_follower(self) -> None:
        """A follower replica stopped before it held the lease: its server and plane close; the floor is not its
        to stop (no manifest is touched, no collector ran)."""
        if self._follow_task is not None:
            self._follow_task.cancel()
        if self._state_watch is not None:
            self._state_watch.cancel()
        if self.server is not None:
            await self.server.close()
        if self.plane is not None:
            await asyncio.to_thread(self._flush_plane_spools)
            self._ship_stop.set()  # what it wrote is shipped when it serves again (from its ack)
            for task in self._ship_tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 2.0)
            self.plane.close()
            self.plane = None
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        self.replica_status("stopped")

    def replica_status(self, role: str) -> None:
        """A follower replica's line in ``floor/replicas/<instance>.json`` (the holder writes the manifest)."""
        path = self.home / "floor" / "replicas" / f"{self.instance or 'control-plane'}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"role": role, "pid": os.getpid(), "at": time.time(),
                                    "bootstrap_port": self.server.bootstrap_port if self.server else 0,
                                    "control_port": self.server.control_port if self.server else 0}))

    def _startable(self) -> tuple[str, ...]:
        """The services to start: one whose identity is quarantined is left out (``left_out``, and an
        audit event), so that the rest of the floor starts without it instead of not at all."""
        plane = self.plane
        if plane is None:
            return self.services
        for name in self.services:
            try:
                sid = self.topology.spiffe_id(name)
            except KeyError:
                continue  # spawn refuses it
            if plane.is_quarantined(sid) or plane.identity.revocations.is_quarantined(sid):
                self.left_out[name] = SERVICE_QUARANTINED
                plane.emitter.emit(Kind.ADMIN_ACTION, principal=sid, action="floor.start", resource=name,
                                   decision="deny", reason=SERVICE_QUARANTINED)
        return tuple(name for name in self.services if name not in self.left_out)

    async def _start_posture_agents(self) -> None:
        """One agent socket per host (0700 directory) and the maintenance loop."""
        assert self.plane is not None
        self.posture_agents = await PostureAgentServer(self.plane.agents, self.home / "floor" / "run" / "posture"
                                                       ).start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        if self._state_watch is None:
            self._state_watch = asyncio.get_running_loop().create_task(self._watch_state())

    async def _watch_state(self) -> None:
        """Beyond one machine: reach the state of record every ``STATE_CHECK_S`` (in a worker thread, so a
        server that hangs never stalls the loop); the plane refuses to issue while it cannot."""
        while self.plane is not None and getattr(self.plane.identity.store, "remote", False):
            plane = self.plane
            await asyncio.to_thread(plane.check_state)
            await asyncio.sleep(STATE_CHECK_S)

    def maintenance_interval_s(self) -> float:
        """Often enough that posture verdicts and the plane's certificate never lapse between two passes."""
        assert self.plane is not None
        return max(0.2, min(5.0, self.plane.posture_minimum.max_age_s / 4, self.cert_ttl_s / 8))

    async def _maintain(self) -> None:
        while self.plane is not None:
            await asyncio.sleep(self.maintenance_interval_s())
            plane = self.plane
            if plane is None:
                return
            try:
                plane.refresh_posture()
                plane.rotate_own_certificate()
            except Exception:  # noqa: BLE001 - tried again next pass; staleness then fails closed
                plane.counters["maintenance_failures"] = plane.counters.get("maintenance_failures", 0) + 1


    # ------------------------------------------------------------------ audit collection
    @property
    def collected(self) -> int:
        """Records the collector added to the central log during this run."""
        return self._collector.collected if self._collector is not None else 0

    @property
    def collector_error(self) -> str:
        """The reason of the collector's last failure ("" when its last pass was clean)."""
        return self._collector.error if self._collector is not None else ""

    async def _connect_bus(self) -> NatsBus:
        """This control plane's connection to the bus (its own certificate files: replicas each have theirs)."""
        assert self.plane is not None
        if self.bus is None:
            creds_dir = self.home / "floor" / "creds" / self.plane.source
            self.plane.credentials.write(creds_dir)
            self.bus = await NatsBus(self.bus_url, client_tls(creds_dir / "cert.pem", creds_dir / "key.pem",
                                                              creds_dir / "bundle.pem"), self.plane.source).connect()
            if self.ship_spools:  # the lease holder's consumer commits them, wherever this replica runs
                for spool in (self.plane.spool, self.plane.identity.emitter.sink):
                    if isinstance(spool, Spool):
                        shipper = await SpoolShipper(self.bus, spool.directory.name, spool.directory).start()
                        self.spool_shippers.append(shipper)
                        self._ship_tasks.append(asyncio.get_running_loop().create_task(shipper.run(self._ship_stop)))
        return self.bus

    async def _start_bus(self) -> None:
        """The control plane on the NATS bus: every revocation (quarantines too) is published there as well,
        de-duplicated by its store version, and recorded in the bucket reconnecting points read first; the
        security events the follower replicas see come in to the response engine."""
        assert self.plane is not None
        await self._connect_bus()
        assert self.bus is not None
        await self.bus.prepare()
        plane = self.plane
        await self.bus.on_events(lambda raw: plane.observe_encoded(raw) if plane.follower is None else None)
        loop = asyncio.get_running_loop()
        self.bus_outbox = RevocationOutbox(self.bus)
        self._bus_task = loop.create_task(self.bus_outbox.run())

        def forward(item: Any) -> None:  # the plane's listeners run on its thread: hand over to the loop
            kind = getattr(item, "kind", "")
            if kind in ("serial", "spiffe_id", "release_spiffe_id"):
                msg_id = f"{kind}:{item.value}:{getattr(item, 'version', '')}"
                loop.call_soon_threadsafe(self.bus_outbox.put, kind, str(item.value), item.reason, msg_id)

        self.plane.subscribe(forward)

    def start_collector(self) -> None:
        """Start shipping the spools to the central log on a floor started without it (``collect_audit=False``)."""
        if self._collector is None:
            self._start_collector()

    def _start_collector(self) -> None:
        """The periodic collector (its own thread); the baselines learn from the decision records it ships."""
        self._loop = asyncio.get_running_loop()
        learn = None
        if self.plane is not None:
            self.plane.response.attach_decision_stream()
            learn = self._hand_decisions
        self._collector = PeriodicCollector(
            self._open_central_log, self.home / "spool", interval_s=self.collect_interval_s, flush_first=(self._flush_plane_spools,),
            on_decisions=learn).start()

    def _open_central_log(self) -> Any:
        """The central log for this plane's collector. Beyond one machine its store may end the session of a
        sequencer that hung (the control plane this one took the lease from): only while a renewal of the lease,
        made right then, says this plane still holds it (a hung plane that came back finds it taken, and
        ends nobody's session)."""
        log = open_log(audit_dir(self.home), checkpoint_interval_s=CHECKPOINT_INTERVAL_S)
        if self.mode == ZERO_TRUST and hasattr(log.store, "preempt"):
            log.store.preempt = lambda: not self.fenced and self.lease.beat()
        return log

    def _consume_audit(self, services: tuple[str, ...] | list[str]) -> None:
        """On the bus, the services ship their spools over it (the file collector leaves those to them) and
        this plane takes them off the audit stream into the central log."""
        if self.bus is None or self._collector is None or self.mode != ZERO_TRUST:
            return
        self._collector.skip.update(services)
        if self.ship_spools and self.deployment is not None:  # every replica ships its own over the bus
            self._collector.skip.update(f"{prefix}-{r.name}" for r in self.deployment.replicas
                                        for prefix in (SOURCE, AUDIT_SOURCE))
        self.audit_consumer = AuditConsumer(self.bus, self._collector.submit)
        self._audit_stop = asyncio.Event()
        self._audit_task = asyncio.get_running_loop().create_task(self.audit_consumer.run(self._audit_stop))

    def _flush_plane_spools(self) -> None:
        """The collector's thread: this process's spools (the control plane's, the identity plane's) buffer
        their records; each pass writes them out first so that they are shipped while the floor runs."""
        with self._plane_lock:
            plane = self.plane
            if plane is None:
                return
            for spool in (plane.spool, plane.identity.emitter.sink):
                if isinstance(spool, Spool):
                    spool.flush()

    def _hand_decisions(self, events: list[AuditEventV1]) -> None:
        """The collector's thread: queue shipped decisions for the event loop, where the engine acts."""
        loop = self._loop
        if loop is None or self.plane is None:
            return
        with self._learn_lock:
            if self._learn_pending + len(events) > MAX_LEARN_PENDING:
                raise AuditError(f"{self._learn_pending} decisions still wait for the baselines; "
                                 f"{len(events)} more not learned", reason="audit.collector.learn_backlog")
            self._learn_pending += len(events)
        for i in range(0, len(events), LEARN_CHUNK):
            loop.call_soon_threadsafe(self._learn, events[i:i + LEARN_CHUNK])

    def _learn(self, events: list[AuditEventV1]) -> None:
        """The event loop: the response engine's baselines learn a chunk of the floor's decisions."""
        with self._learn_lock:
            self._learn_pending -= len(events)
        plane = self.plane
        if plane is None:
            return
        try:
            plane.alerts.extend(plane.response.learn(events))
        except Exception:  # noqa: BLE001 - counted; the records are in the log, the floor goes on
            self.learn_errors += 1

    async def stop_collector(self, timeout_s: float = 60.0) -> None:
        """Last collection pass (after the spools' writers stopped) and a tree head over the whole log, bounded."""
        collector = self._collector  # kept: collected and collector_error still tell after the run
        if collector is None:
            return
        await asyncio.get_running_loop().run_in_executor(None, collector.stop, timeout_s)

    def boot_line(self, name: str, *, identity: str | None = None, join_token: str | None = None) -> dict[str, Any]:
        identity = identity or name
        boot: dict[str, Any] = {
            "home": str(self.home), "topology": str(self.topology_path), "ports": self.ports, "seed": self.seed,
            "md_interval_s": self.md_interval_s, "control_port": self.server.control_port,  # type: ignore[union-attr]
        }
        if self.deployment is not None:  # several hosts: where each service and the control plane listen
            boot["addresses"] = self.deployment.addresses(list(self.ports))
            boot["control_host"] = self.deployment.control_for(identity)
        if self.standby_ports:  # where to look when this control plane is gone
            boot["control_ports"] = [self.server.control_port, *(c for _b, c in self.standby_ports)]  # type: ignore[union-attr]
            if self.followers:  # the services spread over the replicas for their tokens, tables and renewals
                spread = boot["control_ports"]
                boot["read_port"] = spread[(list(self.services).index(name) if name in self.services else 0)
                                           % len(spread)]
        if identity in self.metrics_ports:
            boot["metrics_port"] = self.metrics_ports[identity]
        if self.bus_url:
            boot["bus_url"] = self.bus_url
            if self.mode == ZERO_TRUST:
                boot["audit_over_bus"] = True  # the spool goes to the central log over the bus
        if name in ("pre-trade-risk", "order-router"):
            boot["approval_key"] = self.approval_key
        if self.md_csv is not None and name in MD_CSV_SERVICES:
            boot["md_csv"] = str(self.md_csv)
        if name == "pre-trade-risk" and self.fix_edge:
            boot["agent_aliases"] = {client: self.fix_edge["fix_clients"][comp]
                                     for comp, client in FIX_CLIENTS.items() if comp in self.fix_edge["fix_clients"]}
        if name == "fix-gateway":
            boot.update(fix_port=self.fix_port, fix_edge_dir=self.fix_edge["fix_edge_dir"],
                        fix_clients=self.fix_edge["fix_clients"], fix_comp_id=self.fix_edge["fix_comp_id"])
        if self.plane is not None:
            if self.posture_agents is not None:
                boot["posture_socket"] = str(self.posture_agents.paths[self.topology.services[identity].host])
            boot.update(bootstrap_port=self.server.bootstrap_port,  # type: ignore[union-attr]
                        control_id=self.plane.control_id,
                        bundle_pem=self.plane.credentials.bundle_pem.decode(),
                        join_token=join_token or self.plane.issue_join_token(identity),
                        posture=base64.b64encode(self.plane.posture_report(identity)).decode())
        boot.update(self.boot_extra)
        return boot

    def promote(self, name: str) -> str:
        digest = code_digest_of(module_file(name), name)
        if self.plane is not None:
            self.plane.promote(name, digest)
        return digest

    async def launch(self, name: str, boot: dict[str, Any], *, identity: str | None = None,
                     timeout_s: float = READY_TIMEOUT_S) -> Process:
        """Start one service process and wait for its READY (or REFUSED) line."""
        return await start_service(self.home, name, boot, mode=self.mode, identity=identity,
                                   port=self.ports.get(identity or name, 0),
                                   spiffe_id=self.topology.spiffe_id(identity or name), timeout_s=timeout_s)

    async def spawn(self, name: str) -> None:
        if name not in SERVICES:
            raise ConfigError(f"unknown service {name}", reason="config.floor.unknown_service")
        self.promote(name)
        self.processes[name] = await self.launch(name, self.boot_line(name))

    def write_manifest(self) -> None:
        data = {"mode": self.mode, "started_at": self.started_at, "pid": os.getpid(),
                "control": {"control_port": self.server.control_port if self.server else 0,
                            "bootstrap_port": self.server.bootstrap_port if self.server else 0,
                            "spiffe_id": self.plane.control_id if self.plane else "",
                            "bundle_pem": self.plane.credentials.bundle_pem.decode() if self.plane else ""},
                "fix": {"port": self.fix_port, "comp_id": self.fix_edge.get("fix_comp_id", ""),
                        "clients": self.fix_edge.get("client_dirs", {}),
                        "bindings": self.fix_edge.get("fix_clients", {})} if self.fix_port else {},
                "left_out": dict(self.left_out),
                "standbys": [{"bootstrap_port": b, "control_port": c, "pid": p.pid}
                             for (b, c), p in zip(self.standby_ports, self.standby_procs)],
                "replicas": self.replicas if self.followers else 1,
                "takeover": dict(self.takeover),
                "metrics": {"control-plane": self.metrics.port if self.metrics else 0,
                            **{n: self.metrics_ports.get(n, 0) for n in self.processes}},
                "deployment": ({"source": self.deployment.source, "control": self.deployment.control,
                                "hosts": {h.name: h.address for h in self.deployment.hosts}}
                               if self.deployment is not None else {}),
                "services": {n: {"port": p.port, "pid": p.proc.pid, "spiffe_id": p.spiffe_id, "status": p.status,
                                 "mode": self.mode, "address": self.address_of(n),
                                 "host": self.deployment.host_of(n) if self.deployment is not None else ""}
                             for n, p in self.processes.items()},
                # a floor run by per-host runners (trustfabric control serve): where each service is, no pid here
                "hosted": {n: {"port": port, "address": self.address_of(n), "host": self.deployment.host_of(n)}
                           for n, port in self.ports.items() if n not in self.processes}
                if self.deployment is not None and not self.processes else {}}
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest_path.write_text(json.dumps(data, indent=2))

    # ------------------------------------------------------------------ running
    def stats(self) -> dict[str, dict[str, float]]:
        return dict(self.server.stats) if self.server else {}

    def links(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        if self.server:
            for per in self.server.links.values():
                out.update(per)
        return out

    def control_expired_cert_uses(self) -> int:
        """Expired certificates met at the control plane: refused handshakes, channels that outlived one."""
        if self.plane is not None and self.server is not None:
            self._control_expired = self.plane.counters["expired_cert_uses"] + self.server.expired_cert_refusals
        return self._control_expired

    def total(self, key: str) -> float:
        return sum(s.get(key, 0.0) for s in self.stats().values())

    def command(self, service: str, name: str, **args: Any) -> bool:
        return bool(self.server and self.server.send_command(service, name, **args))

    async def kill_switch(self, action: str, scope: str, target: str, *, user: str, password: str, totp: str
                          ) -> dict[str, Any]:
        """A person's kill-switch command through the control plane (what ``trustfabric floor halt`` sends)."""

        if self.server is None:
            raise ConfigError("the floor is not running", reason="config.floor.not_running")
        reply = await self.server.kill_switch(KillSwitchRequest(user=user, password=password, totp=totp,
                                                                action=action, scope=scope, target=target))
        return {"ok": reply.ok, "reason": reply.reason, "state": reply.state, "pending": reply.pending,
                "cancels": reply.cancels, "operator": reply.operator}

    async def wait_for(self, predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(interval_s)
        return predicate()

    # ------------------------------------------------------------------ stop
    async def stop(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            self._follow_task = None
        if self._lease_task is not None:
            self._lease_task.cancel()
            self._lease_task = None
        if self.fenced:  # the floor is another control plane's now: its services and standbys are left alone
            self.processes.clear()
            self.standby_procs.clear()
        await stop_processes(self.standby_procs)  # first: a standby must not take over a floor that is stopping
        await stop_processes(p.proc for p in self.processes.values())
        if self._maintenance is not None:
            self._maintenance.cancel()
            self._maintenance = None
        if self._state_watch is not None:
            self._state_watch.cancel()
            self._state_watch = None
        if self.posture_agents is not None:
            await self.posture_agents.close()
        self.control_expired_cert_uses()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self._audit_task is not None:  # what it took off the stream is committed by the collector's last pass
            self._audit_stop.set()  # type: ignore[union-attr]
            with contextlib.suppress(Exception, asyncio.CancelledError):  # cancelled already when fenced
                await asyncio.wait_for(self._audit_task, 5.0)
            self._audit_task = None
        if self._collector is not None:  # the services stopped: their spools' rest is shipped from the files
            self._collector.skip.clear()
        self._ship_stop.set()
        for task in self._ship_tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 2.0)
        if self._bus_task is not None:
            self._bus_task.cancel()
            self._bus_task = None
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
            self.bus = None
        if self.server is not None:
            await self.server.close()
        if self.plane is not None:
            with self._plane_lock:  # not while the collector flushes its spools
                self.plane.close()
                self.plane = None
        if not self.fenced:
            self.mark_stopped()
            await self.stop_collector()
        self.lease.release()

    def mark_stopped(self) -> None:
        """The manifest says the floor stopped: commands then write the store (no control plane to ask)."""
        try:
            data = json.loads(self.manifest_path.read_text())
            data["stopped_at"] = time.time()
            self.manifest_path.write_text(json.dumps(data, indent=2))
        except (OSError, ValueError):
            pass  # no manifest written (a failed start): nothing names this floor

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes.values()]


# ---------------------------------------------------------------------- summaries

def floor_summary(floor: Floor) -> dict[str, Any]:
    """The floor's counters summed over its services (what the demo and ``up`` show)."""
    stats = floor.stats()
    plane = floor.plane
    control_refusals = 0.0
    if plane is not None:
        control_refusals = plane.counters["token_refusals"] + plane.counters["join_refusals"]
    return {
        "orders_submitted": int(floor.total("orders_submitted")),
        "orders_filled": int(stats.get("oms", {}).get("orders_filled", 0)),
        "fills": int(stats.get("oms", {}).get("oms_fills", 0)),
        "risk_rejects": int(floor.total("risk_rejects") - sum(s.get("risk_rejects", 0) for n, s in stats.items()
                                                            if n.startswith("algo-"))),
        "decisions_allowed": int(floor.total("pep_allowed")),
        "denied_hops": int(floor.total("pep_denied") + floor.total("pep_refused") + floor.total("handshake_refusals")
                           + control_refusals),
        "fail_open": int(floor.total("fail_open")),
        "settlement_fills": int(stats.get("settlement", {}).get("settlement_fills", 0)),
        **certificate_summary(floor),
    }


def certificate_summary(floor: Floor) -> dict[str, Any]:
    """Renewals and any use of an expired certificate, summed over the services and the control plane."""
    lefts = [s["cert_left_s"] for s in floor.stats().values() if "cert_left_s" in s]
    return {"cert_ttl_s": floor.cert_ttl_s,
            "renewals": int(floor.total("renewals")),
            "renewal_failures": int(floor.total("renewal_failures")),
            "expired_cert_uses": int(floor.total("expired_cert_uses") + floor.control_expired_cert_uses()),
            "connection_moves": int(floor.total("connection_moves")),
            "min_cert_left_s": min(lefts) if lefts else 0.0}
