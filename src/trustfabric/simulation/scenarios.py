"""Threat scenarios as data: load and check ``scenarios.toml``.

A :class:`Scenario` names its category (one of the seed's threats, plus credential
theft and rogue deployment), the attacker's :class:`Foothold` (what it holds:
a workload's credentials, a person's password and TOTP, a stolen token or
certificate, an unpromoted build) and its :class:`Attempt` s (target service,
action, resource, method, count). Loading checks every name against the floor's
topology, so a scenario can never silently aim at something that does not exist.
Pure: no sockets, no floor.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustfabric.policy.topology import ACTIONS, Topology
from trustfabric.simulation.errors import ScenarioError

DEFAULT_PATH = Path(__file__).with_name("scenarios.toml")
CATEGORIES = ("insider", "compromised_algo", "lateral_movement", "supply_chain", "credential_theft",
              "rogue_deployment")
FOOTHOLDS = ("workload", "person", "stolen_token", "stolen_cert", "build")
METHODS = ("request", "flood", "forged_approval", "altered_approval", "replayed_approval", "subscribe", "join")
APPROVAL_METHODS = ("forged_approval", "altered_approval", "replayed_approval")
BUILD_DIGESTS = ("tampered", "unpromoted")
CONTROL_TARGET = "control-plane"
MAX_COUNT = 10_000


@dataclass(frozen=True, slots=True)
class Foothold:
    kind: str
    identity: str  # the service or person whose credentials the attacker holds
    as_identity: str = ""  # stolen_token: the workload whose certificate the attacker presents
    device: str = ""  # person: the desk terminal's host
    host: str = ""  # stolen_cert: the host it is used from
    digest: str = ""  # build: "tampered" | "unpromoted"

    @property
    def is_person(self) -> bool:
        return self.kind == "person"


@dataclass(frozen=True, slots=True)
class Attempt:
    target: str
    action: str
    resource: str
    method: str = "request"
    count: int = 1


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    category: str
    summary: str
    foothold: Foothold
    attempts: tuple[Attempt, ...]

    @property
    def attempt_count(self) -> int:
        return sum(a.count for a in self.attempts)


def _str(raw: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ScenarioError(f"{where}: '{key}' must be a non-empty string")
    return value


def _foothold(raw: Any, where: str, topology: Topology) -> Foothold:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: foothold must be a table")
    kind = _str(raw, "kind", where)
    if kind not in FOOTHOLDS:
        raise ScenarioError(f"{where}: foothold kind {kind!r} is not one of {FOOTHOLDS}")
    identity = _str(raw, "identity", where)
    foothold = Foothold(kind=kind, identity=identity, as_identity=_str(raw, "as", where, ""),
                        device=_str(raw, "device", where, ""), host=_str(raw, "host", where, ""),
                        digest=_str(raw, "digest", where, ""))
    if kind == "person":
        if identity not in topology.people:
            raise ScenarioError(f"{where}: no person {identity!r} on the floor")
        if not foothold.device:
            raise ScenarioError(f"{where}: a person foothold needs the desk device it connects from")
    elif identity not in topology.services:
        raise ScenarioError(f"{where}: no service {identity!r} on the floor")
    if kind == "stolen_token" and foothold.as_identity not in topology.services:
        raise ScenarioError(f"{where}: a stolen token is presented with a workload's certificate ('as')")
    if kind == "build" and foothold.digest not in BUILD_DIGESTS:
        raise ScenarioError(f"{where}: a build foothold's digest is one of {BUILD_DIGESTS}")
    return foothold


def _attempt(raw: Any, where: str, topology: Topology) -> Attempt:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: an attempt must be a table")
    method = _str(raw, "method", where, "request")
    if method not in METHODS:
        raise ScenarioError(f"{where}: method {method!r} is not one of {METHODS}")
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise ScenarioError(f"{where}: count must be an integer in 1..{MAX_COUNT}")
    attempt = Attempt(target=_str(raw, "target", where), action=_str(raw, "action", where),
                      resource=_str(raw, "resource", where), method=method, count=count)
    if method == "join":
        if attempt.target != CONTROL_TARGET:
            raise ScenarioError(f"{where}: a join goes to {CONTROL_TARGET}")
        return attempt
    if attempt.target not in topology.services:
        raise ScenarioError(f"{where}: no service {attempt.target!r} on the floor")
    if attempt.action not in ACTIONS:
        raise ScenarioError(f"{where}: unknown action {attempt.action!r}")
    if not attempt.resource.startswith("md/") and attempt.resource not in topology.resources:
        raise ScenarioError(f"{where}: unknown resource {attempt.resource!r}")
    if method in APPROVAL_METHODS and attempt.action != "route_order":
        raise ScenarioError(f"{where}: {method} is a route_order attempt")
    return attempt


def parse_scenarios(raw: dict[str, Any], topology: Topology) -> tuple[Scenario, ...]:
    items = raw.get("scenario")
    if not isinstance(items, list) or not items:
        raise ScenarioError("no [[scenario]] tables")
    out: list[Scenario] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScenarioError(f"scenario #{i} is not a table")
        name = _str(item, "name", f"scenario #{i}")
        where = f"scenario {name!r}"
        if name in seen:
            raise ScenarioError(f"{where}: duplicate name")
        seen.add(name)
        category = _str(item, "category", where)
        if category not in CATEGORIES:
            raise ScenarioError(f"{where}: category {category!r} is not one of {CATEGORIES}")
        attempts = item.get("attempts")
        if not isinstance(attempts, list) or not attempts:
            raise ScenarioError(f"{where}: needs at least one attempt")
        out.append(Scenario(name=name, category=category, summary=_str(item, "summary", where, ""),
                            foothold=_foothold(item.get("foothold"), where, topology),
                            attempts=tuple(_attempt(a, f"{where} attempt #{j}", topology)
                                           for j, a in enumerate(attempts))))
    return tuple(out)


def load_scenarios(topology: Topology, path: Path | str | None = None) -> tuple[Scenario, ...]:
    """Every scenario of ``path`` (default: the reference set beside this module)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return parse_scenarios(raw, topology)


def select(scenarios: tuple[Scenario, ...], name: str | None) -> tuple[Scenario, ...]:
    """``None`` or ``"all"``: every scenario; else the one named (a ScenarioError if none is)."""
    if name in (None, "", "all"):
        return scenarios
    chosen = tuple(s for s in scenarios if s.name == name)
    if not chosen:
        raise ScenarioError(f"no scenario {name!r}; known: {', '.join(s.name for s in scenarios)}",
                            reason="scenario.unknown")
    return chosen
