"""The per-host runner: one machine's part of a floor that runs without the launcher (``trustfabric host serve``).

The deployment file fixes every address and port (:meth:`~trustfabric.trading.deployment.Deployment.require_fixed`);
an officer enrolled this host (:mod:`trustfabric.trading.hosts`) and copied the enrolment directory here:
the posture-agent keys of the host's posture hosts, one join token per service, the floor's trust bundle,
the control plane's SPIFFE ID and the approval key. :class:`HostRunner`

1. runs the host's posture agents with those keys on Unix sockets under ``$TRUSTFABRIC_HOME/floor/run/posture``
   (the services ask them for fresh signed reports before their join and every renewal);
2. submits each agent's fresh report to the lease holder (:class:`~trustfabric.control.protocol.PostureSubmit`
   on the bootstrap port of each replica in turn: a follower refuses it, ``control.not_leader``) now and every
   quarter of the posture window, so the floor's decisions see this host's posture;
3. starts every service the file places here (``python -m trustfabric.trading.services``, the boot line on its
   stdin), which joins at a replica with its token, reaches every replica for its tokens and tables and its
   peers at their hosts' addresses, and ships its audit over the bus;
4. on :meth:`HostRunner.stop` sends SIGTERM, then SIGKILL after a bound: no orphans.

Nothing here holds a credential beyond what the enrolment gave it; a refused join leaves the service out
(its reason printed and in its log) and the runner reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.control import client as control_client
from trustfabric.control.errors import ControlRefused
from trustfabric.control.protocol import PostureReply, PostureSubmit
from trustfabric.errors import ConfigError
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology
from trustfabric.signals.agent_socket import PostureAgentServer
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import DEFAULT_SECURITY_AGENTS, encode_signed, requirements_for_domain
from trustfabric.trading.deployment import Deployment
from trustfabric.trading.hosts import topology_hosts
from trustfabric.trading.launcher import Process, start_service
from trustfabric.trading.processes import stop_processes

ENROLMENT_FILE = "enrolment.json"
KEYS_DIR = "keys"
POSTURE_SUBMIT_MAX_S = 5.0


def read_enrolment(directory: Path) -> tuple[dict[str, Any], dict[str, Ed25519PrivateKey]]:
    """The enrolment and the agents' private keys; :class:`ConfigError` (``host.enrolment``) when unreadable."""
    try:
        data = json.loads((directory / ENROLMENT_FILE).read_text())
        keys = {}
        for path in sorted((directory / KEYS_DIR).glob("*.pem")):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path.name} is not an Ed25519 key")
            keys[path.stem] = key
        data["tokens"] = json.loads(data["tokens"]) if isinstance(data.get("tokens"), str) else data["tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{directory}: not a readable enrolment ({exc})", reason="host.enrolment") from None
    return data, keys


