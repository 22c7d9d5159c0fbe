"""``trustfabric``: the operator's command line (a leaf: nothing imports it).

Command groups live in :mod:`trustfabric.commands`, one module each; this module
only assembles them. State lives under ``$TRUSTFABRIC_HOME`` (default ``./.trustfabric``).
"""

from __future__ import annotations

import importlib

import typer

from trustfabric import __version__

app = typer.Typer(
    name="trustfabric",
    help="trustfabric: a Zero Trust control fabric for trading systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# name -> (module, help)
GROUPS: dict[str, tuple[str, str]] = {
    "ca": ("trustfabric.commands.ca", "Certificate authorities, workload certificates, revocation."),
    "user": ("trustfabric.commands.user", "People: enrolment, passwords, TOTP MFA, step-up."),
    "token": ("trustfabric.commands.token", "Certificate-bound access tokens: issue, verify, JWKS."),
    "policy": ("trustfabric.commands.policy", "Cedar policies: validate, test, explain, load."),
    "signal": ("trustfabric.commands.signal", "Live signals: posture, threat intel, risk, market context."),
    "audit": ("trustfabric.commands.audit", "The audit log: verify, prove, query, compliance reports."),
    "response": ("trustfabric.commands.response", "Alerts, quarantine and release."),
    "floor": ("trustfabric.commands.floor", "The running floor: kill switch (halt, reduce, resume); metrics."),
    "fix": ("trustfabric.commands.fix", "FIX clients of the gateway (README: 'Connecting a FIX client')."),
    "data": ("trustfabric.commands.data", "The data vault: put, get, ls, grant, rotate, shred."),
    "release": ("trustfabric.commands.release", "The promotion gateway: submit, approve, promote, ls."),
    "bus": ("trustfabric.commands.bus", "The control bus on NATS JetStream: config."),
    "db": ("trustfabric.commands.db", "PostgreSQL schema of the stores beyond one machine: migrate, status."),
    "control": ("trustfabric.commands.control", "The control plane beyond one machine: serve a replica."),
    "host": ("trustfabric.commands.host", "A host run by its own runner: enrol, serve."),
}
SINGLE: dict[str, str] = {
    "sidecar": "trustfabric.commands.sidecar",
    "agent": "trustfabric.commands.agent",
    "console": "trustfabric.console.command",
    "up": "trustfabric.commands.up",
    "demo": "trustfabric.commands.demo",
    "simulate": "trustfabric.commands.simulate",
    "login": "trustfabric.commands.login",
    "logout": "trustfabric.commands.login:logout",
    "whoami": "trustfabric.commands.login:whoami",
}
BENCHES: dict[str, str] = {
    "pdp": "trustfabric.commands.bench_pdp",
    "hop": "trustfabric.commands.bench_hop",
    "audit": "trustfabric.commands.bench_audit",
    "floor": "trustfabric.commands.bench_floor",
    "operator": "trustfabric.commands.bench_operator",
    "vault": "trustfabric.commands.bench_vault",
    "flood": "trustfabric.commands.bench_flood",
    "sidecar": "trustfabric.commands.bench_sidecar",
    "impact": "trustfabric.commands.bench_impact",
    "fabric": "trustfabric.commands.bench_fabric",
}


def _load(module: str):
    """Every registered command's module must import: a missing one fails loudly, never hides a command."""
    return importlib.import_module(module)


def _assemble() -> None:
    for name, (module, help_text) in GROUPS.items():
        app.add_typer(_load(module).app, name=name, help=help_text)
    for name, spec in SINGLE.items():  # "module" (its ``command``) or "module:function"
        module, _, attr = spec.partition(":")
        app.command(name)(getattr(_load(module), attr or "command"))
    bench = typer.Typer(help="Benchmarks: ratios against a baseline measured in the same run.", no_args_is_help=True)
    for name, module in BENCHES.items():
        bench.command(name)(_load(module).command)
    app.add_typer(bench, name="bench")


@app.callback()
def root() -> None:
    """trustfabric: a Zero Trust control fabric for trading systems.

    State lives under $TRUSTFABRIC_HOME (default ./.trustfabric).
    """


@app.command("version")
def version() -> None:
    """Print the trustfabric version."""
    typer.echo(__version__)


_assemble()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
