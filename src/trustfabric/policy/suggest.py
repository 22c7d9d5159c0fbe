"""Least privilege learned from observed traffic: Cedar grants for exactly the flows a window of the log shows.

:func:`suggest` reads a run's decisions (:mod:`trustfabric.policy.recorded`) and, for every workload
principal observed, the (action, resource) flows it used. Flows the policies in force already allow
are left as they are; the others become permits in ``suggested.cedar``, grouped per segment, one
policy per (principal, kind of flow): market-data streams per action, service connections, and
each other resource with the actions used on it. Obligations are sized from the window with a
stated headroom (default 1.5x): ``@max_rate`` from the busiest second of the flow,
``@max_notional`` from the largest order, ``@symbols`` from the symbols ordered and those of the
streams it subscribed to in the window, ``@ttl`` as the
floor's policies use (120 s for order flow, 300 s otherwise). Observed *denials* become grants only
when asked (``grant_denied``, how a new algo is onboarded from paper trading, where it has no
grant yet) and only when nothing but the lack of a permit denied them: a flow a guard forbade
(quarantine, threat, risk, kill switch, market closed) is never suggested.

The output is a whole proposed policy directory: the current one copied, plus
``suggested.cedar``, the matching ``[[flow]]`` entries appended to ``floor.toml`` (the topology
grants what the policies grant) and ``tests/suggested.toml`` (an allow case per granted flow).
The set is validated against the schema and its tests run before :func:`suggest` returns; a
suggestion that does not load or pass is an error, never written half-way.

Unused access: every (principal, action, resource) the policies in force allow with healthy
signals that no decision of the window used, grouped by the policy that grants it: candidates
for removal. People are reported too (their grants come by role).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import PolicyLoadError, RecordedError
from trustfabric.policy.recorded import Recorded, read
from trustfabric.policy.testcases import run_cases
from trustfabric.policy.topology import WORKLOAD, Topology

SUGGESTED_FILE = "suggested.cedar"
SUGGESTED_TESTS = "suggested.toml"
DEFAULT_HEADROOM = 1.5
ORDER_ACTIONS = frozenset({"submit_order", "cancel_order", "route_order", "execute"})
NOTIONAL_ACTIONS = frozenset({"submit_order", "route_order", "execute"})
# Denials that only say "nothing granted this": the flows an onboarding window may turn into grants.
NO_GRANT_REASONS = frozenset({"policy.no_permit", "enforcement.not_in_table", "control.not_permitted"})


@dataclass(frozen=True)
class Grant:
    """One suggested permit: a principal's actions on resources, with the obligations the window sized."""

    policy_id: str
    principal: str  # service name
    segment: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    max_rate: int | None
    max_notional: int | None
    symbols: tuple[str, ...]
    ttl: int
    observed: int  # decisions behind it
    peak_rate: int  # busiest second observed
    peak_notional: float

    def cedar(self) -> str:
        ann = [f'@id("{self.policy_id}")']
        if self.max_rate is not None:
            ann.append(f'@max_rate("{self.max_rate}")')
        if self.max_notional is not None:
            ann.append(f'@max_notional("{self.max_notional}")')
        if self.symbols:
            ann.append(f'@symbols("{",".join(self.symbols)}")')
        ann.append(f'@ttl("{self.ttl}")')
        actions = (f'action == Action::"{self.actions[0]}"' if len(self.actions) == 1 else
                   "action in [" + ", ".join(f'Action::"{a}"' for a in self.actions) + "]")
        head = f'permit (principal == Workload::"{self.principal}", {actions}, resource'
        if len(self.resources) == 1:
            return " ".join(ann) + f'\n{head} == Resource::"{self.resources[0]}");\n'
        listed = ", ".join(f'Resource::"{r}"' for r in self.resources)
        return " ".join(ann) + f"\n{head})\nwhen {{ [{listed}].contains(resource) }};\n"


@dataclass(frozen=True)
class Unused:
    principal: str
    policy_id: str
    action: str
    resources: tuple[str, ...]


@dataclass
class Suggestion:
    grants: list[Grant] = field(default_factory=list)
    covered: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)  # already allowed
    refused: list[tuple[str, str, str, str]] = field(default_factory=list)  # (p, a, r, reason) not suggested
    unused: list[Unused] = field(default_factory=list)
    decisions: int = 0
    window_s: float = 0.0
    headroom: float = DEFAULT_HEADROOM
    out: Path | None = None
    tests_passed: int = 0


def _nice_up(value: float) -> int:
    """``value`` rounded up to two significant digits (250000, 1200, 15)."""
    if value <= 0:
        return 1
    scale = 10 ** max(0, int(math.floor(math.log10(value))) - 1)
    return int(math.ceil(value / scale) * scale)


def _service(topology: Topology, principal: str) -> str | None:
    ref = topology.resolve(principal)
    return ref.name if ref is not None and ref.kind == WORKLOAD else None


