"""``trustfabric data ...``: the data vault from the command line.

``data put | get`` act as a workload: ``--as DIR`` holds its credentials (``ca issue
--out DIR``); the command opens a session at the key service with them (certificate
checked against the trust domain, a token bound to it) and Cedar decides the request.
``data ls`` lists sealed objects (labels, KEK version, size: never plaintext).
``data grant DATASET`` shows who Cedar lets write, read or analyse a dataset (grants
change in ``policies/data.cedar``, under version control, loaded with ``policy load``).
``data rotate | shred SEGMENT`` are four-eyes: ``--user`` and ``--second-user``, each
with a fresh TOTP (``--totp`` / ``--second-totp``; passwords from ``$TRUSTFABRIC_PASSWORD``
and ``$TRUSTFABRIC_SECOND_PASSWORD`` or prompts).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.table import Table

from trustfabric.commands.common import (
    console,
    offline_operator_authority,
    operator_plane,
    refusals_exit,
)
from trustfabric.data.keyservice import Vault
from trustfabric.data.labels import CLASSIFICATIONS, PURPOSES, Labels
from trustfabric.data.lifecycle import KeyLifecycle, four_eyes, lifecycle_target
from trustfabric.data.local import local_vault, open_spool, workload_session
from trustfabric.home import home_dir, sub_dir
from trustfabric.identity.operators import OperatorCredential
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology
from trustfabric.signals.state import hub_from_state, load_state

app = typer.Typer(no_args_is_help=True, help="The data vault: sealed objects, keys decided by Cedar.")

CLASSIFICATION_HELP = f"One of {', '.join(CLASSIFICATIONS)}."


def _engine(plane: IdentityPlane) -> PolicyEngine:
    """Cedar from the policies folder over the floor's topology, with the signals kept between command runs
    (a quarantined workload, or one whose host has no good posture report, unwraps nothing offline either)."""
    topology = Topology.load(Topology.default_path(), firm=plane.firm)
    hub = hub_from_state(topology, load_state(sub_dir("policy") / "signals.json"))
    engine = PolicyEngine(topology, hub, clock=plane.clock)
    engine.load_dir(Topology.default_path().parent)
    return engine


@contextmanager
def _vault() -> Iterator[tuple[IdentityPlane, Vault]]:
    home = home_dir()
    spool = open_spool(home)
    try:
        with operator_plane() as plane:
            vault = local_vault(plane, _engine(plane), home, spool)
            try:
                yield plane, vault
            finally:
                vault.service.pep.flush_decisions()
    finally:
        spool.close()


@app.command("put")
def put(
    object_id: str = typer.Argument(..., help="Object id (letters, digits, . _ -)."),
    file: Path = typer.Option(..., "--file", help="The plaintext to seal ('-' for stdin)."),
    classification: str = typer.Option(..., "--classification", help=CLASSIFICATION_HELP),
    segment: str = typer.Option(..., "--segment", help="Owner segment."),
    env: str = typer.Option("prod", "--env", help="Environment of the dataset."),
    as_dir: Path = typer.Option(..., "--as", help="Credentials directory of the workload (ca issue --out)."),
) -> None:
    """Seal a file into the vault as a workload (Cedar decides data_write on the dataset)."""
    with refusals_exit(), _vault() as (plane, vault):
        labels = Labels(classification, env, segment)
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        session = workload_session(vault, plane, WorkloadCredentials.load(as_dir))
        sealed = vault.put(session, object_id, labels, data)
    console.print(f"sealed [bold]{object_id}[/] ({len(data)} bytes) in {labels.dataset} ({env}), "
                  f"KEK v{sealed.kek_version}")


@app.command("get")
def get(
    object_id: str = typer.Argument(..., help="Object id."),
    classification: str = typer.Option(..., "--classification", help=CLASSIFICATION_HELP),
    segment: str = typer.Option(..., "--segment", help="Owner segment."),
    env: str = typer.Option("prod", "--env", help="Environment of the dataset."),
    as_dir: Path = typer.Option(..., "--as", help="Credentials directory of the workload."),
    purpose: str = typer.Option("read", "--purpose", help=f"One of {', '.join(PURPOSES)}."),
    out: Path = typer.Option(None, "--out", help="Write the plaintext here (default stdout)."),
) -> None:
    """Open an object as a workload, for a purpose (analyse: client fields tokenized)."""
    with refusals_exit(), _vault() as (plane, vault):
        labels = Labels(classification, env, segment)
        session = workload_session(vault, plane, WorkloadCredentials.load(as_dir))
        data = vault.get(session, object_id, labels, purpose)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)


@app.command("ls")
def ls(
    env: str = typer.Option(None, "--env", help="Only this environment."),
    segment: str = typer.Option(None, "--segment", help="Only this segment."),
) -> None:
    """Sealed objects: id, dataset, environment, KEK version, size (no key needed, no plaintext shown)."""
    with refusals_exit(), _vault() as (_, vault):
        rows = vault.list(env, segment)
    table = Table("object", "dataset", "env", "KEK", "bytes", title="Vault")
    for info in rows:
        table.add_row(info.object_id, info.labels.dataset, info.labels.environment, f"v{info.kek_version}",
                      str(info.size))
    console.print(table)


@app.command("grant")
def grant(dataset: str = typer.Argument(..., help="data/<segment>/<classification>")) -> None:
    """Who Cedar lets write, read or analyse a dataset now (each principal of the floor, each purpose)."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        engine = _engine(plane)
        console.print(f"{dataset} ({engine.topology.environment}): who may, now")
        for key in engine.topology.principal_keys():
            for purpose, action in PURPOSES.items():
                decision = engine.decide(key, action, dataset)
                if decision.allowed:
                    console.print(f"  {key}  {purpose}  ({', '.join(decision.policy_ids)})", highlight=False,
                                  soft_wrap=True)


