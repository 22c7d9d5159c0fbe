"""``trustfabric ca ...``: CAs per trust domain, workload certificates, releases, revocation.

Stable surface: ``ca init [--firm]``, ``ca issue SPIFFE_ID --out DIR [--ttl]
[--no-attest] [--digest HEX --posture FILE]``, ``ca revoke (SPIFFE_ID|SERIAL)``,
``ca promote DIGEST --domain``; plus ``ca rotate``, ``ca bundle`` and
``ca register-host`` (posture agents' keys). ``ca issue`` plays the workload: it
makes the key and CSR locally, so the key is written only to ``--out``.

``revoke``, ``promote``, ``issue --no-attest`` and ``rotate`` are a person's actions
(``--user``, password and TOTP; :mod:`trustfabric.commands.operate`): on a running floor
the control plane applies them (a revocation is pushed to every enforcement point and
confirmed; a CA rotation is refused there: stop the floor first), otherwise the store.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Optional

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.table import Table

from trustfabric.audit.events import Kind
from trustfabric.commands import operate
from trustfabric.commands.common import console, operator_credential, refusals_exit
from trustfabric.home import home_dir
from trustfabric.identity.attestation import AttestationRequest, validate_digest
from trustfabric.identity.errors import AttestationError, CertificateError, IdentityError
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import DEFAULT_FIRM, IdentityPlane
from trustfabric.identity.promotion import check_direct_promotion
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import WorkloadCredentials, credentials_from, key_to_pem, new_key_and_csr
from trustfabric.signals.errors import PostureError
from trustfabric.signals.posture import decode_signed

app = typer.Typer(no_args_is_help=True, help="Certificate authorities, workload certificates, revocation.")

USER = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER.")
TOTP = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP.")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@app.command("init")
def init(firm: str = typer.Option(DEFAULT_FIRM, "--firm", help="Firm domain; CAs for prod.<firm>, test.<firm>, "
                                                                 "dev.<firm>.")) -> None:
    """Create one CA per trust domain (prod, test, dev) and the token signing key; existing CAs are kept."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        created = plane.init(firm, operator=_operator())
        table = Table("trust domain", "CA", "generation", "issuing CA valid until", title="Certificate authorities")
        for domain, fresh in created:
            ca = plane.ca(domain)
            table.add_row(domain, "created" if fresh else "exists", str(ca.current.number),
                          ca.current.issuing_cert.not_valid_after_utc.isoformat(timespec="seconds"))
        console.print(table)
        console.print(f"token issuer [bold]{plane.issuer_name}[/], key [bold]{plane.keys.active.kid}[/]")


@app.command("issue")
def issue(
    spiffe_id: str = typer.Argument(..., help="spiffe://<trust-domain>/<segment>/<service>"),
    out: Path = typer.Option(..., "--out", help="Directory for cert.pem, key.pem (0600) and bundle.pem."),
    ttl: int = typer.Option(3600, "--ttl", help="Certificate lifetime in seconds (at most 3600)."),
    no_attest: bool = typer.Option(False, "--no-attest", help="A security officer's bypass of attestation (logged; "
                                                                 "--user and a TOTP step-up)."),
    digest: str = typer.Option(None, "--digest", help="SHA-256 (hex) of the workload's code artefact."),
    posture: Path = typer.Option(None, "--posture", help="Signed posture report of the host (JSON)."),
    user: Optional[str] = USER, totp: Optional[str] = TOTP,
) -> None:
    """Issue a workload certificate: attested (--digest and --posture) or, explicitly, --no-attest."""
    if no_attest:
        _issue_unattested(spiffe_id, out, ttl, user, totp)
        return
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        sid = SpiffeId.parse(spiffe_id)
        key, csr = new_key_and_csr(sid)
        issuer = plane.attesting_issuer()
        now = plane.clock.now()
        try:
            if digest is None or posture is None:
                raise AttestationError("attestation needs --digest and --posture (or an explicit --no-attest)",
                                       reason="attest.missing_evidence")
            try:
                signed = decode_signed(posture.read_bytes())
            except OSError as exc:
                raise AttestationError(f"cannot read {posture}: {exc.strerror}",
                                       reason="posture.unsigned") from exc
            except PostureError as exc:  # a SignalError: refused as attestation, same reason code
                raise AttestationError(exc.detail, reason=exc.reason) from exc
        except AttestationError as exc:
            issuer.record_refusal(sid, exc)
            raise
        cert = issuer.issue(AttestationRequest(sid, csr, digest, signed, ttl), now)
        creds = credentials_from(plane.ca(sid.trust_domain), key, cert, now)
        creds.write(out)
    _print_issued(sid, creds, out, attested=True)


