"""A host posture agent: inspects its host without privileges and signs what it saw (Ed25519).

:class:`HostInspector` reads what an unprivileged Linux process can tell, under a
root path (``/`` on a host; a fake tree in tests):

* the OS and its version: ``proc/sys/kernel/ostype``, ``proc/sys/kernel/osrelease``,
  ``etc/os-release`` (``ID``, ``VERSION_ID``);
* disk encryption: every mount in ``proc/mounts`` whose device is a device-mapper
  device (``/dev/mapper/<name>``, ``/dev/dm-<n>``) with a dm-crypt target under it,
  directly or through stacked devices (LVM on LUKS): ``sys/block/dm-<n>/dm/uuid``
  starting ``CRYPT-``, following ``sys/block/dm-<n>/slaves/``;
* running processes' names: ``proc/<pid>/comm``;
* listening TCP ports: ``proc/net/tcp`` and ``proc/net/tcp6``, state ``0A`` (LISTEN);
* clock synchronisation: on the real host ``adjtimex(2)`` read-only (the kernel's
  NTP state, which chronyd, ntpd and systemd-timesyncd all discipline: synchronised
  when the call does not return ``TIME_ERROR`` and ``STA_UNSYNC`` is clear), else
  systemd-timesyncd's ``run/systemd/timesync/synchronized`` flag.

A fact that cannot be read has its failing value (no kernel, nothing encrypted, not
synchronised). Inspections are cached for ``cache_s`` (one look serves every agent
of a machine that answers several requests at once).

:class:`HostPostureAgent` holds the host's key: :meth:`~HostPostureAgent.register`
puts its public key in a :class:`~trustfabric.signals.posture.HostKeyRegistry`, and
:meth:`~HostPostureAgent.report` inspects and signs at a given time. Which security
agents it looks for is its watch list; the verdict is never the agent's to make
(:func:`~trustfabric.signals.posture.evaluate_posture`, where the requirements are).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.signals.posture import (
    DEFAULT_SECURITY_AGENTS,
    HostKeyRegistry,
    PostureReport,
    SignedPostureReport,
    sign_report,
)

AGENT_VERSION = "trustfabric-agent/2"
TASK_COMM_LEN = 15  # the kernel keeps the first 15 characters of a process name in comm
MAX_PORTS = 4096
MAX_DM_DEPTH = 8
_TCP_LISTEN = "0A"
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


@dataclass(frozen=True)
class HostFacts:
    os: str
    os_id: str
    os_version: str
    kernel: str
    encrypted_mounts: tuple[str, ...]
    processes: frozenset[str]
    listening_ports: tuple[int, ...]
    time_synced: bool
    time_source: str


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


def adjtimex_synced() -> bool | None:
    """The kernel's view (``adjtimex`` with ``modes = 0``: read only); None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError, TypeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not timex.status & _STA_UNSYNC