def _second(user: str, totp: str | None) -> OperatorCredential:
    password = os.environ.get("TRUSTFABRIC_SECOND_PASSWORD") or typer.prompt(f"password of {user}", hide_input=True)
    code = totp or typer.prompt(f"TOTP code of {user}")
    return OperatorCredential(user=user.removeprefix("user:"), password=password, totp=code)


def _first(user: str | None, totp: str | None) -> OperatorCredential:
    name = (user or os.environ.get("TRUSTFABRIC_USER", "")).removeprefix("user:")
    password = os.environ.get("TRUSTFABRIC_PASSWORD") or typer.prompt(f"password of {name}", hide_input=True)
    code = totp or os.environ.get("TRUSTFABRIC_TOTP") or typer.prompt(f"TOTP code of {name}")
    return OperatorCredential(user=name, password=password, totp=code)


def _lifecycle_step(plane: IdentityPlane, vault: Vault, action: str, segment: str, env: str,
                    first: OperatorCredential, second: OperatorCredential):
    """Both people through the operator authority (Cedar, fresh TOTP each), then the lifecycle itself."""
    now = plane.clock.now()
    a, b = four_eyes(offline_operator_authority(plane), f"data.{action}", lifecycle_target(segment, env), first,
                     second, now)
    lifecycle = KeyLifecycle(vault.service.keys, vault.objects, plane.emitter)
    return getattr(lifecycle, action)(segment, env, a, b, now)


@app.command("rotate")
def rotate(
    segment: str = typer.Argument(..., help="Owner segment whose KEK to rotate."),
    env: str = typer.Option("prod", "--env"),
    user: str = typer.Option(None, "--user", help="First person."),
    totp: str = typer.Option(None, "--totp", help="First person's TOTP code (fresh)."),
    second_user: str = typer.Option(..., "--second-user", help="Second person (not the first)."),
    second_totp: str = typer.Option(None, "--second-totp", help="Second person's TOTP code (fresh)."),
) -> None:
    """Rotate a KEK: data keys re-wrapped under a new version, data untouched; four-eyes."""
    with refusals_exit(), _vault() as (plane, vault):
        first, second = _first(user, totp), _second(second_user, second_totp)
        done = _lifecycle_step(plane, vault, "rotate", segment, env, first, second)
    console.print(f"{env}/{segment}: KEK v{done.previous} -> v{done.current}, {done.rewrapped} data keys re-wrapped")


@app.command("shred")
def shred(
    segment: str = typer.Argument(..., help="Owner segment whose keys to destroy."),
    env: str = typer.Option("prod", "--env"),
    user: str = typer.Option(None, "--user", help="First person."),
    totp: str = typer.Option(None, "--totp", help="First person's TOTP code (fresh)."),
    second_user: str = typer.Option(..., "--second-user", help="Second person (not the first)."),
    second_totp: str = typer.Option(None, "--second-totp", help="Second person's TOTP code (fresh)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: the segment's data becomes unreadable for good."),
) -> None:
    """Crypto-shred a segment's keys in an environment: its data, wherever copied, is gone; four-eyes."""
    if not yes:
        typer.confirm(f"destroy every key of {env}/{segment}? its data becomes unreadable for good", abort=True)
    with refusals_exit(), _vault() as (plane, vault):
        first, second = _first(user, totp), _second(second_user, second_totp)
        versions = _lifecycle_step(plane, vault, "shred", segment, env, first, second)
    console.print(f"{env}/{segment}: shredded KEK versions {versions}")