class HostRunner:
    def __init__(self, home: Path, deployment: Deployment, host: str, enrolment: Path, *, seed: int = 7,
                 md_interval_s: float = 0.2) -> None:
        deployment.require_fixed()
        self.home, self.deployment, self.host = Path(home), deployment, deployment.host(host)
        self.topology_path = FLOOR_MANIFEST
        self.topology = Topology.load(self.topology_path)
        self.enrolment, keys = read_enrolment(Path(enrolment))
        if self.enrolment.get("host") != host:
            raise ConfigError(f"the enrolment is for {self.enrolment.get('host')!r}, not {host!r}",
                              reason="host.enrolment")
        posture_hosts = topology_hosts(deployment, self.topology, host)
        if set(keys) != set(posture_hosts):
            raise ConfigError(f"keys for {sorted(keys)}; this host's posture hosts are {sorted(posture_hosts)}",
                              reason="host.enrolment")
        minimum = requirements_for_domain(self.topology.trust_domain, self.topology_path)
        self.posture_window_s = minimum.max_age_s
        self.agents = {name: HostPostureAgent(name, key, watch=DEFAULT_SECURITY_AGENTS
                                              + minimum.for_host(name).security_agents)
                       for name, key in keys.items()}
        self.seed, self.md_interval_s = seed, md_interval_s
        self.processes: dict[str, Process] = {}
        self.posture: PostureAgentServer | None = None
        self.submitted = 0
        self.submit_failures = 0
        self.last_refusal = ""
        self._posture_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ posture
    async def submit_posture(self) -> bool:
        """Each agent's fresh report to the lease holder (the replicas in the file's order); True when all took."""
        ok = True
        for agent in self.agents.values():
            report = encode_signed(agent.report(time.time()))
            if not await self._submit(report):
                ok = False
        return ok

    async def _submit(self, report: bytes) -> bool:
        for replica in self.deployment.replicas:
            try:
                reply = await control_client.operator_request(
                    replica.address, replica.bootstrap_port, bundle_pem=self.enrolment["bundle_pem"].encode(),
                    control_id=self.enrolment["control_id"], request=PostureSubmit(report=report), timeout_s=5.0)
            except ControlRefused as exc:
                self.last_refusal = exc.reason
                continue  # a follower, or a replica that is down: the next one
            if isinstance(reply, PostureReply) and reply.ok:
                self.submitted += 1
                return True
        self.submit_failures += 1
        return False

    async def _posture_loop(self) -> None:
        interval = max(0.5, min(POSTURE_SUBMIT_MAX_S, self.posture_window_s / 4))
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # counted; the reports' staleness then fails closed
                await self.submit_posture()

    # ------------------------------------------------------------------ services
    def boot_line(self, name: str) -> dict[str, Any]:
        d, first = self.deployment, self.deployment.replicas[0]
        ports = [r.control_port for r in d.replicas]
        boot: dict[str, Any] = {
            "home": str(self.home), "topology": str(self.topology_path), "ports": d.ports(), "seed": self.seed,
            "md_interval_s": self.md_interval_s, "addresses": d.addresses(list(self.topology.services)),
            "control_host": first.address, "control_port": first.control_port, "control_ports": ports,
            "read_port": ports[list(d.services).index(name) % len(ports)], "bootstrap_port": first.bootstrap_port,
            "control_id": self.enrolment["control_id"], "bundle_pem": self.enrolment["bundle_pem"],
            "join_token": self.enrolment["tokens"][name],
            "posture_socket": str(self.posture.paths[self.topology.services[name].host]),  # type: ignore[union-attr]
            "metrics_port": d.metrics_ports()[name],
        }
        if d.bus:
            boot.update(bus_url=d.bus, audit_over_bus=True)
        if name in ("pre-trade-risk", "order-router"):
            boot["approval_key"] = self.enrolment["approval_key"]
        return boot

    async def _spawn(self, name: str) -> Process:
        return await start_service(self.home, name, self.boot_line(name), mode="zero-trust",
                                   port=self.deployment.ports()[name], spiffe_id=self.topology.spiffe_id(name))

    async def start(self) -> "HostRunner":
        (self.home / "floor" / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.posture = await PostureAgentServer(self.agents, self.home / "floor" / "run" / "posture").start()
        if not await self.submit_posture():
            await self.stop()
            raise ConfigError(f"no control-plane replica took this host's posture ({self.last_refusal or 'none'})",
                              reason="host.posture_refused")
        self._posture_task = asyncio.get_running_loop().create_task(self._posture_loop())
        records = await asyncio.gather(*(self._spawn(name) for name in self.host.services))
        self.processes = {r.name: r for r in records}
        self.write_status()
        return self

    def write_status(self) -> None:
        path = self.home / "floor" / "host.json"
        path.write_text(json.dumps({"host": self.host.name, "pid": os.getpid(), "posture_submitted": self.submitted,
                                    "services": {n: {"pid": p.proc.pid, "port": p.port, "status": p.status,
                                                     "detail": p.detail, "spiffe_id": p.spiffe_id}
                                                 for n, p in self.processes.items()}}, indent=2))

    async def stop(self) -> None:
        if self._posture_task is not None:
            self._posture_task.cancel()
        await stop_processes(p.proc for p in self.processes.values())
        if self.posture is not None:
            await self.posture.close()
            self.posture = None


def failed(runner: HostRunner) -> dict[str, str]:
    return {n: p.detail for n, p in runner.processes.items() if p.status != "ready"}

