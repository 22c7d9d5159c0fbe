"""Where the floor runs: which service on which host, and how the hosts, the bus and the database are reached.

A deployment file (TOML) places the floor's services on hosts by address::

    control = "127.0.0.1"            # the control plane's address (bootstrap, control, operator ports)
    bus = "tls://127.0.0.1:4222"      # optional: the NATS JetStream control bus (up --bus)
    database = "postgresql://..."     # optional: the state of record (TRUSTFABRIC_DATABASE_URL)

    [[host]]
    name = "md-algos"
    address = "127.0.0.2"
    services = ["market-data", "algo-momentum", "algo-meanrev"]
    control = "127.0.0.9"             # optional: the control plane's address as this host reaches it
                                      # (a site's load balancer or VIP in front of the control plane)
    port_base = 7600                  # optional: fixed ports (the n-th service port_base + 2n, its
                                      # metrics + 1); required when a per-host runner runs the host

    [[replica]]                       # optional: control-plane replicas at fixed ports, each run by
    name = "cp-1"                     # `trustfabric control serve --replica cp-1` on its machine
    address = "127.0.0.1"
    bootstrap_port = 7401
    control_port = 7402

With replicas and every host's ``port_base`` the floor runs without the launcher: each machine runs
its part (``trustfabric control serve`` for a replica, ``trustfabric host serve`` for a host's
services, after ``trustfabric host enrol``), and every process derives the same addresses and ports
from this file (:meth:`Deployment.require_fixed`).

Each service listens on its host's address and every peer reaches it there; a service no host
names runs beside the control plane. Every topology host keeps its own posture agent and host
key (``floor.toml``), whichever machine it is placed on. On one machine the hosts are distinct
loopback addresses (Linux answers the whole of 127.0.0.0/8), which is what :func:`load` accepts
unless ``loopback_only`` is turned off.

Refused, each with its reason: an unreadable or malformed file (``deploy.malformed``), a service
that is not the topology's (``deploy.unknown_service``), a service placed twice
(``deploy.placed_twice``), two hosts with one name or address (``deploy.duplicate_host``), an
address that is not an IP address (``deploy.bad_address``) or, with ``loopback_only``, not a
loopback one (``deploy.not_loopback``), a bus that is not ``tls://`` (``deploy.bus_not_tls``).
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfabric.errors import ConfigError
from trustfabric.policy.topology import Topology


class DeploymentError(ConfigError):
    reason = "deploy.malformed"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    services: tuple[str, ...]
    control: str = ""  # the control plane's address from this host ("": the deployment's)
    port_base: int = 0  # fixed ports for the host's services (0: the launcher picks free ones)


@dataclass(frozen=True)
class Replica:
    name: str
    address: str
    bootstrap_port: int
    control_port: int


@dataclass(frozen=True)
class Deployment:
    control: str = "127.0.0.1"
    hosts: tuple[Host, ...] = ()
    replicas: tuple[Replica, ...] = ()
    bus: str = ""
    database: str = ""
    source: str = ""
    _placed: dict[str, str] = field(default_factory=dict, repr=False)

    def address_of(self, service: str) -> str:
        """The address ``service`` listens on (its host's; the control plane's when no host names it)."""
        return self._placed.get(service, self.control)

    def control_for(self, service: str) -> str:
        """The address ``service`` reaches the control plane at (its host's route to it, or the deployment's)."""
        for host in self.hosts:
            if service in host.services and host.control:
                return host.control
        return self.control

    def host_of(self, service: str) -> str:
        for host in self.hosts:
            if service in host.services:
                return host.name
        return "control"

    def addresses(self, services: tuple[str, ...] | list[str]) -> dict[str, str]:
        return {name: self.address_of(name) for name in services}

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s for host in self.hosts for s in host.services)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise DeploymentError(f"no host {name!r} in {self.source or 'the deployment'}", reason="deploy.unknown_host")

    def replica(self, name: str) -> Replica:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise DeploymentError(f"no control-plane replica {name!r} in {self.source or 'the deployment'}",
                              reason="deploy.unknown_replica")

    def require_fixed(self) -> None:
        """Refuse a file that cannot run without the launcher: replicas and every host's ports must be fixed."""
        if not self.replicas:
            raise DeploymentError("no [[replica]]: the machines cannot know where the control plane listens",
                                  reason="deploy.ports_required")
        loose = [h.name for h in self.hosts if not h.port_base]
        if loose:
            raise DeploymentError(f"hosts without port_base: {loose}", reason="deploy.ports_required")
        if len({r.address for r in self.replicas}) != 1:
            raise DeploymentError("the replicas must share one address (one machine, or a VIP in front of them): "
                                  "the services reach every replica at it", reason="deploy.replicas_one_address")

    def ports(self) -> dict[str, int]:
        """Every service's port: its host's ``port_base`` + 2n (n its place in the host's list)."""
        return {s: h.port_base + 2 * i for h in self.hosts if h.port_base for i, s in enumerate(h.services)}

    def metrics_ports(self) -> dict[str, int]:
        return {s: port + 1 for s, port in self.ports().items()}


