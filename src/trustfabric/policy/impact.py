"""A policy change's impact, replayed: every recorded request decided by the active and the proposed set.

:func:`impact` folds a run's decisions (:mod:`trustfabric.policy.recorded`: identical requests -
same principal, action, resource, notional, symbol and recorded signals - become one class with a
count) and decides each distinct request once per set, in cedarpy batches
(:meth:`~trustfabric.policy.engine.PolicyEngine.evaluate_recorded`), with the context the
decision saw: its recorded signals plus its notional. The enforcement point's per-request
obligations are applied as it applies them (``@max_notional``, ``@symbols``); rate obligations
depend on timing and are not replayed. A decision with no recorded signals is replayed with
healthy signals and counted in :attr:`ImpactReport.assumed_signals`.

Every class whose outcome differs is a flip, allow -> deny or deny -> allow, reported grouped by
principal and resource with the policies responsible on each side (the permits that allowed, the
forbids that denied, none when nothing permitted). A deny -> allow flip on a resource the proposed
topology marks high-risk (:meth:`~trustfabric.policy.topology.Topology.is_high_risk`: venues,
settlement, treasury, client data, kill switch, containment) makes :attr:`ImpactReport.high_risk`
true, and ``policy impact`` exit non-zero. The report carries the replay rate (recorded
decisions per second of wall time, reading included) from the injected clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trustfabric.policy.decision import Decision
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.recorded import RequestClass, read
from trustfabric.policy.topology import PERSON, Topology
from trustfabric.policy.context import HEALTHY_PERSON, HEALTHY_WORKLOAD

BATCH = 4096
ALLOW_TO_DENY = "allow->deny"
DENY_TO_ALLOW = "deny->allow"
OBLIGATION_NOTIONAL = "obligation.max_notional"
OBLIGATION_SYMBOL = "obligation.symbols"


@dataclass(frozen=True)
class Flip:
    principal: str
    resource: str
    action: str
    direction: str  # ALLOW_TO_DENY | DENY_TO_ALLOW
    count: int  # recorded decisions that flip
    active_policies: tuple[str, ...]
    proposed_policies: tuple[str, ...]
    active_reason: str
    proposed_reason: str
    high_risk: bool


@dataclass
class ImpactReport:
    decisions: int = 0
    distinct: int = 0  # request classes evaluated (per set)
    evaluations: int = 0  # cedar evaluations (per set)
    skipped: int = 0  # records naming an unknown principal, action or resource in both sets
    assumed_signals: int = 0
    flips: list[Flip] = field(default_factory=list)
    read_s: float = 0.0
    replay_s: float = 0.0
    active_digest: str = ""
    proposed_digest: str = ""

    @property
    def high_risk(self) -> bool:
        return any(f.high_risk and f.direction == DENY_TO_ALLOW for f in self.flips)

    @property
    def rate(self) -> float:
        """Recorded decisions replayed per second (reading the log included)."""
        total = self.read_s + self.replay_s
        return self.decisions / total if total > 0 else math.inf

    def grouped(self) -> dict[tuple[str, str], list[Flip]]:
        out: dict[tuple[str, str], list[Flip]] = {}
        for f in sorted(self.flips, key=lambda f: (f.principal, f.resource, f.action, f.direction)):
            out.setdefault((f.principal, f.resource), []).append(f)
        return out


def _engine(directory: Path) -> PolicyEngine:
    return PolicyEngine.from_dir(directory, assume_healthy=True)


def _context(cls: RequestClass, topology: Topology) -> tuple[dict, bool]:
    if cls.signals is not None:
        ctx = dict(cls.signals)
        assumed = False
    else:
        ref = topology.resolve(cls.principal)
        base = HEALTHY_PERSON if ref is not None and ref.kind == PERSON else HEALTHY_WORKLOAD
        ctx = base.context()
        assumed = True
    ctx["notional"] = int(math.ceil(max(0.0, min(cls.notional, 1e15))))
    ctx["risk_reducing"] = False
    return ctx, assumed


def _outcome(d: Decision, cls: RequestClass) -> tuple[bool, str]:
    """Allowed as an enforcement point applies it: the decision, then the per-request obligations."""
    if not d.allowed:
        return False, d.reason
    cap = d.obligations.max_notional
    if cap is not None and not (0.0 <= cls.notional <= cap):
        return False, OBLIGATION_NOTIONAL
    if d.obligations.symbols is not None and cls.symbol not in d.obligations.symbols:
        return False, OBLIGATION_SYMBOL
    return True, d.reason


def _decide_all(engine: PolicyEngine, keys: list[tuple], contexts: dict[tuple, dict]) -> dict[tuple, Decision]:
    out: dict[tuple, Decision] = {}
    for i in range(0, len(keys), BATCH):
        chunk = keys[i:i + BATCH]
        decisions = engine.evaluate_recorded([(k[0], k[1], k[2], contexts[k]) for k in chunk])
        out.update(zip(chunk, decisions))
    return out


def impact(proposed: str | Path, replay: str | Path, active: str | Path, *,
           timer: Callable[[], float] = time.perf_counter) -> ImpactReport:
    """Replay ``replay``'s recorded decisions against the ``active`` and ``proposed`` policy directories."""
    report = ImpactReport()
    t0 = timer()
    recorded = read(replay)
    t1 = timer()
    old, new = _engine(Path(active)), _engine(Path(proposed))
    report.active_digest = old.info.digest if old.info else ""
    report.proposed_digest = new.info.digest if new.info else ""
    report.decisions = recorded.decisions
    report.distinct = len(recorded.classes)
    # Cedar sees (principal, action, resource, signals, notional): the symbol only meets the obligations.
    contexts: dict[tuple, dict] = {}
    cedar_key: dict[RequestClass, tuple] = {}
    for cls, n in recorded.classes.items():
        ctx, assumed = _context(cls, new.topology)
        if assumed:
            report.assumed_signals += n
        key = (cls.principal, cls.action, cls.resource, cls.signals, ctx["notional"])
        cedar_key[cls] = key
        contexts.setdefault(key, ctx)
    keys = list(contexts)
    report.evaluations = len(keys)
    before = _decide_all(old, keys, contexts)
    after = _decide_all(new, keys, contexts)
    flips: dict[tuple, list] = {}
    for cls, n in recorded.classes.items():
        key = cedar_key[cls]
        a, b = before[key], after[key]
        if a.reason == "policy.error" and b.reason == "policy.error" and any(
                e.startswith("policy.request") for e in a.errors + b.errors):
            report.skipped += n
            continue
        was, why_was = _outcome(a, cls)
        now, why_now = _outcome(b, cls)
        if was == now:
            continue
        direction = DENY_TO_ALLOW if now else ALLOW_TO_DENY
        fkey = (cls.principal, cls.resource, cls.action, direction, a.policy_ids, b.policy_ids, why_was, why_now)
        entry = flips.setdefault(fkey, [0])
        entry[0] += n
    for (p, r, action, direction, ap, bp, wa, wb), (count,) in flips.items():
        report.flips.append(Flip(p, r, action, direction, count, ap, bp, wa, wb,
                                 new.topology.is_high_risk(r) or old.topology.is_high_risk(r)))
    report.read_s = t1 - t0
    report.replay_s = timer() - t1
    return report
