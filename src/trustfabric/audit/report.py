"""Compliance evidence drawn from the audit log, rendered for a compliance officer.

:func:`build_evidence` is pure: records in, an :class:`Evidence` out (time passed in as
``now_ns``). :func:`render_markdown` / :func:`render_html` (jinja2) lay it out per
framework, each section citing the rule it serves:

* ``nydfs500`` - 23 NYCRR 500: 500.6 audit trail, 500.7 access privileges and periodic
  access review, 500.12 MFA, 500.14 monitoring, 500.16 incident response.
* ``regsci``   - SEC Regulation SCI: 1001(a) capacity/integrity/security of SCI systems,
  1002 SCI events and corrective action, 1005 recordkeeping.
* ``15c3-5``   - SEC Market Access Rule: pre-trade risk controls (orders refused by risk),
  control over who may change them (privileged actions), post-trade review (order lives).

Grants for the access review come from the caller (``grants``: principal, action,
resource) - e.g. the policy topology's declared flows - or, if none are given, from the
allow decisions seen in the log.

People are named once, in one form: the identity plane's own events (login, MFA,
step-up, lockout) name a person by the bare user name, the rest of the fabric as
``user:<name>``; :func:`principal_of` gives every record the ``user:<name>`` form before
anything is counted, so a person's login, MFA and access meet under one name.

Repetitive rows (a dashboard polling a privileged read every second, a flood of the same
refusal) are shown as groups - one line per (principal, event, action, resource,
decision, reason) with the count, the first and last time and the first and last log
index - so the sections read; each record stays in the log (``audit query``). Each
order's lifecycle (15c3-5) is in time order, whatever order the sources shipped it in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import jinja2

from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.errors import AuditError

FRAMEWORKS = ("nydfs500", "regsci", "15c3-5")
PRIVILEGED_ACTIONS = frozenset({"halt", "resume", "quarantine", "release", "transfer_funds", "settle",
                                "read_client_orders", "load_policy", "revoke", "kill_switch"})
DENIAL_KINDS = frozenset({Kind.DECISION, Kind.SESSION_REFUSED, Kind.HANDSHAKE_REFUSED, Kind.TOKEN_REFUSED})
HUMAN_PREFIX = "user:"
# The identity plane's events about a person name them by the bare user name.
PERSON_KINDS = frozenset({Kind.USER_LOGIN, Kind.USER_MFA, Kind.USER_STEP_UP, Kind.USER_LOCKED})
MFA_KINDS = frozenset({Kind.USER_MFA, Kind.USER_STEP_UP})
NS_PER_DAY = 86_400 * 10**9


def _when(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class Row:
    index: int
    time: str
    principal: str
    kind: str
    action: str
    resource: str
    decision: str
    reason: str


@dataclass(frozen=True, slots=True)
class Group:
    """Rows alike in all but their time: how many, from when to when, and where in the log."""

    principal: str
    kind: str
    action: str
    resource: str
    decision: str
    reason: str
    count: int
    first: str
    last: str
    first_index: int
    last_index: int


def group_rows(rows: Sequence[Row]) -> list[Group]:
    """Rows grouped by (principal, event, action, resource, decision, reason), in order of first appearance."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for r in sorted(rows, key=lambda r: (r.time, r.index)):
        groups.setdefault((r.principal, r.kind, r.action, r.resource, r.decision, r.reason), []).append(r)
    return [Group(*key, count=len(rs), first=rs[0].time, last=rs[-1].time,  # type: ignore[misc]
                  first_index=min(r.index for r in rs), last_index=max(r.index for r in rs))
            for key, rs in groups.items()]


@dataclass(frozen=True, slots=True)
class Incident:
    key: str
    principal: str
    detected: str
    contained: str
    ttd_ms: float | None
    ttc_ms: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    principal: str
    action: str
    resource: str
    last_used: str  # "" when never used


