"""Policy test cases: requests with fixed signals and the decision (and deciding policy) they must get.

A case file is TOML under ``<policy dir>/tests/*.toml``::

    [[case]]
    name = "meanrev subscribes to its own stream"
    principal = "algo-meanrev"            # service name, SPIFFE ID or user:<name>
    action = "subscribe"
    resource = "md/JPM"
    context = { notional = 0 }            # optional request fields
    signals = { quarantined = true }      # optional overrides of the healthy baseline
    expect = "deny"                       # "allow" | "deny"
    policy = "guard.quarantine"           # optional: must be among the deciding policies; "" = none decided
    error = "policy.request.unknown_principal"   # optional: an error that must be reported

Signals start healthy (posture good, market open, kill switch ACTIVE, people with
MFA and no recent step-up) and the case overrides them, so each case pins down
one rule. :func:`run_cases` loads the set once and runs every case through
:meth:`~trustfabric.policy.engine.PolicyEngine.decide`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from trustfabric.clock import FakeClock
from trustfabric.policy.decision import Decision
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import PolicyTestError
from trustfabric.policy.topology import Topology
from trustfabric.policy.context import SignalValues, StaticSignals

_SIGNAL_FIELDS = set(SignalValues.__struct_fields__)


@dataclass(frozen=True)
class PolicyCase:
    file: str
    name: str
    principal: str
    action: str
    resource: str
    expect: str
    context: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    passed: bool
    why: str = ""


@dataclass(frozen=True)
class CaseReport:
    results: tuple[CaseResult, ...]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def load_cases(directory: str | Path) -> list[PolicyCase]:
    directory = Path(directory)
    files = sorted((directory / "tests").glob("*.toml")) if (directory / "tests").is_dir() else []
    if not files:
        raise PolicyTestError(f"no test cases under {directory}/tests/*.toml", reason="policy.test.none")
    cases: list[PolicyCase] = []
    for path in files:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyTestError(f"{path.name}: {exc}", reason="policy.test.syntax") from exc
        for i, item in enumerate(raw.get("case", [])):
            try:
                signals = dict(item.get("signals", {}))
                unknown = set(signals) - _SIGNAL_FIELDS
                if unknown or item["expect"] not in ("allow", "deny"):
                    raise ValueError(f"unknown signals {sorted(unknown)}" if unknown else "expect: allow|deny")
                cases.append(PolicyCase(
                    file=path.name, name=item.get("name", f"case {i}"), principal=item["principal"],
                    action=item["action"], resource=item["resource"], expect=item["expect"],
                    context=dict(item.get("context", {})), signals=signals, policy=item.get("policy"),
                    error=item.get("error"),
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise PolicyTestError(f"{path.name} case {i}: {exc}", reason="policy.test.malformed") from exc
    return cases


class _CaseSignals(StaticSignals):
    def use(self, overrides: dict[str, Any]) -> None:
        self._overrides = {"*": dict(overrides)} if overrides else {}


def run_case(engine: PolicyEngine, signals: _CaseSignals, case: PolicyCase, now: float) -> CaseResult:
    signals.use(case.signals)
    decision = engine.decide(case.principal, case.action, case.resource, case.context or None, now=now)
    why = []
    if decision.effect != case.expect:
        why.append(f"expected {case.expect}, got {decision.effect} ({decision.reason})")
    if case.policy is not None:
        if case.policy == "" and decision.policy_ids:
            why.append(f"expected no deciding policy, got {list(decision.policy_ids)}")
        elif case.policy and case.policy not in decision.policy_ids:
            why.append(f"expected policy {case.policy!r}, got {list(decision.policy_ids)}")
    if case.error and not any(e.startswith(case.error) for e in decision.errors):
        why.append(f"expected error {case.error!r}, got {list(decision.errors)}")
    return CaseResult(case, decision, not why, "; ".join(why))


def run_cases(directory: str | Path, topology: Topology | None = None) -> CaseReport:
    """Load the policy set of ``directory`` (refusal raises) and run its test cases."""
    directory = Path(directory)
    cases = load_cases(directory)
    if topology is None:
        topology = Topology.for_policies(directory)
    signals = _CaseSignals()
    clock = FakeClock()
    engine = PolicyEngine(topology, signals, clock=clock)
    engine.load_dir(directory)
    return CaseReport(tuple(run_case(engine, signals, c, clock.now()) for c in cases))


def decision_dict(decision: Decision) -> dict[str, Any]:
    return msgspec.to_builtins(decision)