def _print_issued(sid: SpiffeId | str, creds: WorkloadCredentials, out: Path, *, attested: bool) -> None:
    console.print(f"issued [bold]{sid}[/] serial [bold]{creds.serial}[/] until "
                  f"{creds.not_after_datetime.isoformat(timespec='seconds')}"
                  f"{'' if attested else ' [yellow](not attested)[/]'}")
    console.print(f"sha256 {creds.fingerprint_sha256}  -> {out}/cert.pem key.pem bundle.pem")


def _issue_unattested(spiffe_id: str, out: Path, ttl: int, user: str | None, totp: str | None) -> None:
    """The bypass is a person's action: the key is made here, the CSR goes to whoever issues (live plane or store)."""
    with refusals_exit():
        sid = SpiffeId.parse(spiffe_id)
    key, csr = new_key_and_csr(sid)
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            now = plane.clock.now()
            cert = plane.attesting_issuer().issue_unattested(csr, sid, now, ttl, operator=operator.principal)
            creds = credentials_from(plane.ca(sid.trust_domain), key, cert, now)
        return {"cert_pem": creds.cert_pem.decode(), "bundle_pem": creds.bundle_pem.decode()}

    outcome = operate.run("ca.issue_unattested", str(sid), {"csr_pem": csr_pem, "ttl": str(ttl)},
                          operator_credential(user, totp=totp), offline)
    with refusals_exit():
        creds = WorkloadCredentials(cert_pem=outcome.result["cert_pem"].encode(), key_pem=key_to_pem(key),
                                    bundle_pem=outcome.result["bundle_pem"].encode())
        creds.write(out)
    _print_issued(sid, creds, out, attested=False)


@app.command("revoke")
def revoke(
    target: str = typer.Argument(..., help="A SPIFFE ID (quarantine) or a certificate serial (decimal or 0x-hex)."),
    reason: str = typer.Option("revoked by operator", "--reason", help="Why (kept in the log)."),
    user: Optional[str] = USER, totp: Optional[str] = TOTP,
) -> None:
    """Revoke a certificate by serial, or every certificate of a SPIFFE ID (quarantine)."""

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            now = plane.clock.now()
            if target.startswith("spiffe:"):
                sid = SpiffeId.parse(target)
                entry = plane.revocations.revoke_spiffe_id(sid, now, reason)
                resource, domain = str(sid), sid.trust_domain
            else:
                try:
                    serial = int(target, 16) if target.lower().startswith("0x") else int(target, 10)
                except ValueError as exc:
                    raise CertificateError(f"{target!r} is neither a SPIFFE ID nor a serial",
                                           reason="revocation.bad_target") from exc
                entry = plane.revocations.revoke_serial(serial, now, reason)
                resource, domain = str(serial), ""
            plane.emitter.emit(Kind.CERT_REVOKED, principal=operator.principal, resource=resource,
                               trust_domain=domain, decision="deny", reason="cert.revoked",
                               detail={"kind": entry.kind, "version": entry.version, "why": reason})
        return {"kind": entry.kind, "value": str(entry.value), "version": str(entry.version)}

    outcome = operate.run("ca.revoke", target, {"reason": reason}, operator_credential(user, totp=totp), offline)
    r = outcome.result
    console.print(f"revoked {r.get('kind')} [bold]{r.get('value')}[/] (revocation set version {r.get('version')}) "
                  f"{outcome.where()}", soft_wrap=True)


