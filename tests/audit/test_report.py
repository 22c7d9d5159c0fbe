"""Compliance evidence (pure): access review, MFA coverage, lateral movement, incident clocks, orders."""

from __future__ import annotations

import tempfile

import pyotp
import pytest

from tests.people import cheap_hasher
from trustfabric.audit.events import Kind, MemorySink
from trustfabric.audit.report import NS_PER_DAY, build_evidence, render_html, render_markdown
from trustfabric.errors import AuditError
from trustfabric.identity.plane import IdentityPlane

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


def _people_events() -> list:
    """Two people log in with password and TOTP through the identity plane (its real events), then act."""
    sink = MemorySink()
    now = T0 / 1e9
    with tempfile.TemporaryDirectory() as home, IdentityPlane(home, sink=sink) as plane:
        users = plane.users(hasher=cheap_hasher())
        for name, role in (("rita", "risk_officer"), ("rob", "trader")):
            enrolment = users.enrol(name, role, "correct horse battery", now)
            users.login(name, "correct horse battery", pyotp.TOTP(enrolment.totp_secret).at(now), now)
    return sink.events


def test_mfa_coverage_counts_people_named_by_the_identity_plane_and_by_the_fabric() -> None:
    people = _people_events()
    assert {e.principal for e in people if e.kind == Kind.USER_MFA} == {"rita", "rob"}  # bare names, as emitted
    acts = [event("pep", 100 + i, principal=f"user:{name}", action="read_risk", resource="risk/dashboard",
                  decision="allow") for i, name in enumerate(("rita", "rob"))]
    ev = build_evidence(enumerate(people + acts), now_ns=T0, integrity="ok")
    assert (ev.humans, ev.humans_with_mfa, ev.humans_without_mfa, ev.mfa_coverage) == (2, 2, [], "100.0%")
    assert "coverage 100.0%" in render_markdown(ev, "nydfs500")


def test_a_refused_login_is_not_access_and_a_person_without_mfa_is_named() -> None:
    evs = [event("identity", 1, principal="mallory", kind=Kind.USER_LOGIN, decision="deny", reason="user.bad_credentials"),
           event("pep", 2, principal="user:eve", action="read_risk", resource="risk/dashboard", decision="allow")]
    ev = build_evidence(enumerate(evs), now_ns=T0, integrity="ok")
    assert (ev.humans, ev.humans_with_mfa, ev.humans_without_mfa) == (1, 0, ["user:eve"])


def test_repetitive_rows_are_grouped_with_counts_and_first_and_last_time() -> None:
    dashboard = "spiffe://prod.acme.example/dashboard/risk-dashboard"
    polls = [event("oms", s, principal=dashboard, action="read_client_orders", resource="oms/orders",
                   decision="allow") for s in range(1, 301)]
    floods = [event("risk", s, principal=ALGO, action="submit_order", resource="risk/orders", decision="deny",
                    reason="pep.rate") for s in range(1, 51)]
    ev = build_evidence(enumerate(polls + floods), now_ns=T0, integrity="ok")
    [poll] = ev.privileged_groups
    assert (poll.principal, poll.action, poll.count, poll.first_index, poll.last_index) == (
        dashboard, "read_client_orders", 300, 0, 299)
    assert poll.first < poll.last
    [flood] = ev.denied_groups
    assert (flood.count, flood.reason) == (50, "pep.rate")
    md = render_markdown(ev, "nydfs500")
    assert md.count("read_client_orders") == 1 and "| 300 |" in md  # one line, not three hundred
    assert "300 privileged records in 1 groups" in md
    html = render_html(ev, "nydfs500")
    assert html.count("read_client_orders") == 1


def test_an_orders_lifecycle_is_in_time_order_whatever_order_it_was_shipped_in() -> None:
    # the router's spool was shipped before the algo's: log order is not time order
    evs = [event("router", 5, principal=ALGO, action="route", decision="allow", trace_id="C9"),
           event("algo", 2, principal=ALGO, action="order.intent", decision="allow", trace_id="C9"),
           event("oms", 9, principal=ALGO, action="oms.fill", decision="allow", trace_id="C9"),
           event("risk", 3, principal=ALGO, action="risk.check", decision="allow", trace_id="C9"),
           event("algo", 1, principal=ALGO, action="order.intent", decision="allow", trace_id="C8")]
    ev = build_evidence(enumerate(evs), now_ns=T0, integrity="ok")
    assert [r.action for r in ev.orders["C9"]] == ["order.intent", "risk.check", "route", "oms.fill"]
    assert list(ev.orders) == ["C8", "C9"]  # orders by their first record's time
    md = render_markdown(ev, "15c3-5")
    assert md.index("Order C8") < md.index("Order C9")
    assert md.index("order.intent") < md.index("risk.check") < md.index("| route |") < md.index("oms.fill")