def _address(value: Any, where: str, loopback_only: bool) -> str:
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        raise DeploymentError(f"{where}: {value!r} is not an IP address", reason="deploy.bad_address") from None
    if loopback_only and not ip.is_loopback:
        raise DeploymentError(f"{where}: {ip} is not a loopback address (127.0.0.0/8, ::1) on this machine",
                              reason="deploy.not_loopback")
    return str(ip)


def parse(data: dict[str, Any], topology: Topology, *, loopback_only: bool = True, source: str = "") -> Deployment:
    if not isinstance(data, dict):
        raise DeploymentError("a deployment is a TOML table")
    control = _address(data.get("control", "127.0.0.1"), "control", loopback_only)
    bus = str(data.get("bus", ""))
    if bus and not bus.startswith("tls://"):
        raise DeploymentError(f"bus {bus!r}: the control bus is reached over TLS only (tls://host:port)",
                              reason="deploy.bus_not_tls")
    database = str(data.get("database", ""))
    hosts: list[Host] = []
    placed: dict[str, str] = {}
    names: set[str] = set()
    addresses: set[str] = {control}
    entries = data.get("host", [])
    if not isinstance(entries, list):
        raise DeploymentError("[[host]] must be an array of tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DeploymentError(f"host #{i + 1}: a name is required")
        name = entry["name"]
        address = _address(entry.get("address"), f"host {name}", loopback_only)
        if name in names or address in addresses:
            raise DeploymentError(f"host {name} ({address}): another host has this name or address",
                                  reason="deploy.duplicate_host")
        names.add(name)
        addresses.add(address)
        services = entry.get("services", [])
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise DeploymentError(f"host {name}: services must be a list of names")
        for service in services:
            if service not in topology.services:
                raise DeploymentError(f"host {name}: {service!r} is no service of the floor",
                                      reason="deploy.unknown_service")
            if service in placed:
                raise DeploymentError(f"{service} is placed on two hosts", reason="deploy.placed_twice")
            placed[service] = address
        route = _address(entry["control"], f"host {name} control", loopback_only) if entry.get("control") else ""
        hosts.append(Host(name, address, tuple(services), route,
                          _port(entry.get("port_base", 0), f"host {name} port_base", span=2 * len(services))))
    return Deployment(control=control, hosts=tuple(hosts), replicas=_replicas(data.get("replica", []), loopback_only),
                      bus=bus, database=database, source=source, _placed=placed)


def _port(value: Any, where: str, span: int = 1) -> int:
    if value == 0:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 65535 - span:
        raise DeploymentError(f"{where}: {value!r} is not a port from 1024 to {65535 - span}", reason="deploy.bad_port")
    return value


def _replicas(entries: Any, loopback_only: bool) -> tuple[Replica, ...]:
    if not isinstance(entries, list):
        raise DeploymentError("[[replica]] must be an array of tables")
    replicas: list[Replica] = []
    seen: set[Any] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DeploymentError(f"replica #{i + 1}: a name is required")
        name = entry["name"]
        address = _address(entry.get("address"), f"replica {name}", loopback_only)
        ports = (_port(entry.get("bootstrap_port"), f"replica {name} bootstrap_port"),
                 _port(entry.get("control_port"), f"replica {name} control_port"))
        if 0 in ports or ports[0] == ports[1] or name in seen or {(address, p) for p in ports} & seen:
            raise DeploymentError(f"replica {name}: a name and two ports of its own are required",
                                  reason="deploy.duplicate_replica")
        seen.update({name, *((address, p) for p in ports)})
        replicas.append(Replica(name, address, *ports))
    return tuple(replicas)


def load(path: Path | str, topology: Topology, *, loopback_only: bool = True) -> Deployment:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise DeploymentError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{path}: {exc}") from None
    return parse(data, topology, loopback_only=loopback_only, source=str(path))
