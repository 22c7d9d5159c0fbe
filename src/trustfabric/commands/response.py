"""``trustfabric response``: alerts, incidents, quarantine, release, and the engine's throughput.

State: incidents and alerts in ``$TRUSTFABRIC_HOME/response.db`` (SQLite);
certificate quarantine by SPIFFE ID in the identity store's revocation set
(``identity.db``), which every enforcement point consults at handshake and
renewal.

``quarantine`` and ``release`` are a person's actions (``--user`` or ``$TRUSTFABRIC_USER``,
password and TOTP, see :func:`~trustfabric.commands.common.operator_credential`) routed
by :mod:`trustfabric.commands.operate`: on a running floor (``trustfabric up``) the
control plane authorizes the person and contains or releases through its response
engine (certificates, policy quarantine flag, every enforcement point's decisions),
answering once every enforcement point confirmed; a floor named but unreachable is a
refusal (``control.unreachable``), never done offline behind its back. With no floor
running, the identity store's revocation set and ``response.db`` are written, after
the same authorization over the store's people.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import msgspec
import typer
from rich.table import Table

from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.commands import operate
from trustfabric.commands.common import console, operator_credential, refusals_exit
from trustfabric.control.plane import INCIDENTS_FILE
from trustfabric.audit.events import Kind
from trustfabric.home import home_dir
from trustfabric.identity.operators import Operator
from trustfabric.response.containment import Containment, OfficerFacts
from trustfabric.response.errors import ContainmentError
from trustfabric.response.incidents import IncidentStore, open_incident_store, summarize

app = typer.Typer(help="Alerts, quarantine and release.", no_args_is_help=True)

STORE_FILE = INCIDENTS_FILE


def _store() -> IncidentStore:
    return open_incident_store(home_dir() / STORE_FILE)


def _revoker():
    """The identity store's revocation set, when the identity plane is installed; else ``None``."""
    try:
        from trustfabric.identity.revocation import RevocationSet
        from trustfabric.identity.store import open_default_store
    except ImportError:
        return None
    from trustfabric.response.adapters import RevocationSetRevoker

    return RevocationSetRevoker(RevocationSet(open_default_store()), SYSTEM_CLOCK)


SOURCE = "response-cli"


class _AuditOut:
    """An emitter onto this command's durable audit spool (``spool/response-cli``), flushed on exit."""

    def __init__(self) -> None:
        from trustfabric.audit.events import Emitter
        from trustfabric.audit.spool import Spool
        from trustfabric.home import sub_dir

        self.spool = Spool(sub_dir("spool", SOURCE), SOURCE)
        self.emitter = Emitter(SOURCE, self.spool, SYSTEM_CLOCK, start_seq=self.spool.emitter_start_seq())

    def __enter__(self) -> "_AuditOut":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.spool.flush()
        finally:
            self.spool.close()