@dataclass(frozen=True)
class Evidence:
    generated: str
    records: int
    first: str
    last: str
    integrity: str
    privileged: list[Row] = field(default_factory=list)
    humans: int = 0
    humans_with_mfa: int = 0
    humans_without_mfa: list[str] = field(default_factory=list)
    unused_days: int = 90
    unused_grants: list[Grant] = field(default_factory=list)
    grants_reviewed: int = 0
    denied: list[Row] = field(default_factory=list)
    lateral: list[Row] = field(default_factory=list)
    alerts: list[Row] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    orders: dict[str, list[Row]] = field(default_factory=dict)
    risk_refusals: list[Row] = field(default_factory=list)

    @property
    def mfa_coverage(self) -> str:
        return "n/a" if not self.humans else f"{100.0 * self.humans_with_mfa / self.humans:.1f}%"

    @cached_property
    def privileged_groups(self) -> list[Group]:
        return group_rows(self.privileged)

    @cached_property
    def denied_groups(self) -> list[Group]:
        return group_rows(self.denied)

    @cached_property
    def lateral_groups(self) -> list[Group]:
        return group_rows(self.lateral)


def principal_of(e: AuditEventV1) -> str:
    """The record's principal in the one form reports count by (a person is ``user:<name>``)."""
    if e.kind in PERSON_KINDS and e.principal and not e.principal.startswith(HUMAN_PREFIX):
        return HUMAN_PREFIX + e.principal
    return e.principal


def _row(index: int, e: AuditEventV1, principal: str) -> Row:
    return Row(index, _when(e.time_ns), principal, e.kind, e.action, e.resource, e.decision, e.reason)


def _segment_of(spiffe: str) -> str:
    parts = spiffe.split("/")
    return parts[3] if spiffe.startswith("spiffe://") and len(parts) > 3 else ""


def _is_lateral(e: AuditEventV1) -> bool:
    if "lateral" in e.reason or e.detail.get("lateral"):
        return True
    own = _segment_of(e.principal)
    target = e.segment or e.resource.split("/", 1)[0]
    return bool(own and target and own != target and e.action == "connect")


def build_evidence(records: Iterable[tuple[int, AuditEventV1]], *, now_ns: int, integrity: str,
                   unused_days: int = 90, grants: Sequence[tuple[str, str, str]] | None = None,
                   max_orders: int = 50) -> Evidence:
    privileged, denied, lateral, alerts, risk_refusals = [], [], [], [], []
    human_access: set[str] = set()
    human_mfa: set[str] = set()
    last_allow: dict[tuple[str, str, str], int] = {}
    orders: dict[str, list[tuple[int, int, Row]]] = defaultdict(list)
    incidents: dict[str, dict] = {}
    count, first, last = 0, None, None
    for index, e in records:
        count += 1
        first = e.time_ns if first is None else min(first, e.time_ns)
        last = e.time_ns if last is None else max(last, e.time_ns)
        principal = principal_of(e)
        row = _row(index, e, principal)
        if e.action in PRIVILEGED_ACTIONS or e.kind in (Kind.ADMIN_ACTION, Kind.CONTAINMENT, Kind.RELEASE):
            privileged.append(row)
        if principal.startswith(HUMAN_PREFIX) and e.decision == "allow":
            human_access.add(principal)  # a login, an MFA, or any access the person was allowed
            if e.kind in MFA_KINDS:
                human_mfa.add(principal)
        if e.decision == "allow" and e.kind == Kind.DECISION:
            key = (principal, e.action, e.resource)
            last_allow[key] = max(last_allow.get(key, 0), e.time_ns)
        if e.decision == "deny" and e.kind in DENIAL_KINDS:
            denied.append(row)
            if _is_lateral(e):
                lateral.append(row)
            if e.reason.startswith("risk.") or e.resource.startswith("risk"):
                risk_refusals.append(row)
        if e.kind in (Kind.ALERT, Kind.CONTAINMENT):
            if e.kind == Kind.ALERT:
                alerts.append(row)
            key = str(e.detail.get("incident") or e.trace_id or e.principal or e.event_id)
            inc = incidents.setdefault(key, {"principal": principal, "detected": "", "contained": "",
                                             "ttd_ms": None, "ttc_ms": None, "reason": e.reason})
            if e.kind == Kind.ALERT and not inc["detected"]:
                inc["detected"] = row.time
            if e.kind == Kind.CONTAINMENT:
                inc["contained"] = row.time
            for clock_name in ("ttd_ms", "ttc_ms"):
                value = e.detail.get(clock_name)
                if isinstance(value, (int, float)):
                    inc[clock_name] = float(value)
        if e.trace_id and (e.trace_id in orders or len(orders) < max_orders):
            orders[e.trace_id].append((e.time_ns, index, row))
    reviewed = list(grants) if grants is not None else list(last_allow)
    cutoff = now_ns - unused_days * NS_PER_DAY
    unused = [Grant(p, a, r, _when(last_allow[(p, a, r)]) if (p, a, r) in last_allow else "")
              for p, a, r in reviewed if last_allow.get((p, a, r), 0) < cutoff]
    covered = human_access & human_mfa
    return Evidence(
        generated=_when(now_ns), records=count, first=_when(first) if first else "", last=_when(last) if last else "",
        integrity=integrity, privileged=privileged, humans=len(human_access), humans_with_mfa=len(covered),
        humans_without_mfa=sorted(human_access - human_mfa), unused_days=unused_days, unused_grants=unused,
        grants_reviewed=len(reviewed), denied=denied, lateral=lateral, alerts=alerts,
        incidents=[Incident(k, **v) for k, v in incidents.items()], orders=_in_time_order(orders),
        risk_refusals=risk_refusals)


