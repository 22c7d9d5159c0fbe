"""``trustfabric release ...``: the promotion gateway (dev -> test -> prod).

``release provenance ARTEFACT --as BUILD_DIR`` is the build's step: an in-toto / SLSA
provenance statement of the artefact in a DSSE envelope signed with the build identity's
key (credentials of ``spiffe://<td>/build/<builder>`` from ``ca issue --out``).
``release submit`` (the author), ``release approve`` (two people other than the author,
each with a fresh TOTP), ``release promote`` (a Cedar decision; runs the policy tests) and
``release ls``. Refusals are one line with the reason (``release.*``, ``user.*``,
``operator.*``). ``ca promote`` reaches dev only; test and prod go through here.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from trustfabric.commands import operate
from trustfabric.commands.common import (
    console,
    operator_credential,
    operator_plane,
    refusals_exit,
)
from trustfabric.identity.attestation import code_digest, validate_digest
from trustfabric.identity.errors import IdentityError
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.promotion import (
    PolicyTestOutcome,
    PromotionGateway,
    make_provenance,
    release_target,
)
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.policy.testcases import run_cases
from trustfabric.policy.topology import Topology

app = typer.Typer(no_args_is_help=True, help="The promotion gateway: submit, approve, promote, ls.")


def _policy_tests() -> PolicyTestOutcome:
    report = run_cases(Topology.default_path().parent)
    return PolicyTestOutcome(report.passed, report.failed, report.summary())


def _gateway(plane: IdentityPlane) -> PromotionGateway:
    return PromotionGateway(plane.store, plane.cas(), plane.emitter, plane.firm, _policy_tests)


@app.command("provenance")
def provenance(
    artefact: Path = typer.Argument(..., help="The built artefact."),
    as_dir: Path = typer.Option(..., "--as", help="Credentials directory of the build identity."),
    name: str = typer.Option("", "--name", help="Subject name (default: the file name)."),
    out: Path = typer.Option(..., "--out", help="Where to write the DSSE envelope (JSON)."),
) -> None:
    """Sign the artefact's build provenance (in-toto Statement v1, SLSA provenance v1, DSSE) as the build identity."""
    with refusals_exit():
        creds = WorkloadCredentials.load(as_dir)
        envelope = make_provenance(code_digest(artefact), name or artefact.name, creds.private_key(),
                                   creds.certificate)
        out.write_text(json.dumps(envelope, indent=1))
    console.print(f"provenance of {artefact.name} signed by [bold]{creds.spiffe_id}[/] -> {out}")


@app.command("submit")
def submit(
    artefact: Path = typer.Argument(..., help="The artefact (its SHA-256 is the release)."),
    provenance_file: Path = typer.Option(None, "--provenance", help="DSSE envelope from the build."),
    build_cert: Path = typer.Option(None, "--build-cert", help="The build identity's certificate (PEM)."),
    name: str = typer.Option("", "--name", help="Release name, for people."),
    user: str = typer.Option(None, "--user", help="The author (default: the logged-in operator)."),
    totp: str = typer.Option(None, "--totp", help="TOTP code."),
) -> None:
    """Submit a release with its provenance; you are its author (you cannot approve it)."""
    with refusals_exit():
        digest = code_digest(artefact)
        try:
            envelope = json.loads(provenance_file.read_text()) if provenance_file else {}
            cert_pem = build_cert.read_bytes() if build_cert else None
        except (OSError, ValueError) as exc:
            raise IdentityError(f"unreadable provenance or certificate: {exc}",
                                reason="release.provenance_malformed") from exc
    credential = operator_credential(user, totp=totp, action="release.submit", target=release_target(digest))

    def offline(operator: Operator) -> dict[str, str]:
        with operator_plane() as plane:
            candidate = _gateway(plane).submit(operator, digest, envelope, cert_pem, name or artefact.name,
                                               plane.clock.now())
        return {"digest": candidate.digest, "author": candidate.author, "builder": candidate.builder}

    args = {"name": name or artefact.name, "envelope": json.dumps(envelope),
            "build_cert": cert_pem.decode() if cert_pem else ""}  # the control plane checks them on a running floor
    outcome = operate.run("release.submit", release_target(digest), args, credential, offline)
    r = outcome.result
    console.print(f"submitted [bold]{r.get('digest')}[/] by {r.get('author')}, built by {r.get('builder')} "
                  f"{outcome.where()}", soft_wrap=True)


def _step(command: str, digest: str, env: str, user: str | None, totp: str | None) -> str:
    with refusals_exit():
        digest = validate_digest(digest)
    target = release_target(digest, env)
    credential = operator_credential(user, totp=totp, action=f"release.{command}", target=target)

    def offline(operator: Operator) -> dict[str, str]:
        with operator_plane() as plane:
            gateway = _gateway(plane)
            if command == "approve":
                candidate = gateway.approve(operator, digest, env, plane.clock.now())
                return {"approvers": ", ".join(candidate.approvers(env))}
            row = gateway.promote(operator, digest, env, plane.clock.now())
            return {"trust_domain": row.trust_domain}

    outcome = operate.run(f"release.{command}", target, {"environment": env}, credential, offline)
    if command == "approve":
        return f"approved for {env} (approvals: {outcome.result.get('approvers')}) {outcome.where()}"
    return (f"promoted to [bold]{outcome.result.get('trust_domain')}[/]: its workloads may now attest there "
            f"{outcome.where()}")


@app.command("approve")
def approve(
    digest: str = typer.Argument(..., help="The release (SHA-256)."),
    env: str = typer.Option(..., "--env", help="dev, test or prod."),
    user: str = typer.Option(None, "--user"),
    totp: str = typer.Option(None, "--totp", help="A fresh TOTP code (verified with this request)."),
) -> None:
    """Approve a release for an environment (not its author; a fresh TOTP)."""
    console.print(_step("approve", digest, env, user, totp), soft_wrap=True)


@app.command("promote")
def promote(
    digest: str = typer.Argument(..., help="The release (SHA-256)."),
    env: str = typer.Option(..., "--env", help="dev, then test, then prod."),
    user: str = typer.Option(None, "--user"),
    totp: str = typer.Option(None, "--totp", help="A fresh TOTP code (verified with this request)."),
) -> None:
    """Promote a release: previous environment first, two approvals, passing policy tests, Cedar's allow."""
    console.print(_step("promote", digest, env, user, totp), soft_wrap=True)


@app.command("ls")
def ls() -> None:
    """Submitted releases: author, builder, approvals and promotions per environment."""
    with refusals_exit(), operator_plane() as plane:
        candidates = _gateway(plane).list()
    for c in candidates:
        approvals = "; ".join(f"{env}: {', '.join(c.approvers(env))}" for env in c.approvals) or "-"
        console.print(f"{c.digest}  {c.name}  author {c.author}  built by {c.builder}  approvals [{approvals}]  "
                      f"promoted [{', '.join(c.promoted) or '-'}]", highlight=False, soft_wrap=True)
