"""``trustfabric signal ...``: set and show the live signals of the policy context.

Every change is a person's action (``--user``/``$TRUSTFABRIC_USER``, password and TOTP),
routed by :mod:`trustfabric.commands.operate`: on a running floor it is applied to the
control plane's live hub (epochs bumped, pushed, confirmed by every enforcement point
before the command reports success); with no floor running, to the store.

State is a snapshot under ``$TRUSTFABRIC_HOME/policy/signals.json``; every change
goes through :class:`~trustfabric.signals.hub.SignalHub` (:mod:`trustfabric.control.signal_ops`,
the same functions on both paths), so the same checks apply
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
from typing import Iterator, Optional

import typer

from trustfabric.audit.events import Emitter
from trustfabric.audit.spool import Spool
from trustfabric.commands import operate
from trustfabric.commands.common import console, fail, operator_credential, refusals_exit
from trustfabric.commands.operate import Outcome
from trustfabric.control.signal_ops import CALENDARS, SignalBook, apply_signal, signals_path
from trustfabric.home import home_dir, sub_dir
from trustfabric.identity.operators import Operator
from trustfabric.policy.topology import Topology
from trustfabric.signals.state import hub_from_state, load_state

app = typer.Typer(no_args_is_help=True, help="Live signals: posture, threat intel, risk, market context.")
posture_app = typer.Typer(no_args_is_help=True, help="Host posture verdicts from signed reports.")
app.add_typer(posture_app, name="posture")


AUDIT_SOURCE = "policy-cli"


@contextmanager
def _book(firm: str | None = None, save: bool = True) -> Iterator[SignalBook]:
    """The store's signals as a hub (no floor running), written back after a change."""
    path = signals_path(home_dir())
    state = load_state(path)
    topology = Topology.load(Topology.default_path(), firm=firm)
    book = SignalBook(hub_from_state(topology, state), calendar=dict(state.calendar),
                      threat_bundle=state.threat_bundle)
    spool = Spool(sub_dir("spool") / AUDIT_SOURCE, AUDIT_SOURCE)
    try:
        book.hub.emitter = Emitter(AUDIT_SOURCE, spool, start_seq=spool.emitter_start_seq())
        yield book
        if save:
            book.save(path)
    finally:
        spool.close()  # every event of this command durable (write + fsync), refused ones too


def _apply(action: str, target: str, args: dict[str, str], user: str | None, totp: str | None) -> Outcome:
    """One signal action by a person: on the running floor's live hub, or (no floor) on the store."""
    credential = operator_credential(user, totp=totp)

    def offline(operator: Operator) -> dict[str, str]:
        with _book() as book:
            return apply_signal(book, action, target, args, origin=operator.principal)

    return operate.run(action, target, args, credential, offline)


USER = typer.Option(None, "--user", help="You (a person of the identity plane); else $TRUSTFABRIC_USER.")
TOTP = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP.")


@app.command("show")
def show() -> None:
    """Print every signal currently set in the store (JSON)."""
    with refusals_exit(), _book(save=False) as book:
        typer.echo(json.dumps(book.hub.show(), indent=2, default=str))


