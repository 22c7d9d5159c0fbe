"""The decision-table planner: one Cedar request per equivalence class of resources.

Cedar cannot read an entity's id, so resources that no policy names literally and that
share type, attributes and ancestors always get the same decision: the plan evaluates one
representative per class and fans its decision out to the members. Pairs that no permit's
scope (principal, action, resource constraints, read from the parsed policies) can match are
a certain deny without evaluation. A plan depends only on the active set and the principal,
so the engine caches it until the set or the topology changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from trustfabric.policy.loading import ActiveSet
from trustfabric.policy.topology import PrincipalRef

__all__ = ["Plan", "compile_plan"]


@dataclass
class Plan:
    """Per principal, per active set: the batch requests (one per resource class) and fan-out."""

    classes: list[tuple[str, str]]  # (action, representative resource)
    members: list[list[str]]  # resources per class
    base_requests: list[dict]
    no_permit: list[tuple[str, str]] = field(default_factory=list)  # no permit's scope can match: deny


def _uid_of(node: Any) -> tuple[str, str] | None:
    try:
        return node.type.basename, node.id
    except AttributeError:
        return None


def _scope_may_match(scope: Any, uid: tuple[str, str], ancestors: frozenset[tuple[str, str]]) -> bool:
    """False only when a principal/resource scope certainly excludes ``uid``; anything unknown may match."""
    kind = type(scope).__name__
    if kind == "ScopeEq":
        target = _uid_of(scope.entity)
        return target is None or target == uid
    if kind == "ScopeIn":
        target = _uid_of(scope.entity)
        return target is None or target == uid or target in ancestors
    if kind == "ScopeIs":
        return getattr(scope.entity_type, "basename", uid[0]) == uid[0]
    if kind == "ScopeIsIn":
        target = _uid_of(scope.entity)
        return getattr(scope.entity_type, "basename", uid[0]) == uid[0] and (
            target is None or target == uid or target in ancestors)
    return True


def _action_may_match(scope: Any, action: str) -> bool:
    kind = type(scope).__name__
    if kind == "ActionEq":
        target = _uid_of(scope.entity)
        return target is None or target == ("Action", action)
    if kind == "ActionIn":
        targets = [_uid_of(e) for e in scope.entities]
        return any(t is None or t == ("Action", action) for t in targets)
    return True


def compile_plan(active: ActiveSet, ref: PrincipalRef, candidates: Iterable[tuple[str, str]]) -> Plan:
    """The plan of ``ref``'s decision table over the topology's (action, resource) ``candidates``."""
    entities = {e["uid"]["id"]: e for e in json.loads(active.entities_json) if e["uid"]["type"] == "Resource"}
    index: dict[tuple, int] = {}
    plan = Plan([], [], [])
    p_uid = (ref.entity_type, ref.name)
    p_anc = active.ancestors.get(p_uid, frozenset())
    mine = [(a, r) for (pr, a, r) in active.permit_scopes if _scope_may_match(pr, p_uid, p_anc)]
    for action, resource in candidates:
        r_uid = ("Resource", resource)
        r_anc = active.ancestors.get(r_uid, frozenset())
        if not any(_action_may_match(a, action) and _scope_may_match(r, r_uid, r_anc) for a, r in mine):
            plan.no_permit.append((action, resource))
            continue
        if resource in active.literal_resources:
            cls_key: tuple = (action, "=", resource)
        else:
            ent = entities[resource]
            cls_key = (action, json.dumps(ent["attrs"], sort_keys=True),
                       tuple(sorted(p["id"] for p in ent["parents"])))
        slot = index.get(cls_key)
        if slot is None:
            index[cls_key] = len(plan.classes)
            plan.classes.append((action, resource))
            plan.members.append([resource])
            plan.base_requests.append({"principal": ref.uid, "action": {"type": "Action", "id": action},
                                       "resource": {"type": "Resource", "id": resource}})
        else:
            plan.members[slot].append(resource)
    return plan
