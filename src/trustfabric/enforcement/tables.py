"""Decision tables from a plain rules file: a table source when no policy engine runs in-process.

The rules file (JSON) maps each principal to the (action, resource) pairs it may
use and their obligations; anything absent is denied (``policy.not_in_table`` on
the hot path). Epochs start at 1 and move with :meth:`StaticTableSource.bump`.
It serves the sidecar's ``--rules`` option and the loopback table server used to
test a policy engine that dies or hangs; the real engine is
``trustfabric.policy.engine.PolicyEngine``, which has the same ``decision_table``.

File format::

    {"ttl_s": 60,
     "principals": {"spiffe://prod.acme/algo/momentum": [
         {"action": "connect", "resource": "svc/venue", "allow": true,
          "obligations": {"max_rate": 100}}]}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from trustfabric.errors import ConfigError
from trustfabric.nesting import json_nesting_exceeds
from trustfabric.policy.decision import (
    REASON_ALLOW, REASON_FORBID, Decision, DecisionTable, Obligations,
)


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: str
    resource: str
    allow: bool = True
    obligations: Obligations = Obligations()


class RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    principals: dict[str, list[Rule]]
    ttl_s: float = 60.0


class StaticTableSource:
    """Tables compiled from :class:`RulesFile` data; thread-safe reads."""

    def __init__(self, rules: RulesFile) -> None:
        self.rules = rules
        self.epochs: dict[str, int] = {}
        self.global_epoch = 1

    @classmethod
    def from_file(cls, path: str | Path) -> "StaticTableSource":
        try:
            data = Path(path).read_bytes()
            if json_nesting_exceeds(data):
                raise ValueError("nested too deep")
            return cls(msgspec.json.decode(data, type=RulesFile))
        except Exception as exc:  # noqa: BLE001 - unreadable, undecodable, invalid: a refusal, never an escape
            raise ConfigError(f"{path}: {exc}", reason="config.rules_invalid") from None

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "StaticTableSource":
        return cls(msgspec.convert(data, type=RulesFile))

    def decision_table(self, principal: str, now: float) -> DecisionTable:
        epoch = self.epochs.get(principal, 1)
        entries: dict[tuple[str, str], Decision] = {}
        for rule in self.rules.principals.get(principal, ()):
            entries[(rule.action, rule.resource)] = Decision(
                rule.allow, principal, rule.action, rule.resource,
                REASON_ALLOW if rule.allow else REASON_FORBID, ("rules-file",),
                obligations=rule.obligations if rule.allow else Obligations(), epoch=epoch)
        return DecisionTable(principal, epoch, self.global_epoch, now, now + self.rules.ttl_s, entries)

    def bump(self, principal: str) -> int:
        self.epochs[principal] = self.epochs.get(principal, 1) + 1
        return self.epochs[principal]