def _in_time_order(orders: dict[str, list[tuple[int, int, Row]]]) -> dict[str, list[Row]]:
    """Each order's rows by time (then log index), the orders by their first record's time."""
    timed = {trace: sorted(rows, key=lambda t: (t[0], t[1])) for trace, rows in orders.items()}
    return {trace: [row for _, _, row in rows]
            for trace, rows in sorted(timed.items(), key=lambda item: (item[1][0][0], item[1][0][1]))}


SECTIONS = {
    "nydfs500": [("500.6 Audit trail: log integrity", "integrity"), ("500.7 Access privileges: privileged access", "privileged"),
                 ("500.7 Periodic access review: grants unused", "unused"), ("500.12 Multi-factor authentication coverage", "mfa"),
                 ("500.14 Monitoring: denied access and lateral movement", "denied"), ("500.14 Monitoring: alerts", "alerts"),
                 ("500.16 Incident response: incident clocks", "incidents")],
    "regsci": [("1005 Recordkeeping: log integrity", "integrity"), ("1001(a) Security: privileged access to SCI systems", "privileged"),
               ("1001(a) Security: denied access and lateral movement", "denied"), ("1002 SCI events: alerts", "alerts"),
               ("1002 Corrective action: incident clocks", "incidents"), ("1001(a) Access review: grants unused", "unused")],
    "15c3-5": [("Books and records: log integrity", "integrity"), ("(c)(1) Pre-trade risk controls: orders refused", "risk"),
               ("(d) Control of risk settings: privileged actions", "privileged"),
               ("(e) Post-trade review: order lifecycle by ClOrdID", "orders"), ("Surveillance alerts", "alerts")],
}

