"""``trustfabric data ...``: the data vault from the command line.

``data put | get`` act as a workload: ``--as DIR`` holds its credentials (``ca issue
--out DIR``); the command opens a session at the key service with them (certificate
checked against the trust domain, a token bound to it) and Cedar decides the request.
``data ls`` lists sealed objects (labels, KEK version, size: never plaintext).
``data grant DATASET`` shows who Cedar lets write, read or analyse a dataset (grants
change in ``policies/data.cedar``, under version control, loaded with ``policy load``).
``data rotate | shred SEGMENT`` are four-eyes: ``--user`` (or the ``trustfabric login``
session) and ``--second-user``, each with a fresh TOTP (``--totp`` / ``--second-totp``;
the second password from ``$TRUSTFABRIC_SECOND_PASSWORD`` or a prompt). They go through the
operator API (:mod:`trustfabric.commands.operate`): with no floor running they apply to
the store here; a running floor's control plane takes no ``data.*`` action yet and refuses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.table import Table

from trustfabric.commands import operate
from trustfabric.commands.common import (
    console,
    offline_operator_authority,
    operator_credential,
    operator_plane,
    refusals_exit,
)
from trustfabric.data.keyservice import Vault
from trustfabric.data.labels import CLASSIFICATIONS, PURPOSES, Labels
from trustfabric.data.lifecycle import KeyLifecycle, lifecycle_target, second_person
from trustfabric.data.local import local_vault, open_spool, workload_session
from trustfabric.home import home_dir, sub_dir
from trustfabric.identity.operators import Operator, OperatorCredential
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


def _lifecycle(action: str, segment: str, env: str, user: str | None, totp: str | None, second_user: str,
               second_totp: str | None) -> operate.Outcome:
    """The first person through the operator API (a running floor's control plane, or the store), the second
    through the same authority in the offline path; both with a fresh TOTP, then the lifecycle itself."""
    with refusals_exit():
        target = lifecycle_target(segment, env)
    credential = operator_credential(user, totp=totp, action=f"data.{action}", target=target)
    second = _second(second_user, second_totp)

    def offline(first: Operator) -> dict[str, str]:
        with _vault() as (plane, vault):
            now = plane.clock.now()
            other = second_person(offline_operator_authority(plane), first, second, f"data.{action}", target, now)
            lifecycle = KeyLifecycle(vault.service.keys, vault.objects, plane.emitter)
            if action == "rotate":
                done = lifecycle.rotate(segment, env, first, other, now)
                return {"previous": str(done.previous), "current": str(done.current),
                        "rewrapped": str(done.rewrapped), "second": other.principal}
            return {"versions": ",".join(map(str, lifecycle.shred(segment, env, first, other, now))),
                    "second": other.principal}

    # on a running floor the control plane authorizes the second person too: their login goes with the request
    args = {"second_user": second.user, "second_password": second.password, "second_totp": second.totp}
    return operate.run(f"data.{action}", target, args, credential, offline)


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
    outcome = _lifecycle("rotate", segment, env, user, totp, second_user, second_totp)
    r = outcome.result
    console.print(f"{env}/{segment}: KEK v{r.get('previous')} -> v{r.get('current')}, {r.get('rewrapped')} data keys "
                  f"re-wrapped; with {r.get('second')} {outcome.where()}", soft_wrap=True)


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
    outcome = _lifecycle("shred", segment, env, user, totp, second_user, second_totp)
    console.print(f"{env}/{segment}: shredded KEK versions {outcome.result.get('versions')}; with "
                  f"{outcome.result.get('second')} {outcome.where()}", soft_wrap=True)
