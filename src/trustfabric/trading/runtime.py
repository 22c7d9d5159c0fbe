"""The floor launcher: control plane, services as processes on 127.0.0.1, runtime manifest, shutdown.

:class:`Floor` does what a deployment pipeline and an orchestrator would:

1. starts the control plane in this process's event loop (zero-trust) - or, in
   perimeter mode, only a plain report channel;
2. promotes the release digest of every service it is about to start, has each
   host's posture agent sign a fresh report, and asks for one join token per
   service instance;
3. starts every service (``python -m trustfabric.trading.services <name>``) with
   its boot line on stdin, waits (bounded) for ``READY <port>``, and writes
   ``$TRUSTFABRIC_HOME/floor/runtime.json`` (service -> port, pid, SPIFFE ID, mode);
4. collects the services' reports (stats, per-link latency) and, on
   :meth:`Floor.stop`, sends SIGTERM, then SIGKILL after a bound: no orphans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfabric.control.plane import DEFAULT_POLICIES, ControlPlane
from trustfabric.control.server import ControlServer
from trustfabric.errors import ConfigError
from trustfabric.policy.topology import Topology
from trustfabric.trading.services import SERVICES, module_file
from trustfabric.trading.services.base import MODES, ZERO_TRUST, code_digest_of

DEFAULT_SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
                    "risk-dashboard", "algo-meanrev", "algo-momentum")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    spiffe_id: str
    status: str = "starting"
    detail: str = ""


@dataclass
class Floor:
    home: Path
    mode: str = ZERO_TRUST
    services: tuple[str, ...] = DEFAULT_SERVICES
    seed: int = 7
    md_interval_s: float = 0.2
    policies: Path = DEFAULT_POLICIES
    boot_extra: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    plane: ControlPlane | None = None
    server: ControlServer | None = None
    started_at: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}", reason="config.floor.mode")
        self.home = Path(self.home)
        manifest = Path(self.policies) / "floor.toml"
        self.topology_path = manifest if manifest.exists() else Topology.default_path()
        self.topology = Topology.load(self.topology_path)
        self.ports: dict[str, int] = {}
        self.approval_key = secrets.token_bytes(32).hex()

    @property
    def manifest_path(self) -> Path:
        return self.home / "floor" / "runtime.json"

    # ------------------------------------------------------------------ start
    async def start(self) -> "Floor":
        (self.home / "floor" / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.mode == ZERO_TRUST:
            self.plane = ControlPlane(self.home, policies=self.policies)
            self.server = await ControlServer(self.plane).start()
            self.plane.register_points(list(self.services))
        else:
            self.server = await ControlServer(None, mode=self.mode).start()
        self.ports = {name: free_port() for name in self.services}
        self.started_at = time.time()
        await asyncio.gather(*(self.spawn(name) for name in self.services))
        bad = {n: p.detail for n, p in self.processes.items() if p.status != "ready"}
        self.write_manifest()
        if bad:
            await self.stop()
            raise ConfigError(f"services did not start: {bad}", reason="config.floor.start_failed")
        return self

    def boot_line(self, name: str, *, identity: str | None = None, join_token: str | None = None) -> dict[str, Any]:
        identity = identity or name
        boot: dict[str, Any] = {
            "home": str(self.home), "topology": str(self.topology_path), "ports": self.ports, "seed": self.seed,
            "md_interval_s": self.md_interval_s, "control_port": self.server.control_port,  # type: ignore[union-attr]
        }
        if name in ("pre-trade-risk", "order-router"):
            boot["approval_key"] = self.approval_key
        if self.plane is not None:
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
        argv = [sys.executable, "-m", "trustfabric.trading.services", name, "--mode", self.mode]
        if identity:
            argv += ["--as-identity", identity]
        log = open(self.home / "floor" / "logs" / f"{identity or name}.log", "ab")
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log,
                                                    start_new_session=True)
        log.close()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(boot).encode() + b"\n")
        await proc.stdin.drain()
        proc.stdin.close()
        record = Process(identity or name, proc, self.ports.get(identity or name, 0),
                         self.topology.spiffe_id(identity or name))
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout_s)).decode().strip()
        except TimeoutError:
            line = "TIMEOUT"
        if line.startswith("READY"):
            record.status = "ready"
        else:
            record.status = "refused" if line.startswith("REFUSED") else "failed"
            record.detail = line or f"exited {proc.returncode}"
        return record

    async def spawn(self, name: str) -> None:
        if name not in SERVICES:
            raise ConfigError(f"unknown service {name}", reason="config.floor.unknown_service")
        self.promote(name)
        self.processes[name] = await self.launch(name, self.boot_line(name))

    def write_manifest(self) -> None:
        data = {"mode": self.mode, "started_at": self.started_at,
                "control": {"control_port": self.server.control_port if self.server else 0,
                            "bootstrap_port": self.server.bootstrap_port if self.server else 0,
                            "spiffe_id": self.plane.control_id if self.plane else ""},
                "services": {n: {"port": p.port, "pid": p.proc.pid, "spiffe_id": p.spiffe_id, "status": p.status,
                                 "mode": self.mode} for n, p in self.processes.items()}}
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

    def total(self, key: str) -> float:
        return sum(s.get(key, 0.0) for s in self.stats().values())

    def command(self, service: str, name: str, **args: Any) -> bool:
        return bool(self.server and self.server.send_command(service, name, **args))

    async def wait_for(self, predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(interval_s)
        return predicate()

    # ------------------------------------------------------------------ stop
    async def stop(self) -> None:
        for p in self.processes.values():
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
        for p in self.processes.values():
            try:
                await asyncio.wait_for(p.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.proc.wait(), STOP_TIMEOUT_S)
        if self.server is not None:
            await self.server.close()
        if self.plane is not None:
            self.plane.close()
            self.plane = None

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes.values()]
