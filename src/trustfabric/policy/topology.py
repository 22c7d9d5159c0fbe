"""The trading floor's topology manifest: services, segments, trust domain, resources and flows.

``policies/floor.toml`` declares who exists on the floor and who may talk to whom.
:meth:`Topology.load` reads it into frozen data; the policy engine builds its
Cedar entities from it (:meth:`Topology.cedar_entities`) and compiles decision
tables over the (action, resource) pairs it lists (:meth:`Topology.candidates`).
The declared flows are the least-privilege contract the Cedar policies must
grant exactly - a test holds them to it.

Principal keys: a workload is named by its SPIFFE ID
``spiffe://<trust domain>/<segment>/<service>``; a person by ``user:<name>``.
The trust domain is ``<environment>.<firm>`` (default ``prod.acme.example``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from trustfabric.policy.errors import TopologyError
from trustfabric.policy.paths import FLOOR_MANIFEST

DEFAULT_FIRM = "acme.example"
WORKLOAD = "workload"
PERSON = "person"
USER_PREFIX = "user:"

ACTIONS: tuple[str, ...] = (
    "connect", "subscribe", "publish", "submit_order", "cancel_order", "route_order", "execute",
    "report_fill", "read_positions", "settle", "transfer_funds", "read_client_orders",
    "halt", "resume", "quarantine", "release",
    "data_write", "data_read", "data_analyse",  # the data vault's key service (trustfabric.data)
)
STREAM_ACTIONS = ("subscribe", "publish")
SERVICE_ACTIONS = ("connect",)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    segment: str
    account: str
    symbols: frozenset[str]  # the market-data streams it subscribes to ("@streams")
    host: str

    @property
    def spiffe_path(self) -> str:
        return f"/{self.segment}/{self.service_name}"

    @property
    def service_name(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    roles: tuple[str, ...]
    account: str

    @property
    def key(self) -> str:
        return USER_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class Resource:
    id: str
    kind: str
    owner: str
    actions: tuple[str, ...]
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class Flow:
    principal: str  # service name or "role:<role>"
    action: str
    resource: str


@dataclass(frozen=True, slots=True)
class PrincipalRef:
    """A resolved principal: its key (SPIFFE ID or ``user:<name>``) and Cedar entity."""

    key: str
    kind: str  # WORKLOAD | PERSON
    name: str  # service or user name
    entity_type: str  # "Workload" | "User"
    account: str
    host: str = ""
    roles: tuple[str, ...] = ()

    @property
    def uid(self) -> dict[str, str]:
        return {"type": self.entity_type, "id": self.name}


@dataclass(frozen=True)
class Topology:
    environment: str
    firm: str
    symbols: tuple[str, ...]
    services: dict[str, Service]
    people: dict[str, Person]
    roles: tuple[str, ...]
    resources: dict[str, Resource]
    flows: frozenset[Flow]
    # Resource kinds whose exposure is high-risk (venues, settlement, client data, kill switch...):
    # ``policy impact`` fails a change that newly allows any of them (``high_risk_kinds`` in floor.toml).
    high_risk_kinds: frozenset[str] = frozenset()
    _by_key: dict[str, PrincipalRef] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, *, firm: str | None = None, environment: str | None = None) -> "Topology":
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise TopologyError(f"cannot read {path}: {exc}", reason="policy.topology.io") from exc
        except tomllib.TOMLDecodeError as exc:
            raise TopologyError(f"{path}: {exc}", reason="policy.topology.syntax") from exc
        return cls.from_dict(raw, firm=firm, environment=environment)

    @classmethod
    def default_path(cls) -> Path:
        return FLOOR_MANIFEST

    @classmethod
    def path_for(cls, policies: str | Path) -> Path:
        """The topology file of a policy directory: its ``floor.toml``, else the reference floor's."""
        manifest = Path(policies) / FLOOR_MANIFEST.name
        return manifest if manifest.exists() else FLOOR_MANIFEST

    @classmethod
    def for_policies(cls, policies: str | Path) -> "Topology":
        """The topology of a policy directory (:meth:`path_for`)."""
        return cls.load(cls.path_for(policies))

    @classmethod
    def from_dict(cls, raw: dict, *, firm: str | None = None, environment: str | None = None) -> "Topology":
        try:
            return cls._build(raw, firm=firm, environment=environment)
        except TopologyError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TopologyError(f"malformed manifest: {exc!r}", reason="policy.topology.malformed") from exc

    @classmethod
    def _build(cls, raw: dict, *, firm: str | None, environment: str | None) -> "Topology":
        env = environment or raw.get("environment", "prod")
        firm_name = firm or raw.get("firm", DEFAULT_FIRM)
        default_account = raw.get("account_default", "acct-firm")
        symbols = tuple(raw["market_data"]["symbols"])
        if len(set(symbols)) != len(symbols):
            raise TopologyError("duplicate symbols", reason="policy.topology.duplicate")
        services: dict[str, Service] = {}
        for s in raw.get("service", []):
            own = frozenset(s.get("symbols", ()))
            unknown = own - set(symbols)
            if unknown:
                raise TopologyError(f"{s['name']}: unknown symbols {sorted(unknown)}", reason="policy.topology.unknown")
            if s["name"] in services:
                raise TopologyError(f"duplicate service {s['name']}", reason="policy.topology.duplicate")
            services[s["name"]] = Service(
                name=s["name"], segment=s["segment"], account=s.get("account", default_account),
                symbols=own, host=s.get("host", s["name"]),
            )
        roles = tuple(raw.get("people", {}).get("roles", ()))
        people: dict[str, Person] = {}
        for p in raw.get("person", []):
            bad = [r for r in p["roles"] if r not in roles]
            if bad:
                raise TopologyError(f"{p['name']}: unknown roles {bad}", reason="policy.topology.unknown")
            people[p["name"]] = Person(name=p["name"], roles=tuple(p["roles"]), account=p.get("account", default_account))
        resources: dict[str, Resource] = {}
        for sym in symbols:
            resources[f"md/{sym}"] = Resource(f"md/{sym}", "stream", "market-data", STREAM_ACTIONS, symbol=sym)
        for name in services:
            resources[f"svc/{name}"] = Resource(f"svc/{name}", "service", name, SERVICE_ACTIONS)
        for r in raw.get("resource", []):
            bad = [a for a in r["actions"] if a not in ACTIONS]
            if bad:
                raise TopologyError(f"{r['id']}: unknown actions {bad}", reason="policy.topology.unknown")
            if r["id"] in resources:
                raise TopologyError(f"duplicate resource {r['id']}", reason="policy.topology.duplicate")
            resources[r["id"]] = Resource(r["id"], r["kind"], r["owner"], tuple(r["actions"]))
        flows: set[Flow] = set()
        for f in raw.get("flow", []):
            principal = f["principal"]
            if principal.startswith("role:"):
                if principal[5:] not in roles:
                    raise TopologyError(f"flow for unknown role {principal}", reason="policy.topology.unknown")
                own_symbols: frozenset[str] = frozenset()
            elif principal in services:
                own_symbols = services[principal].symbols
            else:
                raise TopologyError(f"flow for unknown principal {principal}", reason="policy.topology.unknown")
            for action in f["actions"]:
                if action not in ACTIONS:
                    raise TopologyError(f"flow with unknown action {action}", reason="policy.topology.unknown")
                for res in f["resources"]:
                    if res == "@streams":
                        targets = [f"md/{s}" for s in sorted(own_symbols)]
                    elif res == "@all-streams":
                        targets = [f"md/{s}" for s in symbols]
                    else:
                        targets = [res]
                    for t in targets:
                        if t not in resources:
                            raise TopologyError(f"flow to unknown resource {t}", reason="policy.topology.unknown")
                        if action not in resources[t].actions:
                            raise TopologyError(f"{action} does not apply to {t}", reason="policy.topology.unknown")
                        flows.add(Flow(principal, action, t))
        high_risk = raw.get("high_risk_kinds", [])
        if not (isinstance(high_risk, list) and all(isinstance(k, str) for k in high_risk)):
            raise TopologyError("high_risk_kinds must be a list of resource kinds", reason="policy.topology.malformed")
        topo = cls(
            environment=env, firm=firm_name, symbols=symbols, services=services, people=people,
            roles=roles, resources=resources, flows=frozenset(flows), high_risk_kinds=frozenset(high_risk),
        )
        for svc in services.values():
            ref = PrincipalRef(
                key=topo.spiffe_id(svc.name), kind=WORKLOAD, name=svc.name, entity_type="Workload",
                account=svc.account, host=svc.host,
            )
            topo._by_key[ref.key] = ref
        for person in people.values():
            topo._by_key[person.key] = topo._person_ref(person)
        return topo

    @staticmethod
    def _person_ref(person: Person) -> PrincipalRef:
        return PrincipalRef(
            key=person.key, kind=PERSON, name=person.name, entity_type="User", account=person.account,
            host="", roles=person.roles,
        )

    # ------------------------------------------------------------------ naming
    @property
    def trust_domain(self) -> str:
        return f"{self.environment}.{self.firm}"

    def spiffe_id(self, service: str) -> str:
        svc = self.services[service]
        return f"spiffe://{self.trust_domain}/{svc.segment}/{svc.name}"

    def principal_keys(self) -> tuple[str, ...]:
        return tuple(self._by_key)

    def resolve(self, principal: str) -> PrincipalRef | None:
        """A principal key, or a bare service name, to its reference; ``None`` when unknown."""
        ref = self._by_key.get(principal)
        if ref is None and principal in self.services:
            ref = self._by_key.get(self.spiffe_id(principal))
        return ref

    def with_person(self, name: str, roles: tuple[str, ...], account: str | None = None) -> "Topology":
        """A new topology with a person added or replaced (roles must be known)."""
        bad = [r for r in roles if r not in self.roles]
        if bad:
            raise TopologyError(f"{name}: unknown roles {bad}", reason="policy.topology.unknown")
        people = dict(self.people)
        people[name] = Person(name=name, roles=tuple(roles), account=account or "acct-firm")
        topo = Topology(
            environment=self.environment, firm=self.firm, symbols=self.symbols, services=self.services,
            people=people, roles=self.roles, resources=self.resources, flows=self.flows,
            high_risk_kinds=self.high_risk_kinds,
        )
        topo._by_key.update(self._by_key)
        topo._by_key[people[name].key] = self._person_ref(people[name])
        return topo

    def principals_on_host(self, host: str) -> tuple[str, ...]:
        return tuple(r.key for r in self._by_key.values() if r.host == host)

    def principals_in_account(self, account: str) -> tuple[str, ...]:
        return tuple(r.key for r in self._by_key.values() if r.account == account)

    def is_high_risk(self, resource: str) -> bool:
        """A resource of a kind ``high_risk_kinds`` lists (an unknown resource is not one)."""
        res = self.resources.get(resource)
        return res is not None and res.kind in self.high_risk_kinds

    # ------------------------------------------------------------------ compile inputs
    def candidates(self) -> tuple[tuple[str, str], ...]:
        """Every (action, resource) pair of the floor; what a decision table covers."""
        return tuple((a, r.id) for r in self.resources.values() for a in r.actions)

    def flows_of(self, ref: PrincipalRef) -> frozenset[tuple[str, str]]:
        """The (action, resource) pairs the manifest grants this principal."""
        if ref.kind == WORKLOAD:
            names = {ref.name}
        else:
            names = {f"role:{r}" for r in ref.roles}
        return frozenset((f.action, f.resource) for f in self.flows if f.principal in names)

    def cedar_entities(self) -> list[dict]:
        """The Cedar entity list (JSON form): segments, roles, workloads, users, stream sets, resources."""
        ents: list[dict] = []
        for seg in sorted({s.segment for s in self.services.values()}):
            ents.append({"uid": {"type": "Segment", "id": seg}, "attrs": {}, "parents": []})
        for role in self.roles:
            ents.append({"uid": {"type": "Role", "id": role}, "attrs": {}, "parents": []})
        for svc in self.services.values():
            ents.append({
                "uid": {"type": "Workload", "id": svc.name},
                "attrs": {"segment": svc.segment, "account": svc.account, "spiffe_id": self.spiffe_id(svc.name)},
                "parents": [{"type": "Segment", "id": svc.segment}],
            })
        for person in self.people.values():
            ents.append({
                "uid": {"type": "User", "id": person.name},
                "attrs": {"account": person.account},
                "parents": [{"type": "Role", "id": r} for r in person.roles],
            })
        ents.append({"uid": {"type": "StreamSet", "id": "all"}, "attrs": {}, "parents": []})
        subscribers = [s for s in self.services.values() if s.symbols]
        for svc in subscribers:
            ents.append({"uid": {"type": "StreamSet", "id": svc.name}, "attrs": {}, "parents": []})
        for res in self.resources.values():
            parents = []
            if res.kind == "stream":
                parents.append({"type": "StreamSet", "id": "all"})
                parents.extend({"type": "StreamSet", "id": s.name} for s in subscribers if res.symbol in s.symbols)
            ents.append({
                "uid": {"type": "Resource", "id": res.id},
                "attrs": {"kind": res.kind},
                "parents": parents,
            })
        return ents
