"""``trustfabric signal ...``: set and show the live signals of the policy context.

State is a snapshot under ``$TRUSTFABRIC_HOME/policy/signals.json``; every change
goes through :class:`~trustfabric.signals.hub.SignalHub`, so the same checks apply
(a risk score out of range, an unparseable STIX bundle, an unknown kill-switch
state are refused and the snapshot is left as it was) and every change is a
``signal.changed`` event (refusals: ``signal.refused``) appended durably to the audit
spool ``$TRUSTFABRIC_HOME/spool/policy-cli/`` (:class:`~trustfabric.audit.spool.Spool`,
source ``policy-cli``), which ``trustfabric audit collect`` ships into the central log.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from trustfabric.audit.events import Emitter
from trustfabric.audit.spool import Spool
from trustfabric.commands.common import console, refusals_exit
from trustfabric.home import sub_dir
from trustfabric.policy.topology import Topology
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar

app = typer.Typer(no_args_is_help=True, help="Live signals: posture, threat intel, risk, market context.")
posture_app = typer.Typer(no_args_is_help=True, help="Host posture verdicts from signed reports.")
app.add_typer(posture_app, name="posture")


AUDIT_SOURCE = "policy-cli"


@contextmanager
def _hub(firm: str | None = None, save: bool = True) -> Iterator[tuple[SignalHub, dict]]:
    from trustfabric.signals.state import hub_from_state, load_state, save_state, state_of

    path = sub_dir("policy") / "signals.json"
    state = load_state(path)
    topology = Topology.load(Topology.default_path(), firm=firm)
    hub = hub_from_state(topology, state)
    spool = Spool(sub_dir("spool") / AUDIT_SOURCE, AUDIT_SOURCE)
    try:
        hub.emitter = Emitter(AUDIT_SOURCE, spool, start_seq=spool.emitter_start_seq())
        extra = {"calendar": state.calendar, "threat_bundle": state.threat_bundle}
        yield hub, extra
        if save:
            save_state(path, state_of(hub, extra["calendar"], extra["threat_bundle"]))
    finally:
        spool.close()  # every event of this command durable (write + fsync), refused ones too


@app.command("show")
def show() -> None:
    """Print every signal currently set (JSON)."""
    with refusals_exit(), _hub(save=False) as (hub, _):
        typer.echo(json.dumps(hub.show(), indent=2, default=str))


@app.command("quarantine")
def quarantine(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
               reason: str = typer.Option("operator", help="Why (lands in the event).")) -> None:
    """Quarantine a principal: every decision for it becomes a deny."""
    with refusals_exit(), _hub() as (hub, _):
        hub.quarantine(principal, reason=reason, origin="cli")
    console.print(f"quarantined {principal}")


@app.command("release")
def release(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>.")) -> None:
    """Lift a quarantine."""
    with refusals_exit(), _hub() as (hub, _):
        hub.release(principal, origin="cli")
    console.print(f"released {principal}")


@app.command("risk")
def risk(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
         score: float = typer.Argument(..., help="Behavioural risk score, an integer 0-100.")) -> None:
    """Set a principal's behavioural risk score (70+ stops new orders, 90+ stops everything)."""
    with refusals_exit(), _hub() as (hub, _):
        value = hub.set_risk_score(principal, int(score) if float(score).is_integer() else score, origin="cli")
    console.print(f"risk score of {principal} = {value}")


@app.command("kill")
def kill(scope: str = typer.Argument(..., help="agent | account | firm."),
         name: str = typer.Argument(..., help="Agent (service or user:<name>), account, or '-' for firm."),
         state: str = typer.Argument(..., help="ACTIVE | REDUCING | HALTED.")) -> None:
    """Set a kill switch."""
    with refusals_exit(), _hub() as (hub, _):
        previous = hub.set_kill_switch(scope, name, state.upper(), origin="cli")
    console.print(f"kill switch {scope}:{name} {previous} -> {state.upper()}")


@app.command("market")
def market(mode: str = typer.Argument(..., help="always-open | exchange (NYSE hours) | closed."),
           holiday: list[str] = typer.Option([], help="Holiday date YYYY-MM-DD (repeatable, exchange mode).")) -> None:
    """Choose the market session calendar."""
    calendars = {"always-open": {"always_open": True}, "exchange": {"holidays": holiday},
                 "closed": {"weekdays": []}}
    if mode not in calendars:
        raise typer.BadParameter(f"mode must be one of {sorted(calendars)}")
    with refusals_exit(), _hub() as (hub, extra):
        hub.set_calendar(MarketCalendar.from_dict(calendars[mode]), origin="cli")
        extra["calendar"] = calendars[mode]
    console.print(f"market calendar {mode}: {'open' if hub.market_open else 'closed'} now")


@app.command("intel")
def intel(bundle: Path = typer.Argument(..., help="STIX 2.1 bundle (JSON) of indicators.")) -> None:
    """Load a threat-intelligence bundle; a bad bundle is refused and the last good one stays."""
    with refusals_exit(), _hub() as (hub, extra):
        text = bundle.read_text(encoding="utf-8", errors="replace")
        loaded = hub.load_threat_intel(text, origin=f"cli:{bundle.name}")
        extra["threat_bundle"] = text
    console.print(f"loaded {loaded.count} indicator values from {loaded.bundle_id}")


@app.command("observe")
def observe(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
            fingerprint: str = typer.Option(None, help="Certificate SHA-256 fingerprint (hex)."),
            code_digest: str = typer.Option(None, help="Code digest (SHA-256 hex)."),
            address: str = typer.Option(None, help="Network address.")) -> None:
    """Record what was seen of a principal, for threat-intel matching."""
    with refusals_exit(), _hub() as (hub, _):
        hub.observe(principal, fingerprint=fingerprint, code_digest=code_digest, address=address, origin="cli")
    console.print(f"observed {principal}")


@app.command("auth")
def auth(user: str = typer.Argument(..., help="User name (or user:<name>)."),
         mfa: bool = typer.Option(True, "--mfa/--no-mfa", help="Authenticated with MFA."),
         step_up: bool = typer.Option(False, help="A step-up happened now."),
         device_host: str = typer.Option(None, help="Host whose posture covers this person's device.")) -> None:
    """Record a person's authentication state (normally reported by the identity plane)."""
    import time

    with refusals_exit(), _hub() as (hub, _):
        hub.record_authentication(user, mfa=mfa, step_up_at=time.time() if step_up else None,
                                  device_host=device_host, origin="cli")
    console.print(f"recorded authentication of {user}")


@posture_app.command("attest-local")
def attest_local(hosts: list[str] = typer.Argument(None, help="Hosts to attest (default: every floor host).")) -> None:
    """Run a local posture agent per host: sign a report of this machine and record the hub's verdict."""
    from trustfabric.signals.host_agent import attest_hosts

    with refusals_exit(), _hub() as (hub, _):
        targets = hosts or sorted({s.host for s in hub.topology.services.values()})
        attest_hosts(hub, targets, hub.clock.now())
    console.print(f"attested {len(targets)} hosts")
