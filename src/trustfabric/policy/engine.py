"""The policy engine and administrator: Cedar decisions, decision tables, epochs, invalidations.

Cedar is reached through :mod:`trustfabric.policy.cedar` (the only module that imports
cedarpy); loading and validation are :mod:`trustfabric.policy.loading`, the table planner
:mod:`trustfabric.policy.planner`. A policy directory holds one
``*.cedarschema`` and any number of ``*.cedar`` files; :meth:`PolicyEngine.load_dir`
parses them once into cedarpy ``Schema`` / ``PolicySet`` / ``Entities`` handles
(entities come from the floor topology) after validating the set against the
schema. A set that fails to parse or validate is refused whole: the last good set
stays in force, a ``policy.refused`` event is emitted, and an engine that never
loaded a good set denies everything.

Decisions (:meth:`PolicyEngine.decide`) take the request's own context fields
(``notional``, ``risk_reducing``) and merge them with the live signals of the
principal, read from a :class:`~trustfabric.policy.context.SignalSource`. Anything
odd - unknown principal, action or resource, malformed or oversized context, an
evaluation error, a signal source that raises - is a deny that keeps the error.
Obligations (``@ttl``, ``@max_rate``, ``@burst``, ``@max_notional``, ``@symbols``,
``@step_up_max_age``) come from the annotations of the permits that decided.

Decision tables (:meth:`PolicyEngine.decision_table`) evaluate every
(action, resource) pair of the topology for one principal in one cedarpy batch.
To stay within a few milliseconds the batch holds one request per *equivalence
class* of resources: Cedar cannot read an entity's id, so resources that no
policy names literally and that share type, attributes and ancestors always get
the same decision; and pairs that no permit's scope (principal, action, resource
constraints, read from the parsed policies) can match are a certain deny without
evaluation - reported as ``policy.no_permit`` even when a forbid would also apply.
Requests are evaluated without re-validating them against the
schema: the entities were validated at load, the context is built here from typed
signal values, and any evaluation error (a missing attribute) is a deny anyway.
Tables are cached until the principal's or the global epoch
moves or the table expires.

Operator decisions (:meth:`PolicyEngine.decide_operator`): a person changing security
state (``operator.*`` actions on ``Control`` entities) is decided on the role the identity
plane gives them, their live signals, and the MFA and step-up the request proved.

Epochs: one per principal and one global. A policy reload bumps the global
epoch; a signal change bumps the epochs of exactly the principals it concerns
(or the global one); each bump publishes an
:class:`~trustfabric.policy.decision.Invalidation` on the bus.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.policy import cedar
from trustfabric.policy.bus import InProcessBus, InvalidationBus
from trustfabric.policy.decision import (
    EPOCH,
    REASON_ALLOW,
    REASON_ERROR,
    REASON_FORBID,
    REASON_NO_PERMIT,
    Decision,
    DecisionTable,
    Invalidation,
    NO_OBLIGATIONS,
    Obligations,
)
from trustfabric.errors import PolicyError
from trustfabric.policy.errors import PolicyLoadError, RequestError, SignalsMissing
from trustfabric.policy.loading import ActiveSet, PolicyInfo, check_set, read_dir
from trustfabric.policy.planner import Plan, compile_plan
from trustfabric.policy.topology import ACTIONS, PERSON, PrincipalRef, Topology
from trustfabric.policy.context import BENIGN, SignalSource, SignalValues
from trustfabric.policy.context import StaticSignals

SOURCE = "policy-engine"
DEFAULT_TABLE_TTL_S = 300.0
MAX_CONTEXT_BYTES = 4096
REQUEST_FIELDS = {"notional": int, "risk_reducing": bool}
MAX_NOTIONAL = 10**15
OPERATOR_PREFIX = "operator."  # operator actions act on Control entities (decide_operator)


@dataclass(frozen=True)
class Explanation:
    """A decision with the policies that made it and the signals that mattered."""

    decision: Decision
    policies: tuple[tuple[str, str, dict[str, str]], ...]  # (@id, effect, annotations)
    signals: dict[str, Any]  # the context the decision saw
    mattered: tuple[str, ...]  # context fields whose benign value would change the outcome
    details: dict[str, Any] = field(default_factory=dict)  # posture reasons, matching indicators


@dataclass
class _TableCacheEntry:
    table: DecisionTable
    signals: SignalValues = field(repr=False)


def _translate(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class MissingSignals:
    """The signal source of an engine given none: every read fails, so every decision denies.

    ``signals_for`` raises :class:`~trustfabric.policy.errors.SignalsMissing` (``signal.missing``); the engine turns that
    into a deny (``decide``) or a refused table (``decision_table``), never an allow.
    """

    reason = "signal.missing"

    def signals_for(self, principal: Any, now: float) -> SignalValues:
        raise SignalsMissing(f"no signal source configured for {getattr(principal, 'key', principal)}")

    def add_listener(self, listener: Any) -> None:
        return None


class PolicyEngine:
    """Decides access with Cedar over the topology's entities and live signals; compiles decision tables."""

    def __init__(
        self,
        topology: Topology,
        signals: SignalSource,
        *,
        bus: InvalidationBus | None = None,
        emitter: Emitter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        table_ttl_s: float = DEFAULT_TABLE_TTL_S,
        max_context_bytes: int = MAX_CONTEXT_BYTES,
    ) -> None:
        self.topology = topology
        self.signals = signals
        self.bus: InvalidationBus = bus if bus is not None else InProcessBus()
        self.emitter = emitter if emitter is not None else Emitter(SOURCE, MemorySink(), clock)
        self.clock = clock
        self.table_ttl_s = table_ttl_s
        self.max_context_bytes = max_context_bytes
        self._active: ActiveSet | None = None
        self._lock = threading.RLock()
        self._global_epoch = 0
        self._epochs: dict[str, int] = {}
        self._plans: dict[str, Plan] = {}
        self._tables: dict[str, _TableCacheEntry] = {}
        self._obligations: dict[tuple[str, tuple[str, ...]], Obligations] = {}
        signals.add_listener(self.on_signal_change)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dir(cls, directory: str | Path, topology: Topology | None = None, signals: SignalSource | None = None,
                 *, assume_healthy: bool = False, **kwargs: Any) -> "PolicyEngine":
        """An engine with ``directory``'s policies loaded; raises :class:`PolicyLoadError` if they are refused.

        Signals are never assumed: pass the live source (a control plane's
        :class:`~trustfabric.signals.hub.SignalHub`). Without one the engine reads
        :class:`MissingSignals` and denies every request (``signal.missing``) - a missing
        signal never becomes an allow. ``assume_healthy=True`` is the deliberate opt-in to
        fixed, healthy signals (:class:`~trustfabric.policy.context.StaticSignals`) for
        tests, ``policy test`` and benchmarks; it cannot be combined with ``signals``.
        """

        if assume_healthy and signals is not None:
            raise PolicyError("give a signal source or assume_healthy=True, not both", reason="policy.signals_conflict")
        directory = Path(directory)
        if topology is None:
            topology = Topology.for_policies(directory)
        if signals is None:
            signals = StaticSignals() if assume_healthy else MissingSignals()
        engine = cls(topology, signals, **kwargs)
        engine.load_dir(directory)
        return engine

    # ------------------------------------------------------------------ loading
    read_dir = staticmethod(read_dir)
    check_set = staticmethod(check_set)

    def load_dir(self, directory: str | Path) -> PolicyInfo:
        """Load a policy directory; on refusal keep the set in force, emit ``policy.refused`` and raise."""
        try:
            schema_text, sources = self.read_dir(directory)
        except PolicyLoadError as exc:
            self._refused(exc, str(directory))
            raise
        return self.load_sources(schema_text, sources, directory=str(directory))

    def load_sources(self, schema_text: str, sources: dict[str, str], directory: str = "") -> PolicyInfo:
        try:
            active = self.check_set(schema_text, sources, self.topology, directory)
        except PolicyLoadError as exc:
            self._refused(exc, directory)
            raise
        with self._lock:
            self._active = active
            self._plans.clear()
            self._tables.clear()
            self._obligations.clear()
        self.emitter.emit(Kind.POLICY_LOADED, reason="policy.loaded",
                          detail={"directory": directory, "digest": active.info.digest,
                                  "policies": len(active.info.policy_ids)})
        self.bump(None, "policy.loaded", SOURCE)
        return active.info

    def _refused(self, exc: PolicyLoadError, directory: str) -> None:
        self.emitter.emit(Kind.POLICY_REFUSED, reason=exc.reason, errors=tuple(exc.errors)[:20],
                          detail={"directory": directory,
                                  "kept": self._active.info.digest if self._active else ""})

    @property
    def info(self) -> PolicyInfo | None:
        active = self._active
        return active.info if active else None

    def set_topology(self, topology: Topology) -> None:
        """Swap the entity store (e.g. a person added); a refused set keeps the old topology."""
        active = self._active
        if active is not None:
            sources = {"<active>": active.text}
            new = self.check_set(active.schema_text, sources, topology, active.info.directory)
            new = ActiveSet(active.info, new.text, new.schema_text, new.schema, new.policies, new.entities,
                          new.entities_json, new.ids, new.effects, new.annotations, new.literal_resources)
        with self._lock:
            old = self.topology
            self.topology = topology
            if active is not None:
                self._active = new
            self._plans.clear()
            self._tables.clear()
        changed = [k for k in set(old.principal_keys()) | set(topology.principal_keys())
                   if old.resolve(k) != topology.resolve(k)]
        self.emitter.emit(Kind.ADMIN_ACTION, reason="policy.entities_changed", detail={"principals": changed})
        if changed:
            self.bump(changed, "policy.entities_changed", SOURCE)

    # ------------------------------------------------------------------ epochs
    @property
    def global_epoch(self) -> int:
        return self._global_epoch

    def epoch_of(self, principal: str) -> int:
        ref = self.topology.resolve(principal)
        return self._epochs.get(ref.key if ref else principal, 0)

    def epochs(self) -> tuple[int, dict[str, int]]:
        """The global epoch and every principal's (what a control-plane replica adopts: :meth:`adopt_epochs`)."""
        with self._lock:
            return self._global_epoch, dict(self._epochs)

    def adopt_epochs(self, global_epoch: int, epochs: dict[str, int]) -> None:
        """Take another engine's epochs as this one's (a replica mirrors the active control plane, so that a
        table it issues carries the epochs the enforcement points know from the active plane's pushes); a
        table cached under other epochs is dropped."""
        with self._lock:
            if global_epoch != self._global_epoch:
                self._tables.clear()
            self._global_epoch = int(global_epoch)
            for key in set(self._epochs) | set(epochs):
                if self._epochs.get(key, 0) != epochs.get(key, 0):
                    self._tables.pop(key, None)
            self._epochs = {str(k): int(v) for k, v in epochs.items()}

    def is_current(self, table: DecisionTable, now: float) -> bool:
        return (now < table.expires_at and table.global_epoch == self._global_epoch
                and table.epoch == self._epochs.get(table.principal, 0))

    def bump(self, principals: Iterable[str] | None, reason: str, source: str,
             kind: str = EPOCH) -> list[Invalidation]:
        """Move exactly the epochs named (``None``: the global one) and publish one invalidation each
        (of ``kind``: a quarantine or release also closes or reopens the principal at every enforcement point)."""
        out: list[Invalidation] = []
        with self._lock:
            if principals is None:
                self._global_epoch += 1
                self._tables.clear()
                out.append(Invalidation(None, 0, self._global_epoch, reason, source, kind))
            else:
                for key in dict.fromkeys(principals):
                    ref = self.topology.resolve(key)
                    key = ref.key if ref else key
                    self._epochs[key] = self._epochs.get(key, 0) + 1
                    self._tables.pop(key, None)
                    out.append(Invalidation(key, self._epochs[key], self._global_epoch, reason, source, kind))
        for inv in out:
            self.bus.publish(inv)
        return out

    def on_signal_change(self, principals: tuple[str, ...] | None, reason: str, source: str,
                         kind: str = EPOCH) -> None:
        """A :class:`SignalSource` listener: a signal moved, so move the epochs it affects."""
        self.bump(principals, reason, source, kind)

    # ------------------------------------------------------------------ requests
    def _check_context(self, context: Any) -> tuple[int, bool]:
        if context is None:
            return 0, False
        if not isinstance(context, dict):
            raise RequestError(f"context must be a mapping, not {type(context).__name__}",
                               reason="policy.request.malformed_context")
        try:
            size = len(json.dumps(context, default=str))
        except (TypeError, ValueError, RecursionError) as exc:
            raise RequestError(f"context is not serialisable: {exc}", reason="policy.request.malformed_context") from exc
        if size > self.max_context_bytes:
            raise RequestError(f"context is {size} bytes, over {self.max_context_bytes}",
                               reason="policy.request.oversized_context")
        unknown = sorted(set(context) - set(REQUEST_FIELDS))
        if unknown:
            raise RequestError(f"unknown context fields {unknown}; signals are not caller-supplied",
                               reason="policy.request.malformed_context")
        notional = context.get("notional", 0)
        if isinstance(notional, bool) or not isinstance(notional, (int, float)) or not math.isfinite(notional) \
                or notional < 0 or notional > MAX_NOTIONAL:
            raise RequestError(f"notional {notional!r} is not a number in [0, {MAX_NOTIONAL}]",
                               reason="policy.request.malformed_context")
        reducing = context.get("risk_reducing", False)
        if not isinstance(reducing, bool):
            raise RequestError("risk_reducing must be a boolean", reason="policy.request.malformed_context")
        return int(math.ceil(notional)), reducing

    def _resolve(self, principal: Any, action: Any, resource: Any) -> PrincipalRef:
        if not isinstance(principal, str) or not isinstance(action, str) or not isinstance(resource, str):
            raise RequestError("principal, action and resource must be strings", reason="policy.request.malformed")
        ref = self.topology.resolve(principal)
        if ref is None:
            if principal.startswith("spiffe://") and not principal.startswith(f"spiffe://{self.topology.trust_domain}/"):
                raise RequestError(f"{principal} is not in trust domain {self.topology.trust_domain}",
                                   reason="policy.request.wrong_trust_domain")
            raise RequestError(f"unknown principal {principal!r}", reason="policy.request.unknown_principal")
        if action not in ACTIONS:
            raise RequestError(f"unknown action {action!r}", reason="policy.request.unknown_action")
        if resource not in self.topology.resources:
            raise RequestError(f"unknown resource {resource!r}", reason="policy.request.unknown_resource")
        return ref

    def _deny(self, principal: Any, action: Any, resource: Any, errors: tuple[str, ...], epoch: int = 0) -> Decision:
        return Decision(False, str(principal), str(action), str(resource), REASON_ERROR, (), errors,
                        NO_OBLIGATIONS, epoch)

    def decide(self, principal: str, action: str, resource: str, context: dict | None = None, *,
               now: float | None = None) -> Decision:
        """One decision. Never raises for bad input and never allows on an error."""
        now = self.clock.now() if now is None else now
        if isinstance(action, str) and action.startswith(OPERATOR_PREFIX):  # a person of the floor operating
            ref = self.topology.resolve(principal) if isinstance(principal, str) else None
            if ref is None or ref.kind != PERSON or context:
                return self._deny(principal, action, resource, ("policy.request.malformed: an operator action "
                                                                "is a person's, without request fields",))
            return self.decide_operator(ref.name, ref.roles, action, resource, now=now)
        try:
            ref = self._resolve(principal, action, resource)
            notional, reducing = self._check_context(context)
        except RequestError as exc:
            return self._deny(principal, action, resource, (f"{exc.reason}: {exc.detail}",))
        epoch = self._epochs.get(ref.key, 0)
        try:
            values = self.signals.signals_for(ref, now)
            ctx = values.context(notional, reducing)
        except Exception as exc:  # noqa: BLE001 - a failing signal source is a deny, never an allow
            return self._deny(ref.key, action, resource, (f"signal.unavailable: {_translate(exc)}",), epoch)
        return self._evaluate(ref, action, resource, ctx, epoch)

    def decide_operator(self, person: str, roles: tuple[str, ...], action: str, control: str, *,
                        mfa: bool | None = None, step_up_age_s: int | None = None,
                        now: float | None = None) -> Decision:
        """May ``person`` (holding ``roles`` in the identity plane) take the operator ``action`` on ``control``?

        Operator actions (``operator.*``) act on a ``Control`` entity (containment, signals, kill-switch,
        ca, tokens, people). The person need not be in the topology: their ``User`` entity is built
        from ``roles``. The context is the person's live signals (quarantine, threat, risk), with
        ``mfa`` and ``step_up_age_s`` replaced by what the request itself proved when given.
        Never raises, never allows on an error.
        """
        now = self.clock.now() if now is None else now
        key = f"user:{person}"
        if not (isinstance(person, str) and person and isinstance(action, str) and action.startswith(OPERATOR_PREFIX)
                and isinstance(control, str) and control and isinstance(roles, tuple)
                and all(isinstance(r, str) for r in roles)):
            return self._deny(key, action, control, ("policy.request.malformed: person, operator.* action, control",))
        active = self._active
        if active is None:
            return self._deny(key, action, control, ("policy.no_active_set: no policy set loaded",))
        known = self.topology.resolve(key)
        ref = PrincipalRef(key=key, kind=PERSON, name=person, entity_type="User",
                           account=known.account if known else "acct-firm", roles=tuple(roles))
        epoch = self._epochs.get(key, 0)
        try:
            values = self.signals.signals_for(ref, now)
            ctx = values.context()
        except Exception as exc:  # noqa: BLE001 - a failing signal source is a deny, never an allow
            return self._deny(key, action, control, (f"signal.unavailable: {_translate(exc)}",), epoch)
        if mfa is not None:
            ctx["mfa"] = bool(mfa)
        if step_up_age_s is not None:
            ctx["step_up_age_s"] = max(0, min(int(step_up_age_s), 10**9))
        entities = [e for e in json.loads(active.entities_json) if e["uid"] != {"type": "User", "id": person}]
        entities.append({"uid": {"type": "User", "id": person}, "attrs": {"account": ref.account},
                         "parents": [{"type": "Role", "id": r} for r in ref.roles if r in self.topology.roles]})
        request = {"principal": ref.uid, "action": {"type": "Action", "id": action},
                   "resource": {"type": "Control", "id": control}, "context": json.dumps(ctx)}
        try:
            result = cedar.authorize_batch([request], active.policies, json.dumps(entities))[0]
        except Exception as exc:  # noqa: BLE001 - foreign failure -> deny
            return self._deny(key, action, control, (f"policy.evaluation: {_translate(exc)}",), epoch)
        return self._interpret(active, ref, action, control, result, epoch)

    def _evaluate(self, ref: PrincipalRef, action: str, resource: str, ctx: dict, epoch: int) -> Decision:
        active = self._active
        if active is None:
            return self._deny(ref.key, action, resource, ("policy.no_active_set: no policy set loaded",), epoch)
        request = {"principal": ref.uid, "action": {"type": "Action", "id": action},
                   "resource": {"type": "Resource", "id": resource}, "context": json.dumps(ctx)}
        try:
            result = cedar.authorize_batch([request], active.policies, active.entities)[0]
        except Exception as exc:  # noqa: BLE001 - foreign failure -> deny
            return self._deny(ref.key, action, resource, (f"policy.evaluation: {_translate(exc)}",), epoch)
        return self._interpret(active, ref, action, resource, result, epoch)

    def evaluate_recorded(self, requests: list[tuple[str, str, str, dict]]) -> list[Decision]:
        """Decide recorded requests, each ``(principal, action, resource, context)`` with its full recorded context.

        For replays (:mod:`trustfabric.policy.impact`): the context is the one a decision saw (signals and
        request fields, every field of the schema's ``Signals``), not today's signals. One cedarpy batch
        for the lot; an unknown principal, action or resource, or a request the batch cannot evaluate,
        is a deny that keeps the error, as in :meth:`decide`.
        """
        active = self._active
        out: list[Decision | None] = [None] * len(requests)
        batch: list[dict] = []
        slots: list[tuple[int, PrincipalRef]] = []
        for i, (principal, action, resource, ctx) in enumerate(requests):
            if active is None:
                out[i] = self._deny(principal, action, resource, ("policy.no_active_set: no policy set loaded",))
                continue
            try:
                ref = self._resolve(principal, action, resource)
            except RequestError as exc:
                out[i] = self._deny(principal, action, resource, (f"{exc.reason}: {exc.detail}",))
                continue
            batch.append({"principal": ref.uid, "action": {"type": "Action", "id": action},
                          "resource": {"type": "Resource", "id": resource}, "context": json.dumps(ctx)})
            slots.append((i, ref))
        if batch and active is not None:
            try:
                results = cedar.authorize_batch(batch, active.policies, active.entities)
            except Exception as exc:  # noqa: BLE001 - foreign failure -> deny every request of the batch
                results = None
                for i, ref in slots:
                    p, a, r, _ = requests[i]
                    out[i] = self._deny(ref.key, a, r, (f"policy.evaluation: {_translate(exc)}",))
            if results is not None:
                for (i, ref), result in zip(slots, results):
                    _, action, resource, _ = requests[i]
                    out[i] = self._interpret(active, ref, action, resource, result,
                                             self._epochs.get(ref.key, 0))
        return out  # type: ignore[return-value]

    def effect_of(self, policy_id: str) -> str:
        """``permit`` or ``forbid`` for a policy ``@id`` of the set in force (``""`` when unknown)."""
        active = self._active
        return active.effects.get(policy_id, "") if active else ""

    def _interpret(self, active: ActiveSet, ref: PrincipalRef, action: str, resource: str, resp: dict,
                   epoch: int) -> Decision:
        diag = resp.get("diagnostics") or {}
        ids = tuple(active.ids.get(p, p) for p in diag.get("reason") or ())
        errors = tuple(str(e.get("error", e)) if isinstance(e, dict) else str(e) for e in diag.get("errors") or ())
        if errors:
            return Decision(False, ref.key, action, resource, REASON_ERROR, ids, errors, NO_OBLIGATIONS, epoch)
        if resp.get("decision") == "Allow":
            return Decision(True, ref.key, action, resource, REASON_ALLOW, ids, (),
                            self._obligations_for(active, ref, ids), epoch)
        return Decision(False, ref.key, action, resource, REASON_FORBID if ids else REASON_NO_PERMIT, ids, (),
                        NO_OBLIGATIONS, epoch)

    def _obligations_for(self, active: ActiveSet, ref: PrincipalRef, ids: tuple[str, ...]) -> Obligations:
        key = (ref.key, ids)
        cached = self._obligations.get(key)
        if cached is not None:
            return cached
        merged = Obligations(ttl_s=self.table_ttl_s)
        for pid in ids:
            ann = active.annotations.get(pid, {})
            symbols = None
            if "symbols" in ann:
                raw = ann["symbols"].strip()
                if raw == "$streams":
                    svc = self.topology.services.get(ref.name) if ref.kind == "workload" else None
                    symbols = frozenset(svc.symbols) if svc else frozenset()
                else:
                    symbols = frozenset(s for s in re.split(r"[\s,]+", raw) if s)

            def num(k: str) -> float | None:
                return float(ann[k]) if k in ann else None

            burst = num("burst")
            merged = merged.merge(Obligations(
                ttl_s=num("ttl"), max_notional=num("max_notional"), max_rate=num("max_rate"),
                burst=int(burst) if burst is not None else None, symbols=symbols,
                step_up_max_age_s=num("step_up_max_age"),
            ))
        self._obligations[key] = merged
        return merged

    # ------------------------------------------------------------------ decision tables
    def plan_classes(self, principal: str) -> int:
        """How many Cedar evaluations compile ``principal``'s decision table (its equivalence classes);
        0 before its first table. A benchmark figure: the planner's saving over one call per entry."""
        plan = self._plans.get(principal)
        return len(plan.classes) if plan is not None else 0

    def _plan(self, active: ActiveSet, ref: PrincipalRef) -> Plan:
        plan = self._plans.get(ref.key)
        if plan is None:
            plan = self._plans[ref.key] = compile_plan(active, ref, self.topology.candidates())
        return plan

    def decision_table(self, principal: str, now: float | None = None) -> DecisionTable:
        """Every (action, resource) of the topology decided for ``principal`` at ``now``.

        Raises :class:`RequestError` for an unknown principal and
        :class:`PolicyLoadError` when no policy set is in force (callers fail closed).
        """
        now = self.clock.now() if now is None else now
        ref = self.topology.resolve(principal) if isinstance(principal, str) else None
        if ref is None:
            raise RequestError(f"unknown principal {principal!r}", reason="policy.request.unknown_principal")
        cached = self._tables.get(ref.key)
        if cached is not None and self.is_current(cached.table, now) and now >= cached.table.issued_at:
            return cached.table
        with self._lock:
            active = self._active
            epoch = self._epochs.get(ref.key, 0)
            global_epoch = self._global_epoch
        if active is None:
            raise PolicyLoadError("no policy set loaded", reason="policy.no_active_set")
        try:
            values = self.signals.signals_for(ref, now)
            ctx_json = json.dumps(values.context())
        except Exception as exc:  # noqa: BLE001 - fail closed: no table, the caller refuses
            raise RequestError(f"signals unavailable: {_translate(exc)}", reason="signal.unavailable") from exc
        plan = self._plan(active, ref)
        requests = [dict(base, context=ctx_json) for base in plan.base_requests]
        try:
            results = cedar.authorize_batch(requests, active.policies, active.entities) if requests else []
        except Exception as exc:  # noqa: BLE001
            raise RequestError(f"evaluation failed: {_translate(exc)}", reason="policy.evaluation") from exc
        entries: dict[tuple[str, str], Decision] = {}
        ttl = self.table_ttl_s
        for (action, _), members, result in zip(plan.classes, plan.members, results):
            decision = self._interpret(active, ref, action, members[0], result, epoch)
            if decision.allowed and decision.obligations.ttl_s is not None:
                ttl = min(ttl, decision.obligations.ttl_s)
            entries[(action, members[0])] = decision
            for other in members[1:]:
                entries[(action, other)] = Decision(decision.allowed, ref.key, action, other, decision.reason,
                                                    decision.policy_ids, decision.errors, decision.obligations,
                                                    epoch)
        for action, resource in plan.no_permit:
            entries[(action, resource)] = Decision(False, ref.key, action, resource, REASON_NO_PERMIT, (), (),
                                                   NO_OBLIGATIONS, epoch)
        expires = min(now + ttl, values.valid_until)
        table = DecisionTable(ref.key, epoch, global_epoch, now, expires, entries)
        with self._lock:
            if self._epochs.get(ref.key, 0) == epoch and self._global_epoch == global_epoch:
                self._tables[ref.key] = _TableCacheEntry(table, values)
        return table

    def table_signals(self, table: DecisionTable) -> dict[str, Any] | None:
        """The signal context ``table`` was compiled with (request fields at their defaults), if still cached."""
        entry = self._tables.get(table.principal)
        if entry is None or entry.table is not table:
            return None
        return entry.signals.context()

    def clear_table_cache(self) -> None:
        with self._lock:
            self._tables.clear()

    # ------------------------------------------------------------------ explanations
    def explain(self, principal: str, action: str, resource: str, context: dict | None = None, *,
                now: float | None = None) -> Explanation:
        """The decision, the policies behind it, and which signals, set benign, would change it."""
        now = self.clock.now() if now is None else now
        decision = self.decide(principal, action, resource, context, now=now)
        ref = self.topology.resolve(principal) if isinstance(principal, str) else None
        active = self._active
        if isinstance(action, str) and action.startswith(OPERATOR_PREFIX):
            return Explanation(decision, tuple((pid, active.effects.get(pid, "?") if active else "?",
                                                active.annotations.get(pid, {}) if active else {})
                                               for pid in decision.policy_ids), {}, ())
        if ref is None or active is None or decision.reason == REASON_ERROR and not decision.policy_ids \
                and any(e.startswith("policy.request") or e.startswith("signal.") for e in decision.errors):
            return Explanation(decision, (), {}, ())
        notional, reducing = self._check_context(context)
        values = self.signals.signals_for(ref, now)
        ctx = values.context(notional, reducing)
        epoch = self._epochs.get(ref.key, 0)
        mattered = []
        for key, benign in BENIGN.items():
            if ctx.get(key) == benign:
                continue
            flipped = self._evaluate(ref, action, resource, dict(ctx, **{key: benign}), epoch)
            if flipped.allowed != decision.allowed or flipped.policy_ids != decision.policy_ids:
                mattered.append(key)
        policies = tuple((pid, active.effects.get(pid, "?"), active.annotations.get(pid, {}))
                         for pid in decision.policy_ids)
        details = {"posture_reasons": list(values.posture_reasons),
                   "threat_indicators": list(values.threat_indicators)}
        return Explanation(decision, policies, ctx, tuple(mattered), details)

    # ------------------------------------------------------------------ naive baseline (benchmarks)
    def naive_request(self, principal: str, action: str, resource: str, now: float | None = None) -> dict:
        """The request, policy text, entities and schema text for evaluating with no pre-parsed handles."""
        now = self.clock.now() if now is None else now
        ref = self._resolve(principal, action, resource)
        active = self._active
        if active is None:
            raise PolicyLoadError("no policy set loaded", reason="policy.no_active_set")
        ctx = self.signals.signals_for(ref, now).context()
        return {"request": {"principal": ref.uid, "action": {"type": "Action", "id": action},
                            "resource": {"type": "Resource", "id": resource}, "context": ctx},
                "policies": active.text, "entities": active.entities_json, "schema": active.schema_text}

    @staticmethod
    def naive_decide(bundle: dict) -> bool:
        """cedarpy with policy text, entity JSON and schema text: everything re-parsed on each call."""
        return cedar.authorize_naive(bundle["request"], bundle["policies"], bundle["entities"], bundle["schema"])
