"""``trustfabric demo``: the floor under attack, shown with Rich, with a report directory.

The command runs the zero-trust floor in a fresh state directory under
``$TRUSTFABRIC_HOME`` (:func:`~trustfabric.trading.demo.run_demo`): the algos and
a FIX client over mTLS trade, an algo is compromised half-way and its attempts are
refused and contained, the audit collector ships every spool into that run's
central log (``--md-csv FILE``: market data replayed from a recorded session instead
of GBM). ``--report DIR`` (default ``$TRUSTFABRIC_HOME/reports/demo-<time>``) gets
``summary.json`` and ``README.md`` (orders, fills, denied hops by reason, the
attack's attempts, incidents with time to detect and contain).

After the live floor (unless ``--no-simulate``) the threat simulator
(:func:`run_comparison`) runs its scenarios in zero-trust and perimeter modes, writes
``<report>/simulate/report.html`` + ``results.json`` and the demo prints the
comparison (successes, blast radius, detected, contained, ttd/ttc p99); ``--json``
carries it under ``"simulation"``. The closing lines print the exact
``trustfabric audit verify <run>/audit`` command for the run's central log.

``--identity-prologue`` first shows the identity walk-through (:func:`identity_walkthrough`): create
the CAs of prod/test/dev, attest a workload (promoted code digest + signed,
fresh host posture) and issue its certificate, enrol a person with TOTP and log
in, issue a certificate-bound token and verify it, then show forgeries and
mistakes being refused with their reason codes. It runs on a temporary state
directory (or ``$TRUSTFABRIC_HOME`` with ``--keep``) and returns a summary dict
that a fuller floor demo can build on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
from pathlib import Path
from typing import Any

import pyotp
import typer
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from trustfabric.audit.events import MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import TrustFabricError
from trustfabric.identity.attestation import AttestationRequest, AttestingIssuer, code_digest, minimum_for_domain
from trustfabric.identity.certs import verify_chain
from trustfabric.identity.plane import DEFAULT_FIRM, IdentityPlane
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import credentials_from, issue_for_test, new_key_and_csr
from trustfabric.signals.host_agent import HostPostureAgent


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusal(fn) -> str:
    try:
        fn()
    except TrustFabricError as exc:
        return exc.reason
    return "ALLOWED"  # shown in red: a refusal that did not happen is a failure of the demo


def identity_walkthrough(console: Console, home: Path | None = None, clock: Clock = SYSTEM_CLOCK,
                         firm: str = DEFAULT_FIRM) -> dict[str, Any]:
    """Run the identity walk-through on ``home`` (a fresh temporary directory when None)."""
    temp = None
    if home is None:
        temp = tempfile.TemporaryDirectory(prefix="trustfabric-demo-")
        home = Path(temp.name)
    sink = MemorySink()
    summary: dict[str, Any] = {"home": str(home), "refusals": {}}
    try:
        with IdentityPlane(home, clock=clock, sink=sink) as plane:
            now = clock.now()
            console.rule("[bold]1. Certificate authorities, one per trust domain")
            created = plane.init(firm)
            for domain, _ in created:
                ca = plane.ca(domain)
                console.print(f"  CA [bold]{domain}[/] generation {ca.current.number} "
                              f"(root + issuing, P-256)")
            summary["trust_domains"] = [d for d, _ in created]
            prod, dev = f"prod.{firm}", f"dev.{firm}"

            console.rule("[bold]2. Workload attestation and a short-lived certificate")
            artefact = b"momentum-algo 2.3.1 wheel"
            digest = code_digest(artefact)
            plane.releases.promote(prod, digest, now, "momentum-algo 2.3.1")
            agent_key = Ed25519PrivateKey.generate()
            agent = HostPostureAgent("algo-host-1", agent_key)
            plane.register_host(agent.host, agent_key.public_key())
            algo = SpiffeId.workload(prod, "algo", "momentum")
            key, csr = new_key_and_csr(algo)
            issuer = plane.attesting_issuer()
            console.print(f"  release {digest[:16]}... promoted to {prod}; host posture signed by the agent")
            tampered = _refusal(lambda: issuer.issue(
                AttestationRequest(algo, csr, code_digest(artefact + b" + backdoor"), agent.report(now)), now))
            stale = _refusal(lambda: issuer.issue(
                AttestationRequest(algo, csr, digest, agent.report(now - 3600)), now))
            # this machine runs no EDR agent (its agent inspects it): a domain that requires one refuses it
            edr_required = msgspec.structs.replace(minimum_for_domain(prod).for_host(agent.host),
                                                   security_agents=("falcon-sensor",))
            strict = AttestingIssuer(plane.cas(), plane.releases, plane.host_keys(), plane.emitter,
                                     minimums={prod: edr_required})
            no_edr = _refusal(lambda: strict.issue(AttestationRequest(algo, csr, digest, agent.report(now)), now))
            for label, outcome in (("tampered build", tampered), ("posture an hour old", stale),
                                   ("EDR not running", no_edr)):
                style = "red" if outcome == "ALLOWED" else "green"
                console.print(f"  refused first: {label} -> [{style}]{outcome}[/]")
            cert = issuer.issue(AttestationRequest(algo, csr, digest, agent.report(now), ttl_s=3600), now)
            creds = credentials_from(plane.ca(prod), key, cert, now)
            creds.write(home / "workloads" / "algo-momentum")
            console.print(f"  [green]issued[/] {algo}  valid 1 h, "
                          f"sha256 {creds.fingerprint_sha256[:16]}...")
            summary["workload"] = {"spiffe_id": str(algo), "serial": creds.serial,
                                   "not_after": creds.not_after, "fingerprint_sha256": creds.fingerprint_sha256}
            summary["refusals"].update({"tampered_build": tampered, "stale_posture": stale, "edr_off": no_edr})

            console.rule("[bold]3. A person with a password and TOTP")
            users = plane.users()
            enrolment = users.enrol("alice", "risk_officer", "demo-password-not-for-prod", now)
            totp = pyotp.TOTP(enrolment.totp_secret)
            console.print(f"  enrolled alice (risk_officer): {enrolment.provisioning_uri[:60]}...")
            code = totp.at(now)
            auth = users.login("alice", "demo-password-not-for-prod", code, now)
            replay = _refusal(lambda: users.login("alice", "demo-password-not-for-prod", code, now + 1))
            users.require_step_up("alice", "quarantine", now + 60)
            console.print(f"  [green]login[/] alice amr={list(auth.amr)}; step-up for 'quarantine' granted")
            summary["user"] = {"name": auth.name, "role": auth.role, "amr": list(auth.amr)}
            summary["refusals"]["totp_replay"] = replay

            console.rule("[bold]4. A certificate-bound token (RFC 8705)")
            oms = str(SpiffeId.workload(prod, "trading", "oms"))
            token_issuer, verifier = plane.token_issuer(), plane.token_verifier()
            token = token_issuer.issue(str(algo), oms, now, 300, cert_der=creds.cert_der)
            claims = verifier.verify(token, oms, presented_cert_der=creds.cert_der, now=now)
            console.print(f"  token for [bold]{oms}[/]: kid {claims.kid[:12]}..., exp in 300 s, "
                          f"cnf.x5t#S256 {claims.cnf_x5t_s256[:16]}...")
            console.print("  [green]verified[/] with the certificate presented on the mTLS channel")
            summary["token"] = {"aud": oms, "kid": claims.kid, "jti": claims.jti}

            console.rule("[bold]5. Forgeries and mistakes, refused")
            head, body, _ = token.split(".")
            public = plane.keys.active.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            none_head = _b64(json.dumps({"alg": "none", "kid": claims.kid}).encode())
            hs_head = _b64(json.dumps({"alg": "HS256", "kid": claims.kid}).encode())
            hs_sig = _b64(hmac.new(public, f"{hs_head}.{body}".encode(), hashlib.sha256).digest())
            thief = issue_for_test(plane.ca(prod), algo, now)  # same name, the attacker's own key
            dev_creds = issue_for_test(plane.ca(dev), SpiffeId.workload(dev, "algo", "momentum"), now)
            cases = {
                "alg none": lambda: verifier.verify(f"{none_head}.{body}.", oms, creds.cert_der, now),
                "HS256 keyed with the public key": lambda: verifier.verify(f"{hs_head}.{body}.{hs_sig}", oms,
                                                                         creds.cert_der, now),
                "stolen token, other certificate": lambda: verifier.verify(token, oms, thief.cert_der, now),
                "wrong audience": lambda: verifier.verify(token, str(SpiffeId.workload(prod, "risk", "gateway")),
                                                          creds.cert_der, now),
                "expired": lambda: verifier.verify(token, oms, creds.cert_der, now + 400),
                "dev certificate at a prod peer": lambda: verify_chain(
                    dev_creds.certificate, plane.ca(prod).bundle_pem(now), now, prod),
            }
            table = Table("attempt", "outcome", title="Refused, each with a reason code")
            for label, attempt in cases.items():
                outcome = _refusal(attempt)
                summary["refusals"][label] = outcome
                table.add_row(label, f"[red]{outcome}[/]" if outcome == "ALLOWED" else f"[green]{outcome}[/]")
            plane.revocations.revoke_serial(creds.serial, now, "demo: quarantine")
            revoked = _refusal(lambda: verify_chain(creds.certificate, plane.ca(prod).bundle_pem(now), now, prod,
                                                    revocations=plane.revocations))
            summary["refusals"]["revoked serial"] = revoked
            table.add_row("revoked certificate", f"[green]{revoked}[/]")
            console.print(table)
        summary["events"] = len(sink.events)
        summary["all_refused"] = all(v != "ALLOWED" for v in summary["refusals"].values())
        console.print(Panel(f"{len(summary['refusals'])} refusals, {summary['events']} audit events; "
                            f"every forgery refused: {summary['all_refused']}", title="identity walk-through"))
        return summary
    finally:
        if temp is not None:
            temp.cleanup()


def _summary_table(result: dict[str, Any]) -> Table:
    table = Table(title="trustfabric demo: the floor under attack")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("orders_submitted", "orders_filled", "fills", "risk_rejects", "decisions_allowed", "denied_hops",
                "fail_open", "attack_attempts", "attack_successes", "alerts", "orders_after_attack",
                "fills_after_attack", "settlement_fills"):
        table.add_row(key, str(result.get(key, "")))
    for inc in result.get("incidents", []):
        table.add_row(f"quarantined {inc['principal'].rsplit('/', 1)[-1]}",
                      f"ttd {inc.get('ttd_ms') or 0:.1f} ms, ttc {inc.get('ttc_ms') or 0:.1f} ms")
    return table


def _attempts_table(result: dict[str, Any]) -> Table:
    table = Table(title="the compromised agent's attempts")
    for col in ("scenario", "target", "outcome", "reason"):
        table.add_column(col)
    for a in result.get("attempts", []):
        table.add_row(a["scenario"], a["target"], "[red]SUCCEEDED[/]" if a["succeeded"] else "[green]refused[/]",
                      str(a["reason"])[:60])
    return table


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def write_report(result: dict[str, Any], directory: Path) -> Path:
    """``summary.json`` (the whole result) and ``README.md`` (a short Markdown summary of the run)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    lines = ["# trustfabric demo", "",
             f"mode: {result['mode']}, duration {result['duration_s']} s, seed {result['seed']}", "",
             "## the floor", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {result.get(k, '')} |" for k in (
        "orders_submitted", "orders_filled", "fills", "risk_rejects", "decisions_allowed", "denied_hops", "fail_open",
        "attack_attempts", "attack_successes", "alerts", "orders_after_attack", "fills_after_attack",
        "settlement_fills", "audit_collected")]
    fix = result.get("fix") or {}
    if fix:
        lines += ["", "## FIX client (mTLS, CLIENT-A)", "", f"logon: {fix.get('logon')}", "",
                  "| ClOrdID | OrdStatus sequence | text |", "|---|---|---|"]
        lines += [f"| {o['cl_ord_id']} | {' '.join(o['statuses'])} | {' '.join(o['text'])} |"
                  for o in fix.get("orders", [])]
    lines += ["", "## denied hops by reason (central audit log)", "", "| reason | count |", "|---|---|"]
    lines += [f"| {reason} | {n} |" for reason, n in (result.get("denied_by_reason") or {}).items()]
    lines += ["", "## the attack", "", "| scenario | target | outcome | reason |", "|---|---|---|---|"]
    lines += [f"| {a['scenario']} | {a['target']} | {'SUCCEEDED' if a['succeeded'] else 'refused'} | {a['reason']} |"
              for a in result.get("attempts", [])]
    lines += ["", "## incidents", "", "| principal | trigger | contained | ttd ms | ttc ms |", "|---|---|---|---|---|"]
    lines += [f"| {i['principal']} | {i.get('trigger')} | {i.get('contained')} | {i.get('ttd_ms') or 0:.1f} | "
              f"{i.get('ttc_ms') or 0:.1f} |" for i in result.get("incidents", [])]
    simulation = result.get("simulation") or {}
    if "summary" in simulation:
        lines += ["", "## threat simulator: zero trust vs perimeter", "",
                  "| measure | " + " | ".join(simulation["summary"]) + " |",
                  "|---|" + "---|" * len(simulation["summary"])]
        for key in ("scenarios", "attempts", "successes", "blast_radius", "detected", "contained", "ttd_ms_p99",
                    "ttc_ms_p99"):
            lines.append(f"| {key} | " + " | ".join(_cell(s.get(key)) for s in simulation["summary"].values()) + " |")
        lines += ["", f"report: `{simulation['report']}`"]
    if result.get("audit_dir"):
        lines += ["", f"central audit log: `{result['audit_dir']}` (`{verify_command(result['audit_dir'])}`)"]
    (directory / "README.md").write_text("\n".join(lines) + "\n")
    return directory


