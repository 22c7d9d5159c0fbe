"""``trustfabric floor halt|reduce|resume SCOPE TARGET --user NAME --totp CODE``: the kill switch;
``trustfabric floor record-md --out FILE``: record a market-data session to replay.

Against a running ``trustfabric up`` (its ``$TRUSTFABRIC_HOME/floor/runtime.json``
names the control plane's operator endpoint and its certificate): the person logs
in with password + TOTP, the control plane checks a fresh step-up and the role
(risk or security officer), and pre-trade-risk applies the command. ``resume`` is
four-eyes: the first person's resume is a request, a *second* person's resume
approves it. The person comes from :func:`~trustfabric.commands.common.operator_credential`
(``--user``/``$TRUSTFABRIC_USER``, ``$TRUSTFABRIC_PASSWORD`` or a prompt, ``--totp``).
Exit 0 when applied, 1 with the reason code when refused.

``record-md`` runs the floor's own market-data generator (seeded GBM, the same
path a floor started with that seed publishes) for ``--ticks`` steps and writes the
quotes and trades as CSV (:func:`~trustfabric.trading.marketdata.write_csv`);
``trustfabric up --md-csv FILE`` / ``trustfabric demo --md-csv FILE`` replay it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from trustfabric.commands.common import console, fail, operator_credential

app = typer.Typer(help="The running floor: kill switch (halt, reduce, resume); record market data (record-md); "
                  "Prometheus endpoints (metrics); who runs it now (status).",
                  no_args_is_help=True)

SCOPE_HELP = "firm, account or agent."
TARGET_HELP = "The account, or the agent (a service name such as algo-momentum, or a FIX client such as client-a)."


def _send(action: str, scope: str, target: str, user: str, totp: str, password: str, as_json: bool) -> None:
    from trustfabric.commands.operate import live_control_plane
    from trustfabric.control.client import kill_switch
    from trustfabric.control.protocol import KillSwitchRequest
    from trustfabric.errors import TrustFabricError

    try:
        control = live_control_plane()
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail) from None
    if control is None:
        raise fail("floor.not_running", "no running zero-trust floor here; start `trustfabric up` first")
    request = KillSwitchRequest(user=user, password=password, totp=totp, action=action, scope=scope,
                                target=target if scope != "firm" else "")
    try:
        reply = asyncio.run(kill_switch("127.0.0.1", int(control["bootstrap_port"]),
                                        bundle_pem=control["bundle_pem"].encode(), control_id=control["spiffe_id"],
                                        request=request))
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail) from None
    out = {"ok": reply.ok, "reason": reply.reason, "state": reply.state, "pending": reply.pending,
           "cancels": reply.cancels, "operator": reply.operator}
    if as_json:
        console.print_json(json.dumps(out))
    elif reply.ok:
        what = "resume requested: a second person must resume too" if reply.pending else f"state {reply.state}"
        console.print(f"{action} {scope} {target}: {what} (cancels sent: {reply.cancels})")
    if not reply.ok:
        raise fail(reply.reason, f"{action} {scope} {target} refused")


def _register(action: str, doc: str) -> None:
    """Add the ``action`` command (halt, reduce, resume): the same arguments, one kill-switch request."""

    def command(scope: str = typer.Argument(..., help=SCOPE_HELP), target: str = typer.Argument("", help=TARGET_HELP),
                user: Optional[str] = typer.Option(None, "--user", help="You (a risk or security officer); else "
                                                                         "$TRUSTFABRIC_USER."),
                totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code; else "
                                                                        "$TRUSTFABRIC_TOTP."),
                as_json: bool = typer.Option(False, "--json", help="Print the reply as JSON.")) -> None:
        credential = operator_credential(user, totp=totp)
        _send(action, scope, target, credential.user, credential.totp, credential.password, as_json)

    command.__doc__ = doc
    app.command(name=action)(command)


_register("halt", "HALTED: refuse every order in the scope and cancel its working orders.")
_register("reduce", "REDUCING: only risk-reducing orders pass in the scope.")
_register("resume", "Back to ACTIVE, four-eyes: a first person requests, a different second person approves.")


@app.command("record-md")
def record_md(
    out: Path = typer.Option(..., "--out", help="CSV file to write (replaced atomically if it exists)."),
    symbols: str = typer.Option("", "--symbols",
                                help="Comma-separated symbols (default: every symbol of the floor's topology)."),
    ticks: int = typer.Option(300, "--ticks", min=1,
                              help="Generator steps; the floor replays one per md interval (0.2 s by default)."),
    seed: int = typer.Option(7, "--seed", help="Generator seed (the same seed a GBM floor would run)."),
    step_s: float = typer.Option(30.0, "--step-s", help="Market seconds per step (the floor's md_step_s)."),
    topology: Path = typer.Option(None, "--topology", help="Floor manifest (default: policies/floor.toml)."),
) -> None:
    """Record a market-data session (quotes and trades, the floor's generator) to a CSV file to replay."""
    from trustfabric.errors import TrustFabricError
    from trustfabric.policy.topology import Topology
    from trustfabric.trading.marketdata import UNKNOWN_SYMBOL, record_session, write_csv
    from trustfabric.trading.services.market_data import generator_for

    try:
        known = Topology.load(topology or Topology.default_path()).symbols
        chosen = [s.strip() for s in symbols.split(",") if s.strip()] or list(known)
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise fail(UNKNOWN_SYMBOL, f"not in the floor's topology: {', '.join(unknown)}")
        events = record_session(generator_for(chosen, seed), ticks, step_s=step_s, start_ns=time.time_ns(),
                                interval_ns=int(step_s * 1e9))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with open(partial, "w", encoding="utf-8", newline="") as fh:
            n = write_csv(events, fh)
        os.replace(partial, out)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail) from None
    except OSError as exc:
        raise fail("marketdata.unwritable", f"{out}: {exc}") from None
    console.print(f"recorded {n} events ({ticks} ticks, {len(chosen)} symbols, seed {seed}) to {out}",
                  highlight=False, soft_wrap=True)