def _read(path: Path, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


class HostInspector:
    """Facts about the host under ``root`` (see the module docstring); pure reads, no privileges."""

    def __init__(self, root: Path | str = "/", *, clock_sync: Callable[[], bool | None] | None = None,
                 cache_s: float = 1.0) -> None:
        self.root = Path(root)
        self._clock_sync = clock_sync if clock_sync is not None else (
            adjtimex_synced if self.root == Path("/") else (lambda: None))
        self.cache_s = cache_s
        self._cached: tuple[float, HostFacts] | None = None
        self._lock = threading.Lock()

    def inspect(self) -> HostFacts:
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.cache_s:
                return cached[1]
            facts = self._inspect()
            self._cached = (time.monotonic(), facts)
            return facts

    def _inspect(self) -> HostFacts:
        os_id, os_version = self.os_release()
        synced, source = self.time_sync()
        return HostFacts(os=_read(self.root / "proc/sys/kernel/ostype").strip(), os_id=os_id, os_version=os_version,
                         kernel=_read(self.root / "proc/sys/kernel/osrelease").strip(),
                         encrypted_mounts=self.encrypted_mounts(), processes=self.process_names(),
                         listening_ports=self.listening_ports(), time_synced=synced, time_source=source)

    def os_release(self) -> tuple[str, str]:
        values = {}
        for line in _read(self.root / "etc/os-release").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"').strip("'")
        return values.get("ID", ""), values.get("VERSION_ID", "")

    # -- disk encryption ---------------------------------------------------------------
    def _dm_name(self, device: str) -> str | None:
        """``/dev/dm-3`` or ``/dev/mapper/root`` -> ``dm-3``; None for any other device."""
        if device.startswith("/dev/dm-"):
            return device[len("/dev/"):]
        if device.startswith("/dev/mapper/"):
            mapped = device[len("/dev/mapper/"):]
            for block in sorted((self.root / "sys/block").glob("dm-*")):
                if _read(block / "dm/name").strip() == mapped:
                    return block.name
        return None

    def _is_crypt(self, dm: str, depth: int = 0) -> bool:
        block = self.root / "sys/block" / dm
        if _read(block / "dm/uuid").startswith("CRYPT-"):
            return True
        if depth >= MAX_DM_DEPTH:
            return False
        try:
            slaves = sorted(p.name for p in (block / "slaves").iterdir())
        except OSError:
            return False
        return any(s.startswith("dm-") and self._is_crypt(s, depth + 1) for s in slaves)

    def encrypted_mounts(self) -> tuple[str, ...]:
        found = []
        for line in _read(self.root / "proc/mounts").splitlines():
            fields = line.split()
            if len(fields) < 2:
                continue
            device, mount = fields[0], fields[1].replace("\\040", " ")
            dm = self._dm_name(device)
            if dm is not None and self._is_crypt(dm):
                found.append(mount)
        return tuple(sorted(set(found)))

    # -- processes and ports -----------------------------------------------------------
    def process_names(self) -> frozenset[str]:
        names = set()
        try:
            entries = os.scandir(self.root / "proc")
        except OSError:
            return frozenset()
        with entries:
            for entry in entries:
                if entry.name.isdigit():
                    name = _read(Path(entry.path) / "comm", 64).strip()
                    if name:
                        names.add(name)
        return frozenset(names)

    def listening_ports(self) -> tuple[int, ...]:
        ports = set()
        for table in ("proc/net/tcp", "proc/net/tcp6"):
            for line in _read(self.root / table, 16 << 20).splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == _TCP_LISTEN:
                    _addr, _, port = fields[1].rpartition(":")
                    try:
                        ports.add(int(port, 16))
                    except ValueError:
                        continue
        return tuple(sorted(ports)[:MAX_PORTS])

    # -- time --------------------------------------------------------------------------
    def time_sync(self) -> tuple[bool, str]:
        synced = self._clock_sync()
        if synced is not None:
            return bool(synced), "adjtimex"
        if (self.root / "run/systemd/timesync/synchronized").exists():
            return True, "timesyncd"
        return False, ""


LOCAL_HOST = HostInspector("/")


class HostPostureAgent:
    def __init__(self, host: str, key: Ed25519PrivateKey | None = None, *, inspector: HostInspector | None = None,
                 watch: tuple[str, ...] = DEFAULT_SECURITY_AGENTS) -> None:
        self.host = host
        self._key = key if key is not None else Ed25519PrivateKey.generate()
        self.inspector = inspector if inspector is not None else LOCAL_HOST
        self.watch = tuple(dict.fromkeys(watch))

    def register(self, registry: HostKeyRegistry) -> str:
        return registry.register(self.host, self._key.public_key())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def report(self, now: float) -> SignedPostureReport:
        """Inspect the host now and sign what was seen."""
        facts = self.inspector.inspect()
        running = tuple(name for name in self.watch if name[:TASK_COMM_LEN] in facts.processes)
        return sign_report(PostureReport(
            host=self.host, issued_at=now, os=facts.os, os_id=facts.os_id, os_version=facts.os_version,
            kernel=facts.kernel, encrypted_mounts=facts.encrypted_mounts, security_agents=running,
            listening_ports=facts.listening_ports, time_synced=facts.time_synced, time_source=facts.time_source,
            agent_version=AGENT_VERSION), self._key)


def attest_hosts(hub, hosts, now: float) -> dict[str, HostPostureAgent]:
    """Register an agent per host with ``hub`` and have each report what it inspects; returns the agents."""
    agents = {}
    for host in hosts:
        agent = HostPostureAgent(host)
        agent.register(hub.host_keys)
        hub.report_posture(agent.report(now), origin=f"agent:{host}")
        agents[host] = agent
    return agents