SIMULATION_KEYS = ("name", "mode", "attempts", "successes", "blast_radius", "detected", "ttd_ms", "contained",
                   "ttc_ms")


def run_comparison(report_dir: Path, work_dir: Path, scenario: str = "all", progress=None) -> dict[str, Any]:
    """The threat simulator after the live floor: every scenario (or ``scenario``) in both modes.

    Calls :func:`trustfabric.simulation.simulate.run_simulation` with a one-second warm-up,
    writes ``report.html`` + ``results.json`` into ``report_dir`` and returns the demo's
    ``simulation`` object: the per-mode summary, one slim row per (scenario, mode), the
    per-hop figure and where the report is.
    """
    from trustfabric.bench.hop import measure_brief
    from trustfabric.simulation.simulate import run_simulation

    kwargs: dict[str, Any] = {"report_dir": report_dir, "home": work_dir, "warmup_s": 1.0, "hop": measure_brief}
    if progress is not None:
        kwargs["progress"] = progress
    obj = run_simulation("both", scenario, **kwargs)
    return {"summary": obj["summary"],
            "scenarios": [{k: row.get(k) for k in SIMULATION_KEYS} for row in obj["scenarios"]],
            "hop_added_us_p50": obj.get("hop_added_us_p50"),
            "perimeter_review_interval_s": obj.get("perimeter_review_interval_s"),
            "report": str(Path(report_dir) / "report.html"), "results": str(Path(report_dir) / "results.json")}


