"""Compliance evidence (pure): access review, MFA coverage, lateral movement, incident clocks, orders."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import Kind
from trustfabric.audit.report import NS_PER_DAY, build_evidence, render_html, render_markdown
from trustfabric.errors import AuditError

from .conftest import event

ALGO = "spiffe://prod.acme.example/algo/momentum"
T0 = 1_790_000_000_000_000_000


def records():
    evs = [
        event("pep", 1, principal=ALGO, action="submit_order", resource="risk/orders", decision="allow", trace_id="C1"),
        event("pep", 2, principal=ALGO, action="route_order", resource="sor/orders", decision="allow", trace_id="C1"),
        event("pep", 3, principal=ALGO, action="connect", resource="settlement/treasury", decision="deny"),
        event("pep", 4, principal="user:alice", kind=Kind.USER_MFA, decision="allow"),
        event("pep", 5, principal="user:alice", action="halt", resource="market/kill", decision="allow"),
        event("pep", 6, principal="user:mallory", kind=Kind.USER_LOGIN, decision="allow"),
        event("pep", 7, principal=ALGO, kind=Kind.ALERT, reason="response.lateral", detail={"incident": "i1", "ttd_ms": 3.0}),
        event("pep", 8, principal=ALGO, kind=Kind.CONTAINMENT, detail={"incident": "i1", "ttc_ms": 250.0}),
        event("pep", 9, principal="<script>", action="submit_order", resource="risk/orders", decision="deny",
              reason="risk.notional", trace_id="C2"),
    ]
    return list(enumerate(evs))


def test_evidence_sections() -> None:
    grants = [(ALGO, "submit_order", "risk/orders"), (ALGO, "transfer_funds", "treasury/funds")]
    ev = build_evidence(records(), now_ns=T0 + NS_PER_DAY, integrity="ok", unused_days=30, grants=grants)
    assert [(g.action, g.last_used) for g in ev.unused_grants] == [("transfer_funds", "")]
    assert (ev.humans, ev.humans_with_mfa, ev.humans_without_mfa) == (2, 1, ["user:mallory"])
    assert [r.resource for r in ev.lateral] == ["settlement/treasury"]
    assert [r.reason for r in ev.risk_refusals] == ["risk.notional"]
    [incident] = ev.incidents
    assert (incident.key, incident.ttd_ms, incident.ttc_ms) == ("i1", 3.0, 250.0)
    assert [r.action for r in ev.orders["C1"]] == ["submit_order", "route_order"]
    assert [r.action for r in ev.privileged] == ["halt", ""]  # the halt and the containment


def test_grants_default_to_allows_seen_and_age_out() -> None:
    ev = build_evidence(records(), now_ns=T0 + 100 * NS_PER_DAY, integrity="ok", unused_days=90)
    assert ev.grants_reviewed == 3 and len(ev.unused_grants) == 3


def test_rendering_escapes_html_and_refuses_unknown_framework() -> None:
    ev = build_evidence(records(), now_ns=T0, integrity="ok")
    html = render_html(ev, "15c3-5")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Order C1" in render_markdown(ev, "15c3-5")
    with pytest.raises(AuditError):
        render_markdown(ev, "sox")
