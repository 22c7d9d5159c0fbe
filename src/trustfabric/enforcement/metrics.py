"""The enforcement point's metric families (read at scrape time; see :mod:`trustfabric.metrics`)."""

from __future__ import annotations

from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.metrics import CumulativeHistogram, Families, counter, gauge, histograms

# session opens are milliseconds, not microseconds: their own buckets (seconds)
OPEN_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)


def pep_families(pep: EnforcementPoint, opens: CumulativeHistogram | None = None) -> Families:
    """Decisions by outcome, denials by reason, fail-open, internal errors and the sessions open now."""
    yield counter("decisions", "Decisions of the enforcement point by outcome.", label="outcome",
                  by={"allow": pep.allowed, "deny": pep.denied, "refused": pep.refused})
    yield counter("denials", "Denied decisions by reason code.", label="reason", by=dict(pep.deny_reasons))
    yield counter("fail_open", "Allows not covered by a current, unexpired decision (must stay 0).",
                  pep.fail_open)
    yield counter("engine_failures", "Decision-table pulls that failed (each a deny).", pep.engine_failures)
    yield counter("enforcement_internal_errors", "Faults inside the check (each a deny).", pep.internal_errors)
    yield gauge("sessions_open", "Sessions open at the enforcement point.", len(pep.sessions()))
    if opens is not None:  # folded from the point's ring of recent opens at each scrape
        opens.fold(list(pep.session_open_ns), pep.session_opens)
        yield histograms("session_open_seconds", "Session opens (token, admission, decision table): the rigorous "
                         "check, timed where it runs.", "point", {"pep": opens})
    yield gauge("audit_down", "1 while the audit sink refuses flushes (nothing is allowed then).",
                1.0 if pep.audit_down else 0.0)