def _grants(recorded: Recorded, flows: dict[str, set[tuple[str, str]]], topology: Topology,
            headroom: float) -> list[Grant]:
    peak: dict[tuple[str, str, str], int] = {}
    for (p, a, r, _), n in recorded.per_second.items():
        name = _service(topology, p)
        if name is not None:
            peak[(name, a, r)] = max(peak.get((name, a, r), 0), n)
    count: dict[tuple[str, str, str], int] = {}
    notional: dict[tuple[str, str, str], float] = {}
    symbols: dict[tuple[str, str, str], set[str]] = {}
    for cls, n in recorded.classes.items():
        name = _service(topology, cls.principal)
        if name is None:
            continue
        key = (name, cls.action, cls.resource)
        count[key] = count.get(key, 0) + n
        notional[key] = max(notional.get(key, 0.0), cls.notional)
        if cls.symbol:
            symbols.setdefault(key, set()).add(cls.symbol)
    out: list[Grant] = []
    for name in sorted(flows):
        svc = topology.services[name]
        groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for action, resource in sorted(flows[name]):
            kind = topology.resources[resource].kind
            if kind == "stream":
                gkey: tuple[str, ...] = ("streams", action)
            elif kind == "service":
                gkey = ("connect",)
            else:
                gkey = ("resource", resource)
            groups.setdefault(gkey, []).append((action, resource))
        for gkey, pairs in sorted(groups.items()):
            actions = tuple(sorted({a for a, _ in pairs}))
            resources = tuple(sorted({r for _, r in pairs}))
            keys = [(name, a, r) for a, r in pairs]
            if gkey[0] == "streams":
                pid = f"suggested.{name}.{gkey[1]}"
            elif gkey[0] == "connect":
                pid = f"suggested.{name}.connect"
            else:
                pid = f"suggested.{name}.{gkey[1].replace('/', '.')}"
            busiest = max(peak.get(k, 0) for k in keys)
            largest = max(notional.get(k, 0.0) for k in keys)
            # the symbols it ordered, and those of the streams it subscribed to (what it may trade on)
            watched = {topology.resources[r].symbol for a, r in flows[name] if a == "subscribe"}
            ordered = sorted(set().union(*(symbols.get(k, set()) for k in keys)) | watched)
            orders = bool(set(actions) & ORDER_ACTIONS)
            out.append(Grant(
                policy_id=pid, principal=name, segment=svc.segment, actions=actions, resources=resources,
                max_rate=None if gkey[0] == "connect" else _nice_up(max(1, busiest) * headroom),
                max_notional=_nice_up(largest * headroom) if largest > 0 and set(actions) & NOTIONAL_ACTIONS else None,
                symbols=tuple(ordered) if orders and ordered else (),
                ttl=120 if orders else 300, observed=sum(count.get(k, 0) for k in keys), peak_rate=busiest,
                peak_notional=largest))
    return out


def _unused(engine: PolicyEngine, topology: Topology, used: set[tuple[str, str, str]],
            principal: str | None) -> list[Unused]:
    out: list[Unused] = []
    for key in topology.principal_keys():
        ref = topology.resolve(key)
        if ref is None or (principal is not None and principal not in (ref.key, ref.name)):
            continue
        grouped: dict[tuple[str, str], list[str]] = {}
        for (action, resource), d in engine.decision_table(key).entries.items():
            if d.allowed and (ref.key, action, resource) not in used:
                pid = ",".join(x for x in d.policy_ids if engine.effect_of(x) == "permit") or "?"
                grouped.setdefault((pid, action), []).append(resource)
        out.extend(Unused(ref.key, pid, action, tuple(sorted(rs))) for (pid, action), rs in sorted(grouped.items()))
    return out


def _render(grants: list[Grant], suggestion: Suggestion, source: str) -> str:
    lines = [f"// Suggested by `trustfabric policy suggest` from {source}: {suggestion.decisions} decisions over "
             f"{suggestion.window_s:.0f} s.",
             "// Exactly the flows observed; obligations sized from the window with headroom "
             f"{suggestion.headroom:g}x over the peak (busiest second for @max_rate, largest order for @max_notional).",
             ""]
    for segment in sorted({g.segment for g in grants}):
        lines.append(f"// ---------------------------------------------------------------- segment {segment}")
        for g in (g for g in grants if g.segment == segment):
            lines.append(f"// observed {g.observed} decisions, peak {g.peak_rate}/s"
                         + (f", largest notional {g.peak_notional:g}" if g.peak_notional else ""))
            lines.append(g.cedar())
    return "\n".join(lines)


