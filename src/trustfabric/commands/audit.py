"""``trustfabric audit ...``: verify, prove, checkpoint, collect, query and report on the audit log.

A thin shell over :mod:`trustfabric.audit`: the central log lives under
``$TRUSTFABRIC_HOME/audit`` (``audit.db`` + ``tree_head.key``/``tree_head.pub``) and the
enforcement points' spools under ``$TRUSTFABRIC_HOME/spool/<source>``.
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import msgspec
import typer
from rich.table import Table

from trustfabric.audit.collector import Collector, unshipped
from trustfabric.audit.damage import losses
from trustfabric.audit.errors import AuditError, TamperDetected
from trustfabric.audit.log import (
    DB_FILE,
    AuditLog,
    Query,
    SQLiteAuditStore,
    audit_dir,
    database_url,
    open_log,
    open_store,
)
from trustfabric.audit.report import FRAMEWORKS, build_evidence, write_report
from trustfabric.audit.treehead import export_tree_head, import_tree_head, load_public_key
from trustfabric.audit.verify import verify_log
from trustfabric.commands.common import console, fail, refusals_exit
from trustfabric.home import sub_dir

app = typer.Typer(help="The audit log: verify, prove, query, compliance reports.", no_args_is_help=True)

DirOption = typer.Option(None, "--dir", help="Audit directory (default $TRUSTFABRIC_HOME/audit).")


def _dir(path: Optional[Path]) -> Path:
    if path is None:
        return audit_dir()
    return path.parent if path.is_file() else path


FLOOR_RUN_PREFIX = "floor-"  # each ``trustfabric demo`` keeps its state in $TRUSTFABRIC_HOME/floor-<random>


def run_audit_dir(run: str) -> Path:
    """The central audit directory of a demo run: ``latest``, a run's name (``floor-...``) or its path.

    A demo keeps each run's state (and so its central log) under
    ``$TRUSTFABRIC_HOME/floor-<random>/audit``; ``latest`` is the most recently
    modified run that has a log. No such run is ``audit.run.missing`` (exit 2).
    """
    from trustfabric.home import home_dir

    if run == "latest":
        runs = [p for p in home_dir(create=False).glob(f"{FLOOR_RUN_PREFIX}*") if (p / "audit" / DB_FILE).exists()]
        if not runs:
            raise fail("audit.run.missing", f"no demo run with an audit log under {home_dir(create=False)}", code=2)
        return max(runs, key=lambda p: (p / "audit" / DB_FILE).stat().st_mtime) / "audit"
    candidate = Path(run)
    if not candidate.exists():
        candidate = home_dir(create=False) / run
    directory = candidate if (candidate / DB_FILE).exists() else candidate / "audit"
    if not (directory / DB_FILE).exists():
        raise fail("audit.run.missing", f"no audit log for run {run!r} ({directory})", code=2)
    return directory


def _existing_dir(path: Optional[Path]) -> Path:
    directory = _dir(path)
    if not (directory / DB_FILE).exists() and not database_url():
        raise fail("audit.store.missing", f"no audit log at {directory}", code=2)
    return directory


def _open(path: Optional[Path]) -> AuditLog:
    return open_log(_existing_dir(path))


def _echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


@app.command()
def verify(path: Optional[Path] = typer.Argument(None, help="Audit directory or its audit.db (default $TRUSTFABRIC_HOME/audit)."),
           head: list[Path] = typer.Option([], "--head", help="A tree head exported earlier (checkpoint --export), "
                                           "kept by a witness; repeatable."),
           run: Optional[str] = typer.Option(None, "--run", help="A demo run's log instead: latest, a floor-* "
                                             "run name or its directory (under $TRUSTFABRIC_HOME)."),
           require_signed: bool = typer.Option(False, "--require-signed", help="Fail (exit 4) if any record lies "
                                               "beyond the last signed tree head."),
           spool: Optional[Path] = typer.Option(None, "--spool", help="Spool root whose records must all be in the "
                                                "log (default: the spool directory beside the audit directory).")) -> None:
    """Recompute every leaf, the Merkle tree and every signed tree head; exit 0 only when intact and complete.

    Names the first bad position when a record was edited, deleted, reordered or inserted, the
    log was truncated below a signed head, or a tree head was forged (exit 3). Says how many
    records lie beyond the last signed tree head (with --require-signed any is a failure,
    exit 4). Spools beside the log whose records are not in it (not yet collected), or that
    cannot be read, make the log incomplete (exit 4): it is never called intact over them.
    """
    if run is not None and path is not None:
        raise fail("audit.args.conflict", "give either a directory or --run, not both", code=2)
    directory = run_audit_dir(run) if run is not None else _existing_dir(path)
    spool_root = spool if spool is not None else directory.parent / "spool"
    with refusals_exit(2):
        public_key = load_public_key(directory)
        witnessed = []
        for file in head:
            try:
                witnessed.append(import_tree_head(json.loads(file.read_text())))
            except (OSError, ValueError) as exc:
                raise fail("audit.tree_head.malformed", f"{file}: {exc}", code=2) from None
        store = open_store(directory)
        try:
            try:
                report = verify_log(store, public_key, witnessed)
                lost = losses(store)
            except TamperDetected as exc:
                raise fail(exc.reason, f"first bad position {exc.position}: {exc.detail}", code=3) from None
            try:
                pending = unshipped(spool_root, store)
            except AuditError as exc:
                raise fail("audit.verify.spool_unreadable",
                           f"the log verifies ({report.size} records) but a spool under {spool_root} cannot be read "
                           f"({exc.reason}: {exc.detail}): what it holds is unknown", code=4) from None
        finally:
            store.close()
    summary = (f"{report.size} records, root {report.root_hash}, {report.tree_heads_checked} signed tree heads "
               f"(latest covers {report.signed_size}), {report.unsigned_tail} records beyond the last signed tree head")
    if lost:
        raise fail("audit.spool.corrupt", f"the log verifies ({summary}) but records never reached it: "
                   + "; ".join(lost), code=4)
    if pending:
        held = ", ".join(f"{name}: {count}" for name, count in sorted(pending.items()))
        raise fail("audit.verify.unshipped",
                   f"the log verifies ({summary}) but {sum(pending.values())} records in spools under {spool_root} "
                   f"are not in it ({held}); ship them with: trustfabric audit collect --spool {spool_root} "
                   f"--dir {directory}", code=4)
    if require_signed and report.unsigned_tail:
        raise fail("audit.verify.unsigned_tail",
                   f"{report.unsigned_tail} records beyond the last signed tree head (which covers "
                   f"{report.signed_size} of {report.size}); sign one with: trustfabric audit checkpoint "
                   f"--dir {directory}", code=4)
    console.print(f"[green]intact[/]: {summary}", highlight=False, soft_wrap=True)


@app.command()
def prove(index: int = typer.Argument(..., help="Leaf index of the record."),
          tree_size: Optional[int] = typer.Option(None, help="Size of a signed tree head (default the latest)."),
          directory: Optional[Path] = DirOption) -> None:
    """Print an inclusion proof (leaf, audit path, root, signed tree head) as JSON.

    A third party checks it with trustfabric.audit.merkle.verify_inclusion alone.
    """
    with refusals_exit(2), closing(_open(directory)) as log:
        _echo_json(log.prove_inclusion(index, tree_size))


@app.command()
def consistency(old_size: int = typer.Argument(..., help="Size of an older signed tree head."),
                new_size: Optional[int] = typer.Option(None, help="Size of a newer signed tree head (default the latest)."),
                directory: Optional[Path] = DirOption) -> None:
    """Print a consistency proof between two signed tree heads as JSON (RFC 9162 2.1.4)."""
    with refusals_exit(2), closing(_open(directory)) as log:
        _echo_json(log.prove_consistency(old_size, new_size))


@app.command()
def checkpoint(export: Optional[Path] = typer.Option(None, "--export", help="Also write the head and public key as JSON here ('-' for stdout)."),
               directory: Optional[Path] = DirOption) -> None:
    """Sign a tree head for the log as it is now (for an outside witness)."""
    with refusals_exit(2), closing(open_log(_dir(directory))) as log:
        head = log.checkpoint()
        exported = export_tree_head(head, log.signer.public_key)
    if export is None:
        console.print(f"tree head: size {head.tree_size}, root {head.root_hash}", highlight=False)
    elif str(export) == "-":
        _echo_json(exported)
    else:
        export.write_text(json.dumps(exported, indent=2, sort_keys=True))
        console.print(f"tree head of size {head.tree_size} exported to {export}", highlight=False)


@app.command()
def collect(spool: Optional[Path] = typer.Option(None, help="Spool root (default $TRUSTFABRIC_HOME/spool)."),
            loop: bool = typer.Option(False, "--loop", help="Keep collecting until interrupted."),
            interval: float = typer.Option(0.2, help="Seconds between passes with --loop."),
            directory: Optional[Path] = DirOption) -> None:
    """Ship enforcement points' spool segments into the central log, acknowledge them, and sign a tree head."""
    with refusals_exit(2):
        log = open_log(_dir(directory))
        collector = Collector(log, spool if spool is not None else sub_dir("spool"))
        try:
            total = 0
            while True:
                result = collector.collect_once()
                total += result.appended
                if not loop:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            try:
                head = log.checkpoint()  # what was shipped is signed: no unsigned tail left behind
            finally:
                log.close()
    console.print(f"collected {total} new records; log size {log.size}, signed tree head covers {head.tree_size}",
                  highlight=False)
    if collector.damaged:  # every intact record was shipped; the damaged ones are named (and alerted in the log)
        raise fail("audit.spool.corrupt", "; ".join(f"{spool}: {damage.describe()}"
                                                    for spool, damage in collector.damaged), code=3)