_MARKDOWN = jinja2.Template("""# {{ title }}

Generated {{ ev.generated }} from {{ ev.records }} audit records ({{ ev.first }} to {{ ev.last }}).
{% macro table(rows) -%}
{% if rows %}| # | time (UTC) | principal | event | action | resource | decision | reason |
|---|---|---|---|---|---|---|---|
{% for r in rows %}| {{ r.index }} | {{ r.time }} | {{ r.principal }} | {{ r.kind }} | {{ r.action }} | {{ r.resource }} | {{ r.decision }} | {{ r.reason }} |
{% endfor %}{% else %}_None recorded._
{% endif %}{%- endmacro %}
{% macro groups(gs) -%}
{% if gs %}| principal | event | action | resource | decision | reason | count | first (UTC) | last (UTC) | records |
|---|---|---|---|---|---|---|---|---|---|
{% for g in gs %}| {{ g.principal }} | {{ g.kind }} | {{ g.action }} | {{ g.resource }} | {{ g.decision }} | {{ g.reason }} | {{ g.count }} | {{ g.first }} | {{ g.last }} | {{ g.first_index }}{% if g.count > 1 %}..{{ g.last_index }}{% endif %} |
{% endfor %}{% else %}_None recorded._
{% endif %}{%- endmacro %}
{% for heading, key in sections %}
## {{ heading }}

{% if key == "integrity" %}{{ ev.integrity }}
{% elif key == "privileged" %}{{ ev.privileged|length }} privileged records in {{ ev.privileged_groups|length }} groups.

{{ groups(ev.privileged_groups) }}
{% elif key == "unused" %}{{ ev.grants_reviewed }} grants reviewed; {{ ev.unused_grants|length }} unused for {{ ev.unused_days }} days or more.

{% if ev.unused_grants %}| principal | action | resource | last used |
|---|---|---|---|
{% for g in ev.unused_grants %}| {{ g.principal }} | {{ g.action }} | {{ g.resource }} | {{ g.last_used or "never" }} |
{% endfor %}{% endif %}
{% elif key == "mfa" %}Human principals with access: {{ ev.humans }}; with MFA: {{ ev.humans_with_mfa }} (coverage {{ ev.mfa_coverage }}).
{% if ev.humans_without_mfa %}
Without MFA: {{ ev.humans_without_mfa|join(", ") }}
{% endif %}
{% elif key == "denied" %}{{ ev.denied|length }} denied attempts, of which {{ ev.lateral|length }} lateral movement.

### Lateral movement attempts

{{ groups(ev.lateral_groups) }}
### All denied attempts

{{ groups(ev.denied_groups) }}
{% elif key == "alerts" %}{{ table(ev.alerts) }}
{% elif key == "incidents" %}{% if ev.incidents %}| incident | principal | detected | contained | time to detect (ms) | time to contain (ms) | reason |
|---|---|---|---|---|---|---|
{% for i in ev.incidents %}| {{ i.key }} | {{ i.principal }} | {{ i.detected }} | {{ i.contained }} | {{ i.ttd_ms if i.ttd_ms is not none else "" }} | {{ i.ttc_ms if i.ttc_ms is not none else "" }} | {{ i.reason }} |
{% endfor %}{% else %}_None recorded._
{% endif %}
{% elif key == "risk" %}{{ table(ev.risk_refusals) }}
{% elif key == "orders" %}{% for trace, rows in ev.orders.items() %}
### Order {{ trace }}

{{ table(rows) }}
{% else %}_None recorded._
{% endfor %}
{% endif %}{% endfor %}
""")

