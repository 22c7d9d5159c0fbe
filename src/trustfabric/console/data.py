"""What the console shows, read from where the floor publishes it: nothing here changes state.

* the floor's manifest (``floor/runtime.json``): services, pids, SPIFFE IDs, ports, the
  Prometheus endpoints of each service and of the control plane;
* those endpoints, scraped (``prometheus_client``'s parser): decisions by outcome, sessions,
  fail-open, certificate time left, the link round-trip counts (the edges in use), each
  service's reported stats (the kill switch state among them);
* the incident store (``response.db``) and the central audit log (``audit/``), read as
  ``trustfabric response incidents`` and ``trustfabric audit query`` read them;
* the identity store: people (role, MFA, lockout) and the revocation set (who is quarantined);
* the topology (``policies/floor.toml``): segments, hosts and the flows the policy allows.

Every state change the console makes goes to the control plane's operator API instead
(:mod:`trustfabric.console.app`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from trustfabric.audit.log import AuditLog, Query, audit_dir, open_log
from trustfabric.control.plane import INCIDENTS_FILE
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.store import IdentityStore, open_identity_store
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology
from trustfabric.response.incidents import open_incident_store

SCRAPE_TIMEOUT_S = 1.0


def manifest(home: Path) -> dict[str, Any]:
    """The running floor's manifest, or ``{}`` when no floor has run under ``home``."""
    try:
        data = json.loads((home / "floor" / "runtime.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def floor_running(data: dict[str, Any]) -> bool:
    return bool(data) and not data.get("stopped_at") and data.get("mode") == "zero-trust"


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """name -> {label items: value} of one Prometheus endpoint on loopback; ``{}`` when it does not answer."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/metrics", timeout=SCRAPE_TIMEOUT_S).read()
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for k, v in metrics.get(name, {}).items() if all((a, b) in k for a, b in labels.items()))


@dataclass
class ServiceRow:
    name: str
    spiffe_id: str
    segment: str
    host: str
    status: str
    sessions: float = 0.0
    allowed: float = 0.0
    denied: float = 0.0
    fail_open: float = 0.0
    cert_left_s: float = 0.0
    allow_rate: float = 0.0
    deny_rate: float = 0.0


@dataclass
class Rates:
    """Decisions per second from two scrapes (the console keeps the previous one)."""

    last: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # service -> (t, allowed, denied)

    def update(self, row: ServiceRow, now: float) -> None:
        prev = self.last.get(row.name)
        self.last[row.name] = (now, row.allowed, row.denied)
        if prev is not None and now > prev[0]:
            row.allow_rate = max(0.0, (row.allowed - prev[1]) / (now - prev[0]))
            row.deny_rate = max(0.0, (row.denied - prev[2]) / (now - prev[0]))


def topology() -> Topology:
    return Topology.load(FLOOR_MANIFEST)


def services(home: Path, rates: Rates | None = None) -> list[ServiceRow]:
    data = manifest(home)
    topo = topology()
    ports = data.get("metrics", {}) if isinstance(data.get("metrics"), dict) else {}
    rows = []
    now = time.time()
    for name, info in sorted((data.get("services") or {}).items()):
        svc = topo.services.get(name)
        m = scrape(ports.get(name, 0)) if ports.get(name) else {}
        row = ServiceRow(name=name, spiffe_id=str(info.get("spiffe_id", "")), segment=svc.segment if svc else "",
                         host=svc.host if svc else "", status=str(info.get("status", "")),
                         sessions=total(m, "trustfabric_sessions_open"),
                         allowed=total(m, "trustfabric_decisions_total", outcome="allow"),
                         denied=total(m, "trustfabric_decisions_total", outcome="deny"),
                         fail_open=total(m, "trustfabric_fail_open_total"),
                         cert_left_s=total(m, "trustfabric_certificate_expiry_seconds"))
        if rates is not None:
            rates.update(row, now)
        rows.append(row)
    return rows


def floor_stats(home: Path) -> dict[str, dict[str, float]]:
    """Each service's reported stats, from the control plane's endpoint (``trustfabric_floor_stat``)."""
    data = manifest(home)
    port = (data.get("metrics") or {}).get("control-plane")
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in scrape(port).get("trustfabric_floor_stat", {}).items() if port else ():
        d = dict(labels)
        out[d.get("service", "")][d.get("stat", "")] = value
    return dict(out)


def _incident_store(home: Path) -> Any:
    """The floor's incident store (PostgreSQL beyond one machine), or None when there is none yet."""
    path = home / INCIDENTS_FILE
    if not path.exists() and not os.environ.get("TRUSTFABRIC_DATABASE_URL"):
        return None
    return open_incident_store(path)


def incidents(home: Path, limit: int = 50) -> list[Any]:
    store = _incident_store(home)
    if store is None:
        return []
    try:
        rows = store.incidents()
    finally:
        store.close()
    return sorted(rows, key=lambda i: i.opened_at, reverse=True)[:limit]


def alerts(home: Path, limit: int = 50) -> list[Any]:
    store = _incident_store(home)
    if store is None:
        return []
    try:
        return list(store.alerts())[-limit:][::-1]
    finally:
        store.close()


def workloads(home: Path) -> list[dict[str, Any]]:
    """Each service's identity: SPIFFE ID, its certificate's serial and expiry (the credential files the
    workload wrote at its join or renewal), the attested code digest (its promoted release), its risk score."""
    topo = topology()
    try:
        signals = json.loads((home / "policy" / "signals.json").read_text())
        risks, posture = signals.get("risk_scores", {}), signals.get("posture", {})
    except (OSError, ValueError, AttributeError):
        risks, posture = {}, {}
    store = _identity_store(home)
    try:
        releases = {r.name: r.digest for r in sorted(store.list_releases(topo.trust_domain),
                                                       key=lambda r: r.promoted_at)}
    finally:
        store.close()
    rows = []
    for row in services(home):
        serial, expiry = "", 0.0
        try:
            cert = x509.load_pem_x509_certificate((home / "floor" / "creds" / row.name / "cert.pem").read_bytes())
            serial, expiry = f"{cert.serial_number:x}"[:16], cert.not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            pass
        rows.append({"name": row.name, "spiffe_id": row.spiffe_id, "segment": row.segment, "host": row.host,
                     "serial": serial, "expires": expiry, "cert_left_s": row.cert_left_s,
                     "digest": releases.get(row.name, "")[:16], "risk": risks.get(row.spiffe_id, 0),
                     "posture": _posture(posture.get(row.host))})
    return rows


def _posture(verdict: Any) -> str:
    """A host's last posture verdict as the signal state holds it ("" when none was recorded)."""
    if not isinstance(verdict, dict):
        return ""
    return "healthy" if verdict.get("ok") else "FAILING: " + ", ".join(verdict.get("reasons") or ())


def _identity_store(home: Path) -> IdentityStore:
    return open_identity_store(home)


def people(home: Path) -> list[dict[str, Any]]:
    store = _identity_store(home)
    try:
        now = time.time()
        return [{"name": u.name, "role": u.role, "mfa": bool(u.totp_secret), "locked": u.locked_until > now,
                 "failed": u.failed_attempts} for u in store.list_users()]
    finally:
        store.close()


def quarantined(home: Path) -> set[str]:
    """The SPIFFE IDs quarantined in the identity store's revocation set (every enforcement point's view)."""
    store = _identity_store(home)
    try:
        revocations = RevocationSet(store)
        keys = list(topology().services)
        return {topology().spiffe_id(k) for k in keys if revocations.is_quarantined(topology().spiffe_id(k))}
    finally:
        store.close()


def segment_map(home: Path) -> dict[str, Any]:
    """Nodes (services by segment and host), allowed edges (policy flows), edges in use, denied attempts,
    who is cut off. Rendered as SVG by the page."""
    topo = topology()
    owners = {rid: r.owner for rid, r in topo.resources.items()}
    allowed = sorted({(f.principal, owners.get(f.resource, "")) for f in topo.flows
                      if f.principal in topo.services and owners.get(f.resource) in topo.services
                      and f.principal != owners.get(f.resource)})
    used: set[tuple[str, str]] = set()
    data = manifest(home)
    for name, port in (data.get("metrics") or {}).items():
        if name == "control-plane" or not port:
            continue
        for labels, value in scrape(port).get("trustfabric_link_rtt_seconds_count", {}).items():
            link = dict(labels).get("link", "")
            if "->" in link and value > 0:
                src, dst = link.split("->", 1)
                used.add((src, dst))
    denied = recent_denials(home, limit=200)
    cut = quarantined(home)
    names = {topo.spiffe_id(n): n for n in topo.services}
    nodes = [{"name": n, "segment": s.segment, "host": s.host, "spiffe_id": topo.spiffe_id(n),
              "cut_off": topo.spiffe_id(n) in cut} for n, s in sorted(topo.services.items())]
    denied_edges = sorted({(names.get(d["principal"], d["principal"]), d["source"]) for d in denied
                           if d["principal"] in names})
    return {"nodes": nodes, "allowed": [list(e) for e in allowed], "used": [list(e) for e in sorted(used)],
            "denied": [list(e) for e in denied_edges], "cut_off": sorted(names.get(c, c) for c in cut)}


def _log(home: Path) -> AuditLog | None:
    directory = home / "audit"
    if not (directory / "audit.db").exists():
        return None
    return open_log(audit_dir(home))


def recent_denials(home: Path, limit: int = 100) -> list[dict[str, Any]]:
    log = _log(home)
    if log is None:
        return []
    try:
        rows = log.query(Query(decision="deny"))[-limit:]
    finally:
        log.close()
    return [record_dict(r) for r in rows]


def record_dict(r: Any) -> dict[str, Any]:
    e = r.event()
    return {"index": r.index, "time": e.time_ns / 1e9, "source": e.source, "kind": e.kind, "principal": e.principal,
            "action": e.action, "resource": e.resource, "decision": e.decision, "reason": e.reason,
            "trace": e.trace_id}


def audit_query(home: Path, *, principal: str | None = None, trace: str | None = None, decision: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    log = _log(home)
    if log is None:
        return []
    try:
        rows = log.query(Query(principal=principal or None, trace_id=trace or None, decision=decision or None))
    finally:
        log.close()
    return [record_dict(r) for r in rows[-limit:]]


class AuditTail:
    """The central log from an index on: what the live decisions stream reads (polled, never blocking)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._log: AuditLog | None = None

    def size(self) -> int:
        log = self._open()
        return _end(log) if log is not None else 0

    def _open(self) -> AuditLog | None:
        if self._log is None:
            self._log = _log(self.home)
        return self._log

    def read(self, start: int, limit: int) -> tuple[list[Any], int, int]:
        """(records, next position, how many were skipped): at most the newest ``limit`` after ``start``."""
        log = self._open()
        if log is None:
            return [], start, 0
        end = _end(log)
        first = max(start, end - limit)
        rows = list(log.store.records(first, end)) if end > first else []
        return rows, end, first - start


def _end(log: AuditLog) -> int:
    end = getattr(log.store, "end", None)
    return end() if end is not None else log.store.size()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