@app.command("promote")
def promote(
    digest: str = typer.Argument(..., help="SHA-256 (hex) of the release's code artefact."),
    domain: str = typer.Option(..., "--domain", help="Trust domain the release is promoted to."),
    name: str = typer.Option("", "--name", help="Release name, for people."),
    user: Optional[str] = USER, totp: Optional[str] = TOTP,
) -> None:
    """Promote a release (code digest) to a dev trust domain (TOTP step-up); test and prod only through the
    promotion gateway (``release promote``): refused here with ``release.gateway_required``."""
    with refusals_exit():
        check_direct_promotion(domain)

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            plane.ca(domain)
            row = plane.releases.promote(domain, validate_digest(digest), plane.clock.now(), name)
            plane.emitter.emit(Kind.RELEASE, principal=operator.principal, action="release.promote",
                               resource=row.digest, trust_domain=domain, decision="allow", detail={"name": name})
        return {"digest": row.digest, "domain": domain}

    outcome = operate.run("ca.promote", digest, {"domain": domain, "name": name},
                          operator_credential(user, totp=totp), offline)
    console.print(f"promoted {outcome.result.get('digest')} to [bold]{domain}[/] {outcome.where()}", soft_wrap=True)


@app.command("rotate")
def rotate(
    domain: str = typer.Option(..., "--domain", help="Trust domain whose CA to rotate."),
    overlap: int = typer.Option(7200, "--overlap", help="Seconds the previous CA stays in the bundle."),
    user: Optional[str] = USER, totp: Optional[str] = TOTP,
) -> None:
    """Start a new CA generation; the previous one stays trusted for the overlap window (no floor running)."""

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            ca = plane.rotate_ca(domain, overlap, operator=operator.principal)
        return {"generation": str(ca.current.number)}

    outcome = operate.run("ca.rotate", domain, {"overlap": str(overlap)}, operator_credential(user, totp=totp),
                          offline)
    console.print(f"{domain}: generation {outcome.result.get('generation')}; previous trusted {overlap}s more")


@app.command("bundle")
def bundle(domain: str = typer.Option(..., "--domain", help="Trust domain.")) -> None:
    """Print the trust bundle (PEM) of a trust domain."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        pem = plane.ca(domain).bundle_pem(plane.clock.now())
    typer.echo(pem.decode(), nl=False)


@app.command("certs")
def certs(
    spiffe_id: str = typer.Option(None, "--spiffe-id", help="Only this identity's certificates."),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The workload certificates issued (by any control-plane replica), newest first: serial, identity, expiry."""
    import json
    import time

    from rich.table import Table

    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        rows = plane.store.list_certificates(spiffe_id, limit)
        now = plane.clock.now()
    if as_json:
        for r in rows:
            typer.echo(json.dumps({"serial": r.serial, "spiffe_id": r.spiffe_id, "not_after": r.not_after,
                                   "fingerprint": r.fingerprint, "issued_at": r.issued_at, "attested": r.attested}))
        return
    table = Table(title=f"certificates issued ({len(rows)})")
    for column in ("serial", "SPIFFE ID", "issued (UTC)", "left", "attested"):
        table.add_column(column, overflow="fold")
    for r in rows:
        left = r.not_after - now
        table.add_row(r.serial[:16], r.spiffe_id, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.issued_at)),
                      f"{left:.0f} s" if left > 0 else "expired", "yes" if r.attested else "no (operator)")
    console.print(table)


@app.command("register-host")
def register_host(
    host: str = typer.Argument(..., help="Host name the posture agent reports for."),
    public_key: Path = typer.Option(..., "--public-key", help="The agent's Ed25519 public key (PEM or raw 32 bytes)."),
    user: Optional[str] = USER, totp: Optional[str] = TOTP,
) -> None:
    """Register a host posture agent's key so its signed reports count in attestation (a security officer)."""
    with refusals_exit():
        data = public_key.read_bytes()
        try:
            key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----")
                   else Ed25519PublicKey.from_public_bytes(data))
        except ValueError as exc:
            raise IdentityError(f"unreadable key: {exc}", reason="posture.bad_key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise IdentityError("posture agent keys are Ed25519", reason="posture.bad_key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            plane.register_host(host, key)
            plane.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action="ca.register_host",
                               resource=host, decision="allow", detail={"public_key": raw})
        return {"host": host}

    outcome = operate.run("ca.register_host", host, {"public_key": raw}, operator_credential(user, totp=totp), offline)
    console.print(f"registered posture agent of [bold]{host}[/] {outcome.where()}, by {outcome.operator}",
                  soft_wrap=True)
