"""``trustfabric policy ...``: validate and test Cedar policy sets, explain decisions, show decision tables."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import msgspec
import typer
from rich.table import Table

from trustfabric.commands.common import (
    console,
    err_console,
    fail,
    offline_operator_authority,
    operator_credential,
    operator_plane,
    refusals_exit,
)
from trustfabric.commands import operate
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.bundle import REQUIRED_APPROVERS, Bundle, PolicyVersions, SigningKeys
from trustfabric.policy.bundle import decode as decode_bundle
from trustfabric.policy.bundle import encode as encode_bundle
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import BundleError, PolicyLoadError
from trustfabric.control.policy_lifecycle import SIGNING_KEY_DIR, PolicyLifecycle, activation_target, rollback_target
from trustfabric.policy.impact import impact
from trustfabric.policy.suggest import DEFAULT_HEADROOM, suggest
from trustfabric.policy.testcases import run_cases
from trustfabric.policy.topology import Topology

app = typer.Typer(no_args_is_help=True, help="Cedar policies: validate, test, explain, table, suggest, impact, bundle lifecycle.")

DEFAULT_DIR = Topology.default_path().parent


def _topology(directory: Path, firm: str | None) -> Topology:
    return Topology.load(Topology.path_for(directory), firm=firm)


@app.command("validate")
def validate(directory: Path = typer.Argument(..., help="Policy directory: one *.cedarschema, *.cedar files."),
             firm: str = typer.Option(None, help="Firm of the trust domain prod.<firm> (default from the manifest).")) -> None:
    """Parse and validate a policy set against its schema and the floor's entities; exit 0 when it loads."""
    with refusals_exit():
        topology = _topology(directory, firm)
        schema, sources = PolicyEngine.read_dir(directory)
        try:
            active = PolicyEngine.check_set(schema, sources, topology, str(directory))
        except PolicyLoadError as exc:
            err_console.print(f"[bold red]{exc.reason}[/]: policy set refused", highlight=False)
            for error in exc.errors:
                err_console.print(f"  {error}", highlight=False, markup=False)
            raise typer.Exit(1) from None
    console.print(f"[green]valid[/]: {len(active.info.policy_ids)} policies in {len(active.info.files)} files, "
                  f"digest {active.info.digest[:16]}")


@app.command("test")
def test(directory: Path = typer.Argument(..., help="Policy directory with test cases in tests/*.toml."),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="List every case, not only failures.")) -> None:
    """Run the policy test cases; prints 'N passed, N failed' and exits non-zero on any failure."""
    with refusals_exit():
        report = run_cases(directory)
    for result in report.results:
        if verbose or not result.passed:
            mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
            console.print(f"{mark} {result.case.file}: {result.case.name}" + (f" - {result.why}" if result.why else ""),
                          highlight=False)
    typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(1)


def _active_dir() -> Path:
    """The directory of the set in force: the active signed bundle's, else the policies folder."""
    return _versions().active_dir() or DEFAULT_DIR


def _live_engine(directory: Path, firm: str | None) -> PolicyEngine:
    from trustfabric.home import sub_dir
    from trustfabric.signals.state import hub_from_state, load_state

    topology = _topology(directory, firm)
    hub = hub_from_state(topology, load_state(sub_dir("policy") / "signals.json"))
    engine = PolicyEngine(topology, hub)
    engine.load_dir(directory)
    return engine