def _comparison_table(simulation: dict[str, Any]) -> Table:
    from trustfabric.commands.simulate import _fmt

    summary = simulation["summary"]
    modes = [m for m in ("zero-trust", "perimeter") if m in summary]
    table = Table(title="threat simulator: zero trust vs perimeter (same floor, same scenarios)")
    table.add_column("measure")
    for mode in modes:
        table.add_column(mode, justify="right")
    rows = (("scenarios", "scenarios", str), ("attempts", "attempts", str), ("successes", "successes", str),
            ("blast radius", "blast_radius", str), ("detected", "detected", str), ("contained", "contained", str),
            ("time to detect p99", "ttd_ms_p99", _fmt), ("time to contain p99", "ttc_ms_p99", _fmt))
    for label, key, show in rows:
        table.add_row(label, *(show(summary[m].get(key)) if summary[m].get(key) is not None else "-" for m in modes))
    return table


def verify_command(audit_dir: str | Path) -> str:
    """The exact ``audit verify`` command for a demo run's central log (absolute path: works from anywhere)."""
    return f"trustfabric audit verify {Path(audit_dir).resolve()}"


def command(
    duration: float = typer.Option(60.0, "--duration", help="Seconds the floor runs; the attack starts half-way."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object (no tables)."),
    report: Path = typer.Option(None, "--report", help="Report directory (default $TRUSTFABRIC_HOME/reports/demo-<time>)."),
    seed: int = typer.Option(7, "--seed", help="Market-data seed (the run is reproducible from it)."),
    prologue: bool = typer.Option(False, "--identity-prologue", help="Show the identity walk-through first."),
    no_simulate: bool = typer.Option(False, "--no-simulate",
                                     help="Skip the closing threat-simulator comparison (zero trust vs perimeter)."),
    simulate_scenario: str = typer.Option("all", "--simulate-scenario",
                                          help="Scenario for the closing comparison (a name, or all)."),
    md_csv: Path = typer.Option(None, "--md-csv", help="Replay this recorded session (trustfabric floor record-md) "
                                "at market-data and both venues instead of GBM (about 5 ticks per second of "
                                "--duration; publishing stops at the end of the file)."),
    web_console: bool = typer.Option(False, "--console", help="Also serve the web console on the demo's floor "
                                     "(HTTPS on 127.0.0.1; URL and CA bundle printed; stops with the demo)."),
    console_port: int = typer.Option(8443, "--console-port", help="The console's port (0: any free port)."),
    deployment: Path = typer.Option(None, "--deployment", help="A deployment file (TOML): the floor's services "
                                    "placed on hosts by address (README 'Beyond one machine')."),
) -> None:
    """Run the floor in zero-trust mode, compromise an algo half-way, and show that every attempt is refused.

    Then (unless --no-simulate) the threat simulator runs its scenarios on the same
    floor in perimeter and zero-trust modes and prints the comparison; its report
    goes to <report>/simulate/report.html.
    """
    import asyncio
    import time

    from trustfabric.home import home_dir
    from trustfabric.trading.demo import run_demo

    from trustfabric.commands.common import load_deployment

    console = Console(stderr=json_out)
    try:
        placement = load_deployment(deployment)
    except TrustFabricError as exc:
        console.print(f"[bold red]{exc.reason}[/]: {exc.detail}", highlight=False)
        raise typer.Exit(2) from None
    if prologue and not json_out:
        identity_walkthrough(console)
    home = Path(tempfile.mkdtemp(prefix="floor-", dir=home_dir()))
    if not json_out:
        console.print(f"[bold]starting the floor[/] (zero-trust, {duration:.0f} s, state in {home})")
    phases: dict[str, bool] = {}

    def on_tick(floor, phase: str) -> None:
        if not json_out and phase not in phases:
            phases[phase] = True
            console.print(f"[cyan]{phase}[/]")

    web: list = []

    async def on_started(floor) -> None:
        from trustfabric.commands.up import start_console_process

        if web_console:
            web.append(await start_console_process(console_port, home,
                                                   show=lambda line: console.print(line, highlight=False)))

    async def demo() -> dict:
        try:
            return await run_demo(home, duration_s=duration, seed=seed, on_tick=on_tick, md_csv=md_csv,
                                  on_started=on_started, deployment=placement)
        finally:
            for proc in web:
                proc.terminate()
                await proc.wait()

    try:
        result = asyncio.run(demo())
    except TrustFabricError as exc:  # a bad --md-csv is refused before any process starts
        console.print(f"[bold red]{exc.reason}[/]: {exc.detail}", highlight=False)
        raise typer.Exit(1) from None
    directory = Path(report or (home_dir() / "reports" / time.strftime("demo-%Y%m%d-%H%M%S")))
    result["report_dir"] = str(directory)
    result["md_source"] = str(Path(md_csv).resolve()) if md_csv else f"gbm seed {seed}"
    result["verify_command"] = verify_command(result["audit_dir"])
    simulation_failed = False
    if not no_simulate:
        console.print("[bold]threat simulator[/]: the scenarios on the floor in zero-trust and perimeter modes "
                      "(short run)")

        def progress(event: str, data: dict[str, Any]) -> None:
            if event == "floor.starting":
                console.print(f"  [cyan]{data['mode']}[/]: starting the floor")
            elif event == "scenario.done":
                r = data["result"]
                colour = "green" if r.successes == 0 else "red"
                console.print(f"    [{colour}]{r.name:<28}[/] successes {r.successes:>3}  blast {r.blast_radius:>3}",
                              highlight=False)

        try:
            result["simulation"] = run_comparison(directory / "simulate", home / "simulate", simulate_scenario,
                                                  progress)
        except TrustFabricError as exc:
            simulation_failed = True
            result["simulation"] = {"error": exc.reason, "detail": exc.detail}
            console.print(f"[bold red]{exc.reason}[/]: {exc.detail}")
    write_report(result, directory)
    if json_out:
        slim = {k: v for k, v in result.items() if k not in ("services", "links")}
        typer.echo(json.dumps(slim, default=str))
    else:
        console.print(_attempts_table(result))
        console.print(_summary_table(result))
        simulation = result.get("simulation") or {}
        if "summary" in simulation:
            console.print(_comparison_table(simulation))
            if simulation.get("hop_added_us_p50") is not None:
                console.print(f"a zero-trust hop adds {simulation['hop_added_us_p50']:.1f} us (p50) over plain TCP; "
                              f"perimeter detection is a log review every "
                              f"{simulation['perimeter_review_interval_s']:g} s (modelled)")
            console.print(f"simulator report: {simulation['report']}", soft_wrap=True)
        console.print(f"report: {directory}")
        # soft_wrap: the commands stay on one line, to be copied as printed
        console.print(f"verify the audit log: {result['verify_command']}", highlight=False, soft_wrap=True)
        console.print(f"trace an order: trustfabric audit query --dir {Path(result['audit_dir']).resolve()} "
                      f"--trace <ClOrdID>", highlight=False, soft_wrap=True)
    if not result["attack_attempts"]:
        why = " ".join(x for x in (result.get("attack_error", ""), result.get("attack_error_detail", "")) if x)
        console.print("[bold red]demo.attack_not_run[/]: the compromised agent made no attempt; nothing was shown"
                      + (f" ({why})" if why else ""), highlight=False)
    zt_successes = ((result.get("simulation") or {}).get("summary") or {}).get("zero-trust", {}).get("successes", 0)
    if (result["attack_successes"] or result["fail_open"] or zt_successes or simulation_failed
            or not result["attack_attempts"]):
        raise typer.Exit(1)