@app.command("quarantine")
def quarantine(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
               reason: str = typer.Option("operator", help="Why (lands in the event)."),
               user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Quarantine a principal: every decision for it becomes a deny."""
    outcome = _apply("signal.quarantine", principal, {"reason": reason}, user, totp)
    console.print(f"quarantined {principal} {outcome.where()}", highlight=False, soft_wrap=True)


@app.command("release")
def release(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
            user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Lift a quarantine flag (a security officer, TOTP checked now)."""
    outcome = _apply("signal.release", principal, {}, user, totp)
    console.print(f"released {principal} {outcome.where()}", highlight=False, soft_wrap=True)


@app.command("risk")
def risk(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
         score: str = typer.Argument(..., help="Behavioural risk score, an integer 0-100."),
         user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Set a principal's behavioural risk score (70+ stops new orders, 90+ stops everything)."""
    outcome = _apply("signal.risk", principal, {"score": score}, user, totp)
    console.print(f"risk score of {principal} = {outcome.result.get('score')} {outcome.where()}",
                  highlight=False, soft_wrap=True)


@app.command("kill")
def kill(scope: str = typer.Argument(..., help="agent | account | firm."),
         name: str = typer.Argument(..., help="Agent (service or user:<name>), account, or '-' for firm."),
         state: str = typer.Argument(..., help="ACTIVE | REDUCING | HALTED."),
         user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Set a kill switch."""
    outcome = _apply("signal.kill", name, {"scope": scope, "state": state.upper()}, user, totp)
    console.print(f"kill switch {scope}:{name} {outcome.result.get('previous')} -> {state.upper()} {outcome.where()}",
                  highlight=False, soft_wrap=True)


@app.command("market")
def market(mode: str = typer.Argument(..., help="always-open | exchange (NYSE hours) | closed."),
           holiday: list[str] = typer.Option([], help="Holiday date YYYY-MM-DD (repeatable, exchange mode)."),
           user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Choose the market session calendar."""
    if mode not in CALENDARS:
        raise typer.BadParameter(f"mode must be one of {sorted(CALENDARS)}")
    outcome = _apply("signal.market", mode, {"holidays": ",".join(holiday)}, user, totp)
    now = "open" if outcome.result.get("open") == "1" else "closed"
    console.print(f"market calendar {mode}: {now} now {outcome.where()}", highlight=False, soft_wrap=True)


@app.command("intel")
def intel(bundle: Path = typer.Argument(..., help="STIX 2.1 bundle (JSON) of indicators."),
          user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Load a threat-intelligence bundle; a bad bundle is refused and the last good one stays."""
    try:
        text = bundle.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise fail("signal.threat_intel.unreadable", f"{bundle}: {exc.strerror}") from None
    outcome = _apply("signal.intel", bundle.name, {"bundle": text}, user, totp)
    console.print(f"loaded {outcome.result.get('indicators')} indicator values from {outcome.result.get('bundle')} "
                  f"{outcome.where()}", highlight=False, soft_wrap=True)


@app.command("observe")
def observe(principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
            fingerprint: str = typer.Option(None, help="Certificate SHA-256 fingerprint (hex)."),
            code_digest: str = typer.Option(None, help="Code digest (SHA-256 hex)."),
            address: str = typer.Option(None, help="Network address."),
            user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Record what was seen of a principal, for threat-intel matching."""
    args = {k: v for k, v in (("fingerprint", fingerprint), ("code_digest", code_digest), ("address", address)) if v}
    outcome = _apply("signal.observe", principal, args, user, totp)
    console.print(f"observed {principal} {outcome.where()}", highlight=False, soft_wrap=True)


@app.command("auth")
def auth(person: str = typer.Argument(..., help="User name (or user:<name>) whose authentication is recorded."),
         mfa: bool = typer.Option(True, "--mfa/--no-mfa", help="Authenticated with MFA."),
         step_up: bool = typer.Option(False, help="A step-up happened now."),
         device_host: str = typer.Option(None, help="Host whose posture covers this person's device."),
         user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Record a person's authentication state (normally reported by the identity plane)."""
    args = {"mfa": "1" if mfa else "0", "step_up": "1" if step_up else "0", "device_host": device_host or ""}
    outcome = _apply("signal.auth", person, args, user, totp)
    console.print(f"recorded authentication of {person} {outcome.where()}", highlight=False, soft_wrap=True)


@posture_app.command("attest-local")
def attest_local(hosts: list[str] = typer.Argument(None, help="Hosts to attest (default: every floor host)."),
                 user: Optional[str] = USER, totp: Optional[str] = TOTP) -> None:
    """Run a local posture agent per host: sign a report of this machine and record the hub's verdict.

    Only with no floor running: a running floor's control plane has its own host agents.
    """
    from trustfabric.signals.host_agent import attest_hosts

    credential = operator_credential(user, totp=totp)

    def offline(operator: Operator) -> dict[str, str]:
        with _book() as book:
            targets = hosts or sorted({s.host for s in book.hub.topology.services.values()})
            attest_hosts(book.hub, targets, book.hub.clock.now())
        return {"hosts": str(len(targets))}

    # a running plane applies no "signal.posture": refused there (operator.unknown_action), never written behind it
    outcome = operate.run("signal.posture", ",".join(hosts or []), {}, credential, offline)
    console.print(f"attested {outcome.result.get('hosts')} hosts {outcome.where()}", highlight=False)
