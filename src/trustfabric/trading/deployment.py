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


@dataclass(frozen=True)
class Deployment:
    control: str = "127.0.0.1"
    hosts: tuple[Host, ...] = ()
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
        hosts.append(Host(name, address, tuple(services), route))
    return Deployment(control=control, hosts=tuple(hosts), bus=bus, database=database, source=source,
                      _placed=placed)


def load(path: Path | str, topology: Topology, *, loopback_only: bool = True) -> Deployment:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise DeploymentError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{path}: {exc}") from None
    return parse(data, topology, loopback_only=loopback_only, source=str(path))