def _time_ns(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail("audit.query.time", f"{value!r} is neither Unix seconds nor ISO 8601", code=2) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1e9)


@app.command()
def query(principal: Optional[str] = typer.Option(None, help="SPIFFE ID or user:<name>."),
          since: Optional[str] = typer.Option(None, help="From this time (Unix seconds or ISO 8601, UTC by default)."),
          until: Optional[str] = typer.Option(None, help="Before this time."),
          decision: Optional[str] = typer.Option(None, help="allow or deny."),
          action: Optional[str] = typer.Option(None, help="Action, e.g. submit_order."),
          trace: Optional[str] = typer.Option(None, "--trace", help="Correlation id (ClOrdID): one order's whole life."),
          kind: Optional[str] = typer.Option(None, help="Event kind, e.g. decision, alert."),
          limit: Optional[int] = typer.Option(None, help="At most this many records."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per record, with its index."),
          directory: Optional[Path] = DirOption) -> None:
    """Find records by principal, time, decision, action, kind or trace id."""
    q = Query(principal=principal, since_ns=_time_ns(since), until_ns=_time_ns(until), decision=decision,
              action=action, trace_id=trace, kind=kind, limit=limit)
    with refusals_exit(2), closing(_open(directory)) as log:
        rows = log.query(q)
    if as_json:
        for r in rows:
            typer.echo(json.dumps({"index": r.index, **msgspec.to_builtins(r.event())}, sort_keys=True))
        return
    table = Table(title=f"{len(rows)} audit records")
    for column in ("#", "time (UTC)", "source", "kind", "principal", "action", "resource", "decision", "reason", "trace"):
        table.add_column(column)
    for r in rows:
        e = r.event()
        when = datetime.fromtimestamp(e.time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        table.add_row(str(r.index), when, e.source, e.kind, e.principal, e.action, e.resource, e.decision,
                      e.reason, e.trace_id)
    console.print(table)


def _completeness(spool_root: Path, store: SQLiteAuditStore) -> str:
    """What the evidence must say about records the log does not hold yet ("" when it holds them all)."""
    try:
        pending = unshipped(spool_root, store)
    except AuditError as exc:
        return f" INCOMPLETE: a spool under {spool_root} cannot be read ({exc.reason}); what it holds is not in this evidence."
    if not pending:
        return ""
    return (f" INCOMPLETE: {sum(pending.values())} records in spools under {spool_root} are not in the log yet "
            f"({', '.join(f'{name}: {count}' for name, count in sorted(pending.items()))}).")


@app.command()
def report(framework: str = typer.Option(..., "--framework", help=f"One of: {', '.join(FRAMEWORKS)}."),
           out: Path = typer.Option(..., "--out", help="Directory for <framework>.md and <framework>.html."),
           unused_days: int = typer.Option(90, help="A grant unused this many days is flagged for review."),
           grants: Optional[Path] = typer.Option(None, help="JSON list of [principal, action, resource] grants to review "
                                                 "(default: the allow decisions seen in the log)."),
           directory: Optional[Path] = DirOption) -> None:
    """Write compliance evidence drawn from the log (Markdown and HTML)."""
    if framework not in FRAMEWORKS:
        raise fail("audit.report.framework", f"one of {', '.join(FRAMEWORKS)}", code=2)
    grant_list = None
    if grants is not None:
        try:
            grant_list = [tuple(g) for g in json.loads(grants.read_text())]
            if any(len(g) != 3 for g in grant_list):
                raise ValueError("each grant is [principal, action, resource]")
        except (OSError, ValueError, TypeError) as exc:
            raise fail("audit.report.grants", str(exc), code=2) from None
    d = _existing_dir(directory)
    with refusals_exit(2):
        store = SQLiteAuditStore(d / DB_FILE)
        try:
            try:
                v = verify_log(store, load_public_key(d))
                integrity = (f"Verified intact: {v.size} records, Merkle root {v.root_hash}, {v.tree_heads_checked} "
                             f"signed tree heads (latest covers {v.signed_size}), {v.unsigned_tail} records beyond "
                             f"the last signed tree head.")
                integrity += _completeness(d.parent / "spool", store)
            except TamperDetected as exc:
                integrity = f"TAMPERING DETECTED at position {exc.position}: {exc.reason}: {exc.detail}"
            evidence = build_evidence(((r.index, r.event()) for r in store.records()), now_ns=time.time_ns(),
                                      integrity=integrity, unused_days=unused_days, grants=grant_list)
        finally:
            store.close()
        md, html = write_report(evidence, framework, out)
    console.print(f"wrote {md} and {html}", highlight=False)


@app.command()
def export(fmt: str = typer.Option("ocsf", "--format", help="ocsf (OCSF 1.2 JSON, one event a line), cef or jsonl."),
           since: Optional[str] = typer.Option(None, help="From this time (Unix seconds or ISO 8601)."),
           until: Optional[str] = typer.Option(None, help="Before this time."),
           kind: Optional[str] = typer.Option(None, help="Only this event kind (decision, alert, ...)."),
           out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of standard output."),
           run: Optional[str] = typer.Option(None, "--run", help="A demo run's log: 'latest' or its name."),
           directory: Optional[Path] = DirOption) -> None:
    """The audit log for a SIEM: OCSF events, ArcSight CEF lines or the records as JSON lines."""
    from trustfabric.audit.siem import FORMATS, render

    if fmt not in FORMATS:
        raise fail("audit.export.format", f"--format must be one of {', '.join(FORMATS)}", code=2)
    q = Query(since_ns=_time_ns(since), until_ns=_time_ns(until), kind=kind)
    source = run_audit_dir(run) if run is not None else None
    with refusals_exit(2), closing(open_log(source) if source is not None else _open(directory)) as log:
        rows = log.query(q)
    lines = (render(r, fmt) + "\n" for r in rows)
    if out is None:
        for line in lines:
            typer.echo(line, nl=False)
        return
    with out.open("w") as fh:
        fh.writelines(lines)
    console.print(f"{len(rows)} records written to {out} ({fmt})", highlight=False)


@app.command()
def forward(to: str = typer.Option(..., "--to", help="HOST:PORT of the SIEM's syslog-over-TLS receiver (RFC 5425)."),
            ca: Path = typer.Option(..., "--ca", help="CA bundle (PEM) that signed the receiver's certificate."),
            fmt: str = typer.Option("ocsf", "--format", help="ocsf, cef or jsonl."),
            server_name: Optional[str] = typer.Option(None, "--server-name",
                                                      help="Name the receiver's certificate carries (default: HOST)."),
            once: bool = typer.Option(False, "--once", help="Ship what the log holds now, then stop."),
            metrics: str = typer.Option("off", "--metrics", help="Loopback HOST:PORT for a Prometheus lag gauge."),
            directory: Optional[Path] = DirOption) -> None:
    """Forward the audit log to a SIEM as RFC 5424 syslog over TLS: resumable, at least once, in order."""
    import signal as signals
    import ssl
    import threading

    from trustfabric.audit.forward import SyslogForwarder
    from trustfabric.metrics import MetricsEndpoint, counter, gauge

    host, sep, port = to.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise fail("config.address", f"--to must be HOST:PORT, not {to!r}", code=2)
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    state = sub_dir("forward")
    with refusals_exit(2):
        log = _open(directory)
        forwarder = SyslogForwarder(log, host, int(port), context, state, fmt=fmt, server_name=server_name)
    endpoint = None
    if metrics != "off":
        m_host, _, m_port = metrics.rpartition(":")

        def families():
            status = forwarder.status()
            yield gauge("siem_forward_lag_records", "Records in the log not yet acknowledged by the SIEM.",
                        float(status["lag"]))
            yield counter("siem_forward_failures", "Connection failures (each resumed from the checkpoint).",
                          float(status["failures"]))
            yield counter("siem_forward_sent", "Messages written to the SIEM (resends included).",
                          float(status["sent_total"]))

        endpoint = MetricsEndpoint(families).start(m_host or "127.0.0.1", int(m_port or 0))
        console.print(f"metrics on {endpoint.url}", highlight=False)
    stop = threading.Event()
    try:
        if once:
            while forwarder.step():
                pass
            forwarder.close()
        else:
            for sig in (signals.SIGINT, signals.SIGTERM):
                signals.signal(sig, lambda *_: stop.set())
            console.print(f"forwarding {fmt} to {host}:{port} from record {forwarder.marks.acked}", highlight=False)
            forwarder.run(stop)
        status = forwarder.status()
    except (OSError, ssl.SSLError) as exc:
        raise fail("audit.forward.unreachable", f"{to}: {type(exc).__name__}: {exc}") from None
    finally:
        if endpoint is not None:
            endpoint.close()
        log.close()
    console.print(f"acknowledged up to record {status['acked']} of {status['log_size']} (lag {status['lag']}, "
                  f"{status['failures']} failures)", highlight=False)