@app.command("alerts")
def alerts(
    principal: Optional[str] = typer.Option(None, help="Only this principal (SPIFFE ID or user:<name>)."),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List alerts (newest first) with severity, category, confidence, response and time to detect."""
    with refusals_exit():
        rows = _store().alerts(principal=principal, limit=limit)
    if as_json:
        typer.echo(json.dumps([{**msgspec.to_builtins(a), "response": act, "ttd_ms": a.ttd_ms} for a, act in rows]))
        return
    table = Table(title=f"alerts ({len(rows)})")
    for col in ("detected", "severity", "category", "principal", "conf", "response", "ttd ms", "summary"):
        table.add_column(col)
    for a, act in rows:
        table.add_row(time.strftime("%H:%M:%S", time.gmtime(a.detected_at)), a.severity, a.category,
                      a.principal, f"{a.confidence:.2f}", act, f"{a.ttd_ms:.1f}", a.summary)
    console.print(table)


@app.command("incidents")
def incidents(
    open_only: bool = typer.Option(False, "--open", help="Only incidents not yet released."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (incidents and a summary)."),
) -> None:
    """List incidents: principal, time to detect, time to contain, contained, released."""
    with refusals_exit():
        rows = _store().incidents(open_only=open_only)
    if as_json:
        typer.echo(json.dumps({"incidents": [msgspec.to_builtins(i) for i in rows], "summary": summarize(rows)}))
        return
    table = Table(title=f"incidents ({len(rows)})")
    for col in ("id", "principal", "ttd ms", "ttc ms", "contained", "released", "trigger"):
        table.add_column(col)
    for i in rows:
        table.add_row(i.incident_id, i.principal, "-" if i.ttd_ms is None else f"{i.ttd_ms:.1f}",
                      "-" if i.ttc_ms is None else f"{i.ttc_ms:.1f}", "yes" if i.contained else "no",
                      f"by {i.released_by}" if i.released else "no", i.trigger)
    console.print(table)


@app.command("quarantine")
def quarantine(
    principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name> to quarantine."),
    user: Optional[str] = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP."),
    reason: str = typer.Option("", help="Why (recorded with the incident)."),
) -> None:
    """Quarantine PRINCIPAL now: certificates revoked, policy quarantine, sessions closed everywhere.

    On a running floor (trustfabric up) the control plane contains it and the command
    returns once every enforcement point confirmed it refuses the principal; with no
    floor running, the identity store's revocation set and an incident are written.
    """
    credential = operator_credential(user, totp=totp)
    outcome = operate.run("quarantine", principal, {"reason": reason}, credential,
                          lambda op: _quarantine_offline(principal, op.principal, reason))
    console.print(f"[bold]{principal}[/] quarantined by {outcome.operator} {outcome.where()}: "
                  f"incident {outcome.result.get('incident', '?')}", highlight=False, soft_wrap=True)


def _quarantine_offline(principal: str, operator: str, reason: str) -> dict[str, str]:
    """No floor: revoke by SPIFFE ID in the identity store and open the incident (the next floor starts from both)."""
    from trustfabric.response.alerts import Alert, Category, Severity, new_alert_id

    principal = _principal_key(principal)
    store = _store()
    with _AuditOut() as out:
        containment = Containment(_revoker(), _OfflinePolicy(), emitter=out.emitter, store=store)
        containment.restore_open_incidents()
        now = SYSTEM_CLOCK.now()
        alert = Alert(alert_id=new_alert_id(), severity=Severity.HIGH, confidence=1.0, principal=principal,
                      category=Category.MANUAL, detector=f"operator:{operator}", evidence=(),
                      first_seen=now, detected_at=now, summary=reason or "manual quarantine")
        store.add_alert(alert, "quarantine")
        out.emitter.emit(Kind.ALERT, principal=principal, reason=Category.MANUAL,
                         detail={"alert_id": alert.alert_id, "operator": operator, "response": "quarantine",
                                 "summary": alert.summary})
        incident = containment.quarantine(principal, (alert,), trigger=f"manual:{operator}")
    failed = [e for e in incident.errors if e.startswith("revoke:")]
    if failed:
        raise ContainmentError(f"certificates of {principal} not revoked: {', '.join(failed)}",
                               reason="containment.revoke_failed")
    return {"incident": incident.incident_id}


def _principal_key(target: str) -> str:
    """A service name or user of the floor's topology as its principal key (SPIFFE ID, user:<name>); else as given."""
    from trustfabric.policy.topology import Topology

    ref = Topology.load(Topology.default_path()).resolve(target)
    return ref.key if ref is not None else target


def live_control_plane() -> dict | None:
    """The running floor's operator endpoint (see :func:`trustfabric.commands.operate.live_control_plane`)."""
    return operate.live_control_plane()


@app.command("release")
def release(
    principal: str = typer.Argument(..., help="The quarantined SPIFFE ID, service name (or user:<name>)."),
    user: Optional[str] = typer.Option(None, "--user", "--officer",
                                       help="You (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code (the step-up, checked now)."),
) -> None:
    """Release PRINCIPAL: only a security_officer with a fresh TOTP step-up may (code checked now).

    With a floor running (trustfabric up) the release goes through its control plane and
    returns once every enforcement point took it; otherwise it is applied to the store.
    """
    credential = operator_credential(user, totp=totp)
    outcome = operate.run("release", principal, {}, credential, lambda op: _release_offline(principal, op))
    console.print(f"[bold]{principal}[/] released by {outcome.operator} {outcome.where()} "
                  f"(incident {outcome.result.get('incident', '?')})", highlight=False, soft_wrap=True)


def _release_offline(principal: str, operator: Operator) -> dict[str, str]:
    principal = _principal_key(principal)
    now = SYSTEM_CLOCK.now()
    facts = OfficerFacts(name=operator.name, roles=(operator.role,),
                         step_up_at=operator.step_up_at or operator.auth_time)
    with _AuditOut() as out:
        containment = Containment(_revoker(), _OfflinePolicy(), emitter=out.emitter, store=_store())
        containment.restore_open_incidents()
        incident = containment.release(principal, facts, now)
    return {"incident": incident.incident_id}


class _OfflinePolicy:
    """No floor running: the quarantine flag goes to the signal store, which the next control plane starts from."""

    def set_quarantined(self, principal: str, quarantined: bool) -> None:
        from trustfabric.control.signal_ops import SignalBook, signals_path
        from trustfabric.policy.topology import Topology
        from trustfabric.signals.errors import UnknownPrincipalError
        from trustfabric.signals.state import hub_from_state, load_state

        path = signals_path(home_dir())
        state = load_state(path)
        book = SignalBook(hub_from_state(Topology.load(Topology.default_path()), state),
                          calendar=dict(state.calendar), threat_bundle=state.threat_bundle)
        try:
            if quarantined:
                book.hub.quarantine(principal, reason="quarantine.response", origin=SOURCE)
            else:
                book.hub.release(principal, origin=SOURCE)
        except UnknownPrincipalError:
            return  # not a principal of the floor's policy: its certificates are the whole quarantine
        book.save(path)


@app.command("bench")
def bench(
    seconds: float = typer.Option(300.0, help="Simulated minutes of normal trading, in seconds."),
    attacks: int = typer.Option(50, help="Malicious attempts injected into the stream."),
    seed: int = typer.Option(7, help="Random seed of the synthetic stream."),
) -> None:
    """Measure the response engine (JSON): events/s over a synthetic floor stream with injected attacks."""
    from trustfabric.bench.response import run

    typer.echo(json.dumps(run(seconds=seconds, attacks=attacks, seed=seed)))
