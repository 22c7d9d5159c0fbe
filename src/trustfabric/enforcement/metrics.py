"""The enforcement point's metric families (read at scrape time; see :mod:`trustfabric.metrics`)."""

from __future__ import annotations

from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.metrics import Families, counter, gauge


def pep_families(pep: EnforcementPoint) -> Families:
    """Decisions by outcome, denials by reason, fail-open, internal errors and the sessions open now."""
    yield counter("decisions", "Decisions of the enforcement point by outcome.", label="outcome",
                  by={"allow": pep.allowed, "deny": pep.denied, "refused": pep.refused})
    yield counter("denials", "Denied decisions by reason code.", label="reason", by=dict(pep.deny_reasons))
    yield counter("fail_open", "Allows not covered by a current, unexpired decision (must stay 0).",
                  pep.fail_open)
    yield counter("engine_failures", "Decision-table pulls that failed (each a deny).", pep.engine_failures)
    yield counter("enforcement_internal_errors", "Faults inside the check (each a deny).", pep.internal_errors)
    yield gauge("sessions_open", "Sessions open at the enforcement point.", len(pep.sessions()))
    yield gauge("audit_down", "1 while the audit sink refuses flushes (nothing is allowed then).",
                1.0 if pep.audit_down else 0.0)
