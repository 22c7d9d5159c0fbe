"""Loading a policy set: read a directory, parse and validate the whole set, or refuse it whole.

:func:`read_dir` returns the schema text and the ``*.cedar`` sources of a directory;
:func:`check_set` parses them (through :mod:`trustfabric.policy.cedar`), validates the set
against the schema, checks every ``@id`` and obligation annotation, builds the topology's
entities, and returns the :class:`ActiveSet` the engine decides with - or raises
:class:`~trustfabric.policy.errors.PolicyLoadError` listing every problem. Nothing here keeps
state: the engine swaps the active set only after a set passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustfabric.policy import cedar
from trustfabric.policy.errors import PolicyLoadError
from trustfabric.policy.topology import Topology

__all__ = ["PolicyInfo", "ActiveSet", "read_dir", "check_set", "OBLIGATION_KEYS"]

OBLIGATION_KEYS = {"ttl", "max_rate", "burst", "max_notional", "symbols", "step_up_max_age"}
_RESOURCE_LITERAL = re.compile(r'Resource\s*::\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class PolicyInfo:
    """The policy set in force: where it came from and its content hash."""

    directory: str
    files: tuple[str, ...]
    policy_ids: tuple[str, ...]
    digest: str


@dataclass(frozen=True)
class ActiveSet:
    """A parsed, validated policy set with its entities: what every decision of the engine reads."""

    info: PolicyInfo
    text: str
    schema_text: str
    schema: Any  # cedarpy.Schema
    policies: Any  # cedarpy.PolicySet
    entities: Any  # cedarpy.Entities
    entities_json: str
    ids: dict[str, str]  # cedar policy id ("policy3") -> @id
    effects: dict[str, str]  # @id -> "permit" | "forbid"
    annotations: dict[str, dict[str, str]]  # @id -> annotations
    literal_resources: frozenset[str]
    permit_scopes: tuple[tuple[Any, Any, Any], ...] = ()  # (principal, action, resource) scope nodes
    ancestors: dict[tuple[str, str], frozenset[tuple[str, str]]] = field(default_factory=dict)


def _ancestors(entities: list[dict]) -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
    """Transitive ancestors of every entity (by (type, id))."""
    parents = {(e["uid"]["type"], e["uid"]["id"]): [(p["type"], p["id"]) for p in e.get("parents", ())]
               for e in entities}
    out: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
    for uid in parents:
        seen: set[tuple[str, str]] = set()
        todo = list(parents[uid])
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(parents.get(nxt, ()))
        out[uid] = frozenset(seen)
    return out


def read_dir(directory: str | Path) -> tuple[str, dict[str, str]]:
    """The schema text and ``{file name: policy text}`` of a policy directory."""
    directory = Path(directory)
    try:
        schemas = sorted(directory.glob("*.cedarschema"))
        files = sorted(directory.glob("*.cedar"))
        if len(schemas) != 1:
            raise PolicyLoadError(f"{directory}: expected one *.cedarschema, found {len(schemas)}",
                                  reason="policy.load.schema")
        if not files:
            raise PolicyLoadError(f"{directory}: no *.cedar policy files", reason="policy.load.empty")
        return schemas[0].read_text(encoding="utf-8"), {f.name: f.read_text(encoding="utf-8") for f in files}
    except OSError as exc:
        raise PolicyLoadError(f"cannot read {directory}: {exc}", reason="policy.load.io") from exc
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{directory}: not UTF-8 text: {exc}", reason="policy.load.io") from exc

def check_set(schema_text: str, sources: dict[str, str], topology: Topology, directory: str = "") -> ActiveSet:
    """Parse and validate a whole set; raises :class:`PolicyLoadError` listing every problem."""
    try:
        schema = cedar.parse_schema(schema_text)
    except ValueError as exc:
        raise PolicyLoadError(f"schema does not parse: {exc}", reason="policy.load.schema") from exc
    syntax_errors = []
    for name, text in sources.items():
        try:
            cedar.parse_policies(text)
        except ValueError as exc:
            syntax_errors.append(f"{name}: {exc}")
    if syntax_errors:
        raise PolicyLoadError("; ".join(syntax_errors), reason="policy.load.syntax", errors=tuple(syntax_errors))
    text = "\n".join(sources[name] for name in sorted(sources))
    try:
        policies = cedar.parse_policies(text)
        pst = policies.to_pst()
    except ValueError as exc:
        raise PolicyLoadError(f"policy set does not parse: {exc}", reason="policy.load.syntax") from exc
    if len(policies) == 0 or pst.templates:
        raise PolicyLoadError("an empty policy set (or templates) cannot be loaded", reason="policy.load.empty")
    result = cedar.validate(text, schema)
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        errors = tuple(f"[{names.get(e.policy_id, e.policy_id)}] {e.error}" for e in result.errors)
        raise PolicyLoadError("; ".join(errors), reason="policy.load.validation", errors=errors)
    ids: dict[str, str] = {}
    effects: dict[str, str] = {}
    annotations: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for cedar_id, policy in pst.static_policies.items():
        ann = dict(policy.annotations)
        pid = ann.get("id")
        if not pid:
            problems.append(f"{cedar_id}: every policy needs an @id annotation")
            continue
        if pid in effects:
            problems.append(f"duplicate @id {pid!r}")
            continue
        for key, value in ann.items():
            if key == "id" or key not in OBLIGATION_KEYS:
                continue
            if key == "symbols":
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number) or number <= 0:
                problems.append(f"{pid}: @{key}({value!r}) is not a positive number")
        ids[cedar_id] = pid
        effects[pid] = policy.effect
        annotations[pid] = ann
    if problems:
        raise PolicyLoadError("; ".join(problems), reason="policy.load.annotation", errors=tuple(problems))
    entities_json = json.dumps(topology.cedar_entities())
    try:
        entities = cedar.parse_entities(entities_json, schema)
    except ValueError as exc:
        raise PolicyLoadError(f"topology entities do not fit the schema: {exc}",
                              reason="policy.load.entities") from exc
    digest = hashlib.sha256((schema_text + "\0" + text).encode()).hexdigest()
    literal = frozenset(m.group(1) for m in _RESOURCE_LITERAL.finditer(text))
    info = PolicyInfo(directory=directory, files=tuple(sorted(sources)), policy_ids=tuple(effects), digest=digest)
    scopes = tuple((p.principal, p.action, p.resource) for p in pst.static_policies.values()
                   if p.effect == "permit")
    return ActiveSet(info, text, schema_text, schema, policies, entities, entities_json, ids, effects,
                   annotations, literal, scopes, _ancestors(json.loads(entities_json)))
