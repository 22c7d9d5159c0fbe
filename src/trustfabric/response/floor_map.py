"""What the detectors know about the floor: segments, resource owners, granted flows.

Detection needs three facts the audit stream does not carry by itself: which
segment a principal lives in, which segment a resource lives in, and which
(action, resource) pairs a principal was ever granted (its declared flows). A
:class:`FloorMap` holds them as plain frozen data. It is built from the policy
plane's topology manifest (:meth:`FloorMap.from_topology`, duck-typed on
``trustfabric.policy.topology.Topology``) or directly from dicts in tests.

Workload principals are SPIFFE IDs ``spiffe://<td>/<segment>/<service>``; the
segment is read from the ID itself when the map does not list the principal.

``protected_resources`` are the resources whose data or effect is the firm's
crown jewels (client orders, positions and fills, settlement, treasury, venue
and routing order flow): a person reaching for one outside their role's grants
is an insider signal strong enough to contain (``detectors.InsiderDetector``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

SPIFFE_SCHEME = "spiffe://"
SERVICE_RESOURCE_PREFIX = "svc/"
PERSON_PREFIX = "user:"
# Resource kinds (policies/floor.toml) holding protected data or moving money and orders.
PROTECTED_KINDS = frozenset({"client_orders", "positions", "settlement", "treasury", "venue", "routing"})


def segment_from_spiffe_id(principal: str) -> str:
    """``spiffe://td/<segment>/<service>`` -> ``<segment>``; ``""`` for anything else."""
    if not principal.startswith(SPIFFE_SCHEME):
        return ""
    parts = principal[len(SPIFFE_SCHEME):].split("/")
    return parts[1] if len(parts) >= 3 and parts[1] else ""


def service_from_spiffe_id(principal: str) -> str:
    if not principal.startswith(SPIFFE_SCHEME):
        return ""
    parts = principal[len(SPIFFE_SCHEME):].split("/")
    return parts[-1] if len(parts) >= 3 else ""


def is_workload(principal: str) -> bool:
    return principal.startswith(SPIFFE_SCHEME)


def is_person(principal: str) -> bool:
    return principal.startswith(PERSON_PREFIX) and len(principal) > len(PERSON_PREFIX)


@dataclass(frozen=True)
class FloorMap:
    """Segments and grants of the floor (plain data; lookups only)."""

    service_segments: Mapping[str, str] = field(default_factory=dict)  # service name -> segment
    resource_segments: Mapping[str, str] = field(default_factory=dict)  # resource id -> segment
    grants: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)  # principal -> flows
    sensitive_segments: frozenset[str] = frozenset({"settlement", "venue", "treasury"})
    protected_resources: frozenset[str] = frozenset()  # resource ids (see PROTECTED_KINDS)

    @classmethod
    def build(cls, services: Mapping[str, str], resources: Mapping[str, str],
              grants: Mapping[str, Iterable[tuple[str, str]]],
              sensitive_segments: Iterable[str] | None = None,
              protected_resources: Iterable[str] = ()) -> "FloorMap":
        """``resources`` maps resource id -> owning service (or directly a segment)."""
        seg = dict(services)
        res = {rid: seg.get(owner, owner) for rid, owner in resources.items()}
        for name, segment in seg.items():
            res.setdefault(SERVICE_RESOURCE_PREFIX + name, segment)
        kwargs: dict[str, Any] = {}
        if sensitive_segments is not None:
            kwargs["sensitive_segments"] = frozenset(sensitive_segments)
        return cls(service_segments=seg, resource_segments=res,
                   grants={p: frozenset(g) for p, g in grants.items()},
                   protected_resources=frozenset(protected_resources), **kwargs)

    @classmethod
    def from_topology(cls, topology: Any, sensitive_segments: Iterable[str] | None = None) -> "FloorMap":
        """From ``trustfabric.policy.topology.Topology`` (services, resources, flows, people)."""
        services = {name: svc.segment for name, svc in topology.services.items()}
        resources = {rid: r.owner for rid, r in topology.resources.items()}
        grants: dict[str, frozenset[tuple[str, str]]] = {}
        for key in topology.principal_keys():
            ref = topology.resolve(key)
            if ref is not None:
                grants[key] = topology.flows_of(ref)
        protected = [rid for rid, r in topology.resources.items() if getattr(r, "kind", "") in PROTECTED_KINDS]
        return cls.build(services, resources, grants, sensitive_segments, protected)

    # ------------------------------------------------------------------ lookups
    def segment_of_principal(self, principal: str) -> str:
        seg = segment_from_spiffe_id(principal)
        if seg:
            return seg
        return self.service_segments.get(principal, "")

    def segment_of_resource(self, resource: str) -> str:
        seg = self.resource_segments.get(resource)
        if seg is not None:
            return seg
        if resource.startswith(SERVICE_RESOURCE_PREFIX):
            return self.service_segments.get(resource[len(SERVICE_RESOURCE_PREFIX):], "")
        return ""

    def knows(self, principal: str) -> bool:
        return principal in self.grants

    def granted(self, principal: str, action: str, resource: str) -> bool:
        """Whether the manifest ever granted this pair; unknown principals were granted nothing."""
        flows = self.grants.get(principal)
        return flows is not None and (action, resource) in flows

    def may_connect(self, principal: str, service: str) -> bool:
        return self.granted(principal, "connect", SERVICE_RESOURCE_PREFIX + service)

    def is_sensitive(self, segment: str) -> bool:
        return segment in self.sensitive_segments

    def is_protected(self, resource: str) -> bool:
        return resource in self.protected_resources