def _toml_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _flows_toml(grants: list[Grant]) -> str:
    parts = ["", "# ---------------------------------------------------------------- suggested flows",
             "# Added by `trustfabric policy suggest` with suggested.cedar (the topology grants what the policies grant)."]
    for g in grants:
        parts += ["[[flow]]", f'principal = "{g.principal}"', f"actions = {_toml_list(g.actions)}",
                  f"resources = {_toml_list(g.resources)}", ""]
    return "\n".join(parts)


def _tests_toml(grants: list[Grant]) -> str:
    parts = ["# Added by `trustfabric policy suggest`: each suggested flow is allowed, by its suggested policy.", ""]
    for g in grants:
        for action in g.actions:
            for resource in g.resources:
                parts += ["[[case]]", f'name = "{g.principal} may {action} {resource} (suggested)"',
                          f'principal = "{g.principal}"', f'action = "{action}"', f'resource = "{resource}"',
                          'expect = "allow"', f'policy = "{g.policy_id}"', ""]
    return "\n".join(parts)


def suggest(audit_dir: str | Path, policies: str | Path, *, out: str | Path | None = None,
            since_s: float | None = None, principal: str | None = None, grant_denied: bool = False,
            headroom: float = DEFAULT_HEADROOM) -> Suggestion:
    """The least-privilege suggestion for ``audit_dir``'s window against the set in ``policies``.

    With ``out``, writes the proposed directory there (validated and its tests passing) and sets
    :attr:`Suggestion.out`. Raises :class:`RecordedError` / :class:`PolicyLoadError` on refusal.
    """
    if not (isinstance(headroom, (int, float)) and math.isfinite(headroom) and headroom >= 1.0):
        raise RecordedError(f"headroom {headroom!r} must be a number >= 1", reason="policy.recorded.headroom")
    policies = Path(policies)
    engine = PolicyEngine.from_dir(policies, assume_healthy=True)
    topology = engine.topology
    recorded = read(audit_dir, since_s=since_s, principal=principal, per_second=True)
    result = Suggestion(decisions=recorded.decisions, headroom=headroom,
                        window_s=(recorded.last_ns - recorded.first_ns) / 1e9)
    used: set[tuple[str, str, str]] = set()
    reasons: dict[tuple[str, str, str], set[str]] = {}
    for cls in recorded.classes:
        ref = topology.resolve(cls.principal)
        key = (ref.key if ref else cls.principal, cls.action, cls.resource)
        if recorded.allowed.get(cls, 0):
            used.add(key)
        reasons.setdefault(key, set()).add(recorded.reasons[cls])
    flows: dict[str, set[tuple[str, str]]] = {}
    for key in sorted(reasons):
        p, action, resource = key
        ref = topology.resolve(p)
        if ref is None or resource not in topology.resources or action not in topology.resources[resource].actions:
            result.refused.append((*key, "policy.request.unknown"))
            continue
        if ref.kind != WORKLOAD:
            continue  # people are granted by role, not one by one
        if key not in used and not (grant_denied and reasons[key] & NO_GRANT_REASONS):
            result.refused.append((*key, ",".join(sorted(reasons[key]))))
            continue
        decision = engine.decide(ref.key, action, resource)
        if decision.allowed:
            result.covered.append((*key, decision.policy_ids))
        elif decision.reason != "policy.no_permit":
            result.refused.append((*key, f"{decision.reason}: {','.join(decision.policy_ids)}"))
        else:
            flows.setdefault(ref.name, set()).add((action, resource))
    result.grants = _grants(recorded, flows, topology, headroom)
    result.unused = _unused(engine, topology, used, principal)
    if out is not None:
        result.out = _write(Path(out), policies, result, str(audit_dir))
        result.tests_passed = run_cases(result.out).passed
    return result


def _write(out: Path, policies: Path, result: Suggestion, source: str) -> Path:
    if out.exists() and any(out.iterdir()):
        raise RecordedError(f"{out} exists and is not empty", reason="policy.recorded.out_exists")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(policies, staging, ignore=shutil.ignore_patterns("__pycache__", "*.partial"))
    if result.grants:
        (staging / SUGGESTED_FILE).write_text(_render(result.grants, result, source), encoding="utf-8")
        manifest = staging / "floor.toml"
        base = Topology.path_for(staging).read_text(encoding="utf-8")
        manifest.write_text(base.rstrip("\n") + "\n" + _flows_toml(result.grants), encoding="utf-8")
        (staging / "tests").mkdir(exist_ok=True)
        (staging / "tests" / SUGGESTED_TESTS).write_text(_tests_toml(result.grants), encoding="utf-8")
    try:
        PolicyEngine.from_dir(staging, assume_healthy=True)
        report = run_cases(staging)
    except PolicyLoadError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if report.failed:
        failed = [f"{r.case.name}: {r.why}" for r in report.results if not r.passed]
        shutil.rmtree(staging, ignore_errors=True)
        raise PolicyLoadError("; ".join(failed[:5]), reason="policy.load.tests_failed", errors=tuple(failed))
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out