@app.command("explain")
def explain(
    principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
    action: str = typer.Argument(..., help="Action, e.g. submit_order."),
    resource: str = typer.Argument(..., help="Resource, e.g. risk/orders or md/AAPL."),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Policy directory."),
    context: str = typer.Option("", help='Request fields as JSON, e.g. {"notional": 1000}.'),
    firm: str = typer.Option(None, help="Firm of the trust domain."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table."),
) -> None:
    """Decide one request with the current signals and say why: deciding policies and the signals that mattered."""
    with refusals_exit():
        engine = _live_engine(directory, firm)
        try:
            ctx = json.loads(context) if context else None
        except json.JSONDecodeError:
            ctx = context  # the engine denies a malformed context with a clear error
        x = engine.explain(principal, action, resource, ctx)
    d = x.decision
    if as_json:
        typer.echo(json.dumps({"decision": msgspec.to_builtins(d), "policies": [list(p) for p in x.policies],
                               "signals": x.signals, "mattered": list(x.mattered), "details": x.details},
                              default=str))
        return
    colour = "green" if d.allowed else "red"
    console.print(f"[bold {colour}]{d.effect.upper()}[/] {d.principal} {d.action} {d.resource} "
                  f"({d.reason}, epoch {d.epoch})", highlight=False)
    for pid, effect, ann in x.policies:
        extra = ", ".join(f"@{k}={v}" for k, v in ann.items() if k != "id")
        console.print(f"  {effect} [bold]{pid}[/]" + (f"  {extra}" if extra else ""), highlight=False)
    for error in d.errors:
        console.print(f"  [red]error[/] {error}", highlight=False, markup=False)
    if d.allowed and d.obligations != type(d.obligations)():
        console.print(f"  obligations: {msgspec.to_builtins(d.obligations)}", highlight=False)
    if x.signals:
        table = Table("signal", "value", "mattered", box=None)
        for key, value in x.signals.items():
            table.add_row(key, str(value), "yes" if key in x.mattered else "")
        console.print(table)
        for key, values in x.details.items():
            if values:
                console.print(f"  {key}: {', '.join(values)}", highlight=False, markup=False)


@app.command("table")
def table(
    principal: str = typer.Argument(..., help="SPIFFE ID, service name or user:<name>."),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Policy directory."),
    allowed_only: bool = typer.Option(False, "--allowed", help="Show only allowed entries."),
    firm: str = typer.Option(None, help="Firm of the trust domain."),
) -> None:
    """Compile and print a principal's decision table with the current signals."""
    with refusals_exit():
        engine = _live_engine(directory, firm)
        t = engine.decision_table(principal)
    out = Table("action", "resource", "decision", "policies", "obligations", title=f"{t.principal} epoch {t.epoch}")
    for (action, resource), d in sorted(t.entries.items()):
        if allowed_only and not d.allowed:
            continue
        obl = {k: v for k, v in msgspec.to_builtins(d.obligations).items() if k != "symbols"}
        out.add_row(action, resource, d.effect, ",".join(d.policy_ids), json.dumps(obl) if d.allowed else "")
    console.print(out)


def _duration_s(value: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` -> seconds; ``None`` stays ``None``."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise fail("policy.duration", f"{value!r} is not a duration like 60s, 15m, 1h") from None
    if not (seconds > 0 and seconds < 10**9):
        raise fail("policy.duration", f"{value!r} must be positive")
    return seconds


@app.command("suggest")
def suggest_cmd(
    from_audit: Path = typer.Option(..., "--from-audit", help="A run's audit directory (its central log)."),
    since: str = typer.Option(None, help="Window ending at the newest decision: 60s, 15m, 1h (default all)."),
    principal: str = typer.Option(None, help="Only this principal (service name or SPIFFE ID)."),
    out: Path = typer.Option(None, help="Write the proposed policy directory here (validated, tests passing)."),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="The policy set in force."),
    grant_denied: bool = typer.Option(False, "--grant-denied", help="Also grant flows denied only for lack of a "
                                      "permit (onboarding a new algo from paper trading)."),
    headroom: float = typer.Option(DEFAULT_HEADROOM, help="Obligations = observed peak x headroom."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
) -> None:
    """Least privilege from observed traffic: Cedar grants for exactly the flows used, and the unused access."""
    with refusals_exit():
        s = suggest(from_audit, directory, out=out, since_s=_duration_s(since), principal=principal,
                    grant_denied=grant_denied, headroom=headroom)
    if as_json:
        typer.echo(json.dumps({"decisions": s.decisions, "window_s": s.window_s, "headroom": s.headroom,
                               "grants": [dataclasses.asdict(g) for g in s.grants],
                               "covered": [list(c) for c in s.covered], "not_suggested": [list(r) for r in s.refused],
                               "unused": [dataclasses.asdict(u) for u in s.unused],
                               "out": str(s.out) if s.out else None, "tests_passed": s.tests_passed}, default=list))
        return
    console.print(f"{s.decisions} decisions over {s.window_s:.0f} s; headroom {s.headroom:g}x", highlight=False)
    for g in s.grants:
        console.print(g.cedar(), highlight=False, markup=False)
    for p, a, r, why in s.refused:
        console.print(f"[yellow]not suggested[/] {p} {a} {r} ({why})", highlight=False)
    if s.unused:
        table = Table("principal", "granted by", "action", "unused resources", title="unused access (candidate removals)")
        for u in s.unused:
            shown = ", ".join(u.resources[:4]) + (f" (+{len(u.resources) - 4})" if len(u.resources) > 4 else "")
            table.add_row(u.principal, u.policy_id, u.action, shown)
        console.print(table)
    if s.out:
        console.print(f"[green]written[/] {s.out}: valid, {s.tests_passed} policy tests pass", highlight=False)


@app.command("impact")
def impact_cmd(
    proposed: Path = typer.Option(..., "--proposed", help="The proposed policy directory."),
    replay: Path = typer.Option(None, "--replay", help="Audit directory to replay (default $TRUSTFABRIC_HOME/audit)."),
    active: Path = typer.Option(None, "--active", help="The set in force (default: the active signed bundle, "
                                "else the policies folder)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
) -> None:
    """Replay recorded requests against the active and proposed sets; list every flip; exit 2 on a high-risk allow."""
    from trustfabric.audit.log import audit_dir

    with refusals_exit():
        active_dir = active if active is not None else _active_dir()
        report = impact(proposed, replay if replay is not None else audit_dir(), active_dir)
    if as_json:
        typer.echo(json.dumps({"decisions": report.decisions, "distinct": report.distinct,
                               "evaluations": report.evaluations, "skipped": report.skipped,
                               "assumed_signals": report.assumed_signals, "rate_per_s": round(report.rate),
                               "read_s": report.read_s, "replay_s": report.replay_s,
                               "high_risk": report.high_risk, "active": report.active_digest,
                               "proposed": report.proposed_digest,
                               "flips": [dataclasses.asdict(f) for f in report.flips]}))
    else:
        out = Table("principal", "resource", "action", "flip", "decisions", "active", "proposed",
                    title=f"impact: {len(report.flips)} flips")
        for (principal, resource), flips in report.grouped().items():
            for f in flips:
                colour = "red" if f.high_risk and f.direction == "deny->allow" else \
                    ("green" if f.direction == "deny->allow" else "yellow")
                out.add_row(principal, resource + (" [bold red](high-risk)[/]" if f.high_risk else ""), f.action,
                            f"[{colour}]{f.direction}[/]", str(f.count),
                            ",".join(f.active_policies) or f.active_reason,
                            ",".join(f.proposed_policies) or f.proposed_reason)
        console.print(out)
        console.print(f"{report.decisions} recorded decisions ({report.distinct} distinct requests, "
                      f"{report.evaluations} evaluations per set) replayed in {report.read_s + report.replay_s:.2f} s: "
                      f"{report.rate:,.0f} decisions/s; {report.assumed_signals} without recorded signals "
                      f"(replayed healthy), {report.skipped} unknown to both sets", highlight=False)
    if report.high_risk:
        raise fail("policy.impact.high_risk", "a deny->allow flip touches a high-risk resource", code=2)


# ---------------------------------------------------------------- signed bundles
def _versions() -> PolicyVersions:
    from trustfabric.home import sub_dir

    return PolicyVersions(sub_dir("policy"))


@contextmanager
def _lifecycle() -> Iterator[tuple[PolicyLifecycle, IdentityPlane]]:
    """The lifecycle applied by this command (no floor running): the store's people, keys and versions."""
    from trustfabric.home import home_dir

    with operator_plane() as plane:
        yield PolicyLifecycle(_versions(), SigningKeys(plane.store), offline_operator_authority(plane),
                              plane.emitter, home_dir() / "operator" / SIGNING_KEY_DIR), plane


def _read_bundle(path: Path) -> Bundle:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc}", reason="policy.bundle.io") from None
    return decode_bundle(data)


def _write_bundle(path: Path, bundle: Bundle) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_bundle(bundle))
    tmp.replace(path)


@app.command("bundle")
def bundle_cmd(
    directory: Path = typer.Argument(..., help="Policy directory to bundle (schema, policies, floor.toml, tests)."),
    out: Path = typer.Option(..., "--out", help="Bundle file to write."),
    version: int = typer.Option(None, help="Version number (default: the next after the store's history)."),
    reason: str = typer.Option("", help="Why this change (recorded in the manifest and the audit log)."),
    user: str = typer.Option(None, "--user", help="The author (default: the logged-in operator)."),
    totp: str = typer.Option(None, "--totp", help="The author's TOTP code."),
) -> None:
    """Bundle a policy directory with a manifest of SHA-256 digests, signed by its author."""
    with refusals_exit(), _lifecycle() as (life, plane):
        credential = operator_credential(user, totp=totp, action="policy.bundle", target=str(directory))
        bundle = life.author(directory, credential, now=plane.clock.now(), reason=reason, version=version)
        _write_bundle(out, bundle)
    console.print(f"[green]bundled[/] version {bundle.version} by {bundle.manifest.author}: {len(bundle.files)} files, "
                  f"digest {bundle.digest[:16]} -> {out}; needs {REQUIRED_APPROVERS} approvers", highlight=False)


@app.command("sign")
def sign_cmd(
    file: Path = typer.Argument(..., help="Bundle file (signed in place)."),
    reason: str = typer.Option("", help="Why you approve."),
    user: str = typer.Option(None, "--user", help="The approver (default: the logged-in operator)."),
    totp: str = typer.Option(None, "--totp", help="A fresh TOTP code (required)."),
) -> None:
    """Add your approver signature (Ed25519, your key made at your first signature); a fresh TOTP is required."""
    with refusals_exit(), _lifecycle() as (life, plane):
        bundle = _read_bundle(file)
        credential = operator_credential(user, totp=totp, action="policy.sign",
                                         target=f"v{bundle.version}:{bundle.digest[:16]}")
        signed = life.sign(bundle, credential, now=plane.clock.now(), reason=reason)
        _write_bundle(file, signed)
    console.print(f"[green]signed[/] version {signed.version} ({signed.digest[:16]}); approvers: "
                  f"{', '.join(signed.approvers())}", highlight=False)


@app.command("activate")
def activate_cmd(
    file: Path = typer.Argument(..., help="A signed bundle file."),
    reason: str = typer.Option("", help="Why (recorded in the history and the audit log)."),
    user: str = typer.Option(None, "--user", help="The operator (default: the logged-in operator)."),
    totp: str = typer.Option(None, "--totp", help="A fresh TOTP code (required)."),
) -> None:
    """Make a signed bundle the active policy version (refused unless signed, intact, newer, tests passing).

    On a running floor the control plane applies it: the set is loaded and the new epoch confirmed by
    every enforcement point before this returns. With no floor, the store records it for the next start.
    """
    with refusals_exit():
        bundle = _read_bundle(file)
    target = activation_target(bundle)
    credential = operator_credential(user, totp=totp, action="policy.activate", target=target)

    def offline(operator: Operator) -> dict[str, str]:
        with _lifecycle() as (life, plane):
            done = life.activate_as(operator, bundle, now=plane.clock.now(), reason=reason)
        return {"version": str(done.entry["version"]), "digest": done.entry["digest"]}

    outcome = operate.run("policy.activate", target, {"bundle": encode_bundle(bundle).decode(), "reason": reason},
                          credential, offline)
    console.print(f"[green]active[/] version {outcome.result.get('version')} ({bundle.digest[:16]}) "
                  f"{outcome.where()}", highlight=False)


@app.command("rollback")
def rollback_cmd(
    version: int = typer.Argument(None, help="A version of the signed history (default: the one active before)."),
    reason: str = typer.Option("", help="Why (recorded in the history and the audit log)."),
    user: str = typer.Option(None, "--user", help="The operator (default: the logged-in operator)."),
    totp: str = typer.Option(None, "--totp", help="A fresh TOTP code (required)."),
) -> None:
    """Roll back to a prior signed version: explicit, audited, one command (live on a running floor)."""
    target = rollback_target(version)
    credential = operator_credential(user, totp=totp, action="policy.rollback", target=target)

    def offline(operator: Operator) -> dict[str, str]:
        with _lifecycle() as (life, plane):
            done = life.rollback_as(operator, version, now=plane.clock.now(), reason=reason)
        return {"version": str(done.entry["version"]), "digest": done.entry["digest"]}

    outcome = operate.run("policy.rollback", target, {"version": str(version or ""), "reason": reason},
                          credential, offline)
    console.print(f"[green]rolled back[/] to version {outcome.result.get('version')} "
                  f"({outcome.result.get('digest', '')[:16]}) {outcome.where()}", highlight=False)


@app.command("history")
def history_cmd(as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table.")) -> None:
    """The signed policy versions activated, newest last, and which one is active."""
    with refusals_exit():
        versions = _versions()
        history = versions.history()
        active = versions.active_version()
    if as_json:
        for entry in history:
            typer.echo(json.dumps(entry))
        return
    out = Table("version", "kind", "by", "author", "approvers", "at (UTC)", "why", "digest",
                title=f"policy versions (active: {active or 'none: the policies folder'})")
    for entry in history:
        at = datetime.fromtimestamp(entry["at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        out.add_row(str(entry["version"]) + (" *" if entry["version"] == active else ""), entry["kind"], entry["by"],
                    entry["author"], ", ".join(entry["approvers"]), at, entry.get("reason", ""), entry["digest"][:16])
    console.print(out)