@app.command("metrics")
def metrics(
    prometheus: bool = typer.Option(False, "--prometheus", help="Print a prometheus.yml scrape config instead."),
) -> None:
    """The running floor's Prometheus endpoints (each service and the control plane, loopback)."""
    from trustfabric.home import home_dir

    path = home_dir(create=False) / "floor" / "runtime.json"
    try:
        manifest = json.loads(path.read_text())
        ports = {str(k): int(v) for k, v in manifest["metrics"].items() if int(v)}
    except FileNotFoundError:
        raise fail("floor.not_running", f"no floor has run under this home ({path} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail("control.manifest_unreadable", f"{path}: no metrics endpoints ({exc})") from None
    if manifest.get("stopped_at"):
        console.print(f"[yellow]the floor stopped at {time.ctime(manifest['stopped_at'])}[/]: these endpoints are "
                      "gone", highlight=False)
    if prometheus:
        print("scrape_configs:\n  - job_name: trustfabric\n    static_configs:")
        for name, port in sorted(ports.items()):
            print(f"      - targets: ['127.0.0.1:{port}']\n        labels: {{service: '{name}'}}")
        return
    for name, port in sorted(ports.items()):
        console.print(f"{name:<16} http://127.0.0.1:{port}/metrics", highlight=False)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError, ValueError):
        return False
    return state not in ("Z", "X")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Who runs the floor now: the active control plane, its standbys, a takeover, and each service's host."""
    from rich.table import Table

    from trustfabric.home import home_dir

    path = home_dir(create=False) / "floor" / "runtime.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail("floor.not_running", f"no floor has run under this home ({path} is missing)") from None
    except (OSError, ValueError) as exc:
        raise fail("control.manifest_unreadable", f"{path}: {exc}") from None
    control = manifest.get("control", {})
    report = {
        "mode": manifest.get("mode", ""),
        "running": not manifest.get("stopped_at") and _alive(int(manifest.get("pid", 0))),
        "control_plane": {"pid": manifest.get("pid"), "alive": _alive(int(manifest.get("pid", 0))),
                          "control_port": control.get("control_port"), "bootstrap_port": control.get("bootstrap_port")},
        "standbys": [{**s, "alive": _alive(int(s.get("pid", 0)))} for s in manifest.get("standbys", [])],
        "takeover": manifest.get("takeover", {}),
        "replicas": manifest.get("replicas", 1),
        # control serve: each replica's own line (the holder writes the manifest)
        "replica_processes": [{**r, "name": p.stem, "alive": _alive(int(r.get("pid", 0)))}
                              for p, r in _replica_lines(path.parent / "replicas")],
        "services": {name: {"address": entry.get("address", "127.0.0.1"), "host": entry.get("host", ""),
                            "port": entry.get("port"), "pid": entry.get("pid"),
                            "alive": _alive(int(entry.get("pid", 0)))}
                     for name, entry in sorted(manifest.get("services", {}).items())},
        # a floor run by per-host runners: where each service is; its process is its host's runner's
        "hosted": {name: {"address": entry.get("address", ""), "host": entry.get("host", ""), "port": entry.get("port")}
                   for name, entry in sorted(manifest.get("hosted", {}).items())},
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    plane = report["control_plane"]
    state = "running" if report["running"] else "stopped" if manifest.get("stopped_at") else "not answering"
    console.print(f"floor ({report['mode']}): {state}; control plane pid {plane['pid']} "
                  f"(control port {plane['control_port']})", highlight=False)
    taken = report["takeover"]
    if taken.get("lease_at"):
        moved = taken.get("all_moved_at")
        console.print(f"taken over by this control plane at {time.ctime(taken['lease_at'])}"
                      + (f"; every service moved {moved - taken['lease_at']:.3f} s later" if moved else ""),
                      highlight=False)
    for s in report["standbys"]:
        role = "follower replica (issuing)" if report["replicas"] > 1 else "standby"
        console.print(f"{role} pid {s['pid']} on control port {s['control_port']}: "
                      f"{'running' if s['alive'] else 'gone'}", highlight=False)
    for r in report["replica_processes"]:
        console.print(f"replica {r['name']} pid {r['pid']} on control port {r.get('control_port')}: "
                      f"{r.get('role', '?') if r['alive'] else 'gone'}", highlight=False)
    table = Table(title="services")
    for column in ("service", "host", "address", "port", "pid", "alive"):
        table.add_column(column)
    for name, s in report["services"].items():
        table.add_row(name, s["host"] or "-", s["address"], str(s["port"]), str(s["pid"]), "yes" if s["alive"] else "no")
    for name, s in report["hosted"].items():
        table.add_row(name, s["host"], s["address"], str(s["port"]), "-", "its host's runner")
    console.print(table)


def _replica_lines(directory) -> list:  # noqa: ANN001 - a Path
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # a line being written: the next status reads it
    return out