_HTML = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.25em .5em;font-size:90%}th{background:#eee}h2{border-bottom:2px solid #345}</style>
</head><body><h1>{{ title }}</h1>
<p>Generated {{ ev.generated }} from {{ ev.records }} audit records ({{ ev.first }} to {{ ev.last }}).</p>
{% macro table(rows) -%}
{% if rows %}<table><tr><th>#</th><th>time (UTC)</th><th>principal</th><th>event</th><th>action</th><th>resource</th><th>decision</th><th>reason</th></tr>
{% for r in rows %}<tr><td>{{ r.index }}</td><td>{{ r.time }}</td><td>{{ r.principal }}</td><td>{{ r.kind }}</td><td>{{ r.action }}</td><td>{{ r.resource }}</td><td>{{ r.decision }}</td><td>{{ r.reason }}</td></tr>
{% endfor %}</table>{% else %}<p><em>None recorded.</em></p>{% endif %}{%- endmacro %}
{% macro groups(gs) -%}
{% if gs %}<table><tr><th>principal</th><th>event</th><th>action</th><th>resource</th><th>decision</th><th>reason</th><th>count</th><th>first (UTC)</th><th>last (UTC)</th><th>records</th></tr>
{% for g in gs %}<tr><td>{{ g.principal }}</td><td>{{ g.kind }}</td><td>{{ g.action }}</td><td>{{ g.resource }}</td><td>{{ g.decision }}</td><td>{{ g.reason }}</td><td>{{ g.count }}</td><td>{{ g.first }}</td><td>{{ g.last }}</td><td>{{ g.first_index }}{% if g.count > 1 %}..{{ g.last_index }}{% endif %}</td></tr>
{% endfor %}</table>{% else %}<p><em>None recorded.</em></p>{% endif %}{%- endmacro %}
{% for heading, key in sections %}<h2>{{ heading }}</h2>
{% if key == "integrity" %}<p>{{ ev.integrity }}</p>
{% elif key == "privileged" %}<p>{{ ev.privileged|length }} privileged records in {{ ev.privileged_groups|length }} groups.</p>
{{ groups(ev.privileged_groups) }}
{% elif key == "unused" %}<p>{{ ev.grants_reviewed }} grants reviewed; {{ ev.unused_grants|length }} unused for {{ ev.unused_days }} days or more.</p>
{% if ev.unused_grants %}<table><tr><th>principal</th><th>action</th><th>resource</th><th>last used</th></tr>
{% for g in ev.unused_grants %}<tr><td>{{ g.principal }}</td><td>{{ g.action }}</td><td>{{ g.resource }}</td><td>{{ g.last_used or "never" }}</td></tr>{% endfor %}</table>{% endif %}
{% elif key == "mfa" %}<p>Human principals with access: {{ ev.humans }}; with MFA: {{ ev.humans_with_mfa }} (coverage {{ ev.mfa_coverage }}).</p>
{% if ev.humans_without_mfa %}<p>Without MFA: {{ ev.humans_without_mfa|join(", ") }}</p>{% endif %}
{% elif key == "denied" %}<p>{{ ev.denied|length }} denied attempts, of which {{ ev.lateral|length }} lateral movement.</p>
<h3>Lateral movement attempts</h3>{{ groups(ev.lateral_groups) }}<h3>All denied attempts</h3>{{ groups(ev.denied_groups) }}
{% elif key == "alerts" %}{{ table(ev.alerts) }}
{% elif key == "incidents" %}{% if ev.incidents %}<table><tr><th>incident</th><th>principal</th><th>detected</th><th>contained</th><th>time to detect (ms)</th><th>time to contain (ms)</th><th>reason</th></tr>
{% for i in ev.incidents %}<tr><td>{{ i.key }}</td><td>{{ i.principal }}</td><td>{{ i.detected }}</td><td>{{ i.contained }}</td><td>{{ i.ttd_ms if i.ttd_ms is not none else "" }}</td><td>{{ i.ttc_ms if i.ttc_ms is not none else "" }}</td><td>{{ i.reason }}</td></tr>{% endfor %}</table>
{% else %}<p><em>None recorded.</em></p>{% endif %}
{% elif key == "risk" %}{{ table(ev.risk_refusals) }}
{% elif key == "orders" %}{% for trace, rows in ev.orders.items() %}<h3>Order {{ trace }}</h3>{{ table(rows) }}{% else %}<p><em>None recorded.</em></p>{% endfor %}
{% endif %}{% endfor %}</body></html>
""")

TITLES = {"nydfs500": "NYDFS 23 NYCRR 500 evidence", "regsci": "SEC Regulation SCI evidence",
          "15c3-5": "SEC Rule 15c3-5 (market access) evidence"}


def _check(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise AuditError(f"unknown framework {framework!r} (one of {', '.join(FRAMEWORKS)})",
                         reason="audit.report.framework")


def render_markdown(evidence: Evidence, framework: str) -> str:
    _check(framework)
    return _MARKDOWN.render(ev=evidence, title=TITLES[framework], sections=SECTIONS[framework])


def render_html(evidence: Evidence, framework: str) -> str:
    _check(framework)
    return _HTML.render(ev=evidence, title=TITLES[framework], sections=SECTIONS[framework])


def write_report(evidence: Evidence, framework: str, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<framework>.md`` and ``<framework>.html`` under ``out_dir``."""
    _check(framework)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, html = out_dir / f"{framework}.md", out_dir / f"{framework}.html"
    md.write_text(render_markdown(evidence, framework))
    html.write_text(render_html(evidence, framework))
    return md, html
