"""``trustfabric ca ...``: CAs per trust domain, workload certificates, releases, revocation.

Stable surface: ``ca init [--firm]``, ``ca issue SPIFFE_ID --out DIR [--ttl]
[--no-attest] [--digest HEX --posture FILE]``, ``ca revoke (SPIFFE_ID|SERIAL)``,
``ca promote DIGEST --domain``; plus ``ca rotate``, ``ca bundle`` and
``ca register-host`` (posture agents' keys). ``ca issue`` plays the workload: it
makes the key and CSR locally, so the key is written only to ``--out``.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.table import Table

from trustfabric.audit.events import Kind
from trustfabric.commands.common import console, refusals_exit
from trustfabric.home import home_dir
from trustfabric.identity.attestation import AttestationRequest, validate_digest
from trustfabric.identity.errors import AttestationError, CertificateError, IdentityError
from trustfabric.identity.plane import DEFAULT_FIRM, IdentityPlane
from trustfabric.identity.promotion import check_direct_promotion
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import credentials_from, new_key_and_csr
from trustfabric.signals.posture import PostureError, decode_signed

app = typer.Typer(no_args_is_help=True, help="Certificate authorities, workload certificates, revocation.")


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
    no_attest: bool = typer.Option(False, "--no-attest", help="Operator bypass of attestation (logged)."),
    digest: str = typer.Option(None, "--digest", help="SHA-256 (hex) of the workload's code artefact."),
    posture: Path = typer.Option(None, "--posture", help="Signed posture report of the host (JSON)."),
) -> None:
    """Issue a workload certificate: attested (--digest and --posture) or, explicitly, --no-attest."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        sid = SpiffeId.parse(spiffe_id)
        key, csr = new_key_and_csr(sid)
        issuer = plane.attesting_issuer()
        now = plane.clock.now()
        if no_attest:
            cert = issuer.issue_unattested(csr, sid, now, ttl, operator=_operator())
        else:
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
    console.print(f"issued [bold]{sid}[/] serial [bold]{creds.serial}[/] until "
                  f"{creds.not_after_datetime.isoformat(timespec='seconds')}"
                  f"{' [yellow](not attested)[/]' if no_attest else ''}")
    console.print(f"sha256 {creds.fingerprint_sha256}  -> {out}/cert.pem key.pem bundle.pem")


@app.command("revoke")
def revoke(
    target: str = typer.Argument(..., help="A SPIFFE ID (quarantine) or a certificate serial (decimal or 0x-hex)."),
    reason: str = typer.Option("revoked by operator", "--reason", help="Why (kept in the log)."),
) -> None:
    """Revoke a certificate by serial, or every certificate of a SPIFFE ID (quarantine)."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
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
        plane.emitter.emit(Kind.CERT_REVOKED, principal=_operator(), resource=resource, trust_domain=domain,
                           decision="deny", reason="cert.revoked",
                           detail={"kind": entry.kind, "version": entry.version, "why": reason})
    console.print(f"revoked {entry.kind} [bold]{entry.value}[/] (revocation set version {entry.version})")


@app.command("promote")
def promote(
    digest: str = typer.Argument(..., help="SHA-256 (hex) of the release's code artefact."),
    domain: str = typer.Option(..., "--domain", help="Trust domain the release is promoted to."),
    name: str = typer.Option("", "--name", help="Release name, for people."),
) -> None:
    """Promote a release (code digest) to a dev trust domain; test and prod only via ``release promote``."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        plane.ca(domain)
        check_direct_promotion(domain)
        row = plane.releases.promote(domain, validate_digest(digest), plane.clock.now(), name)
        plane.emitter.emit(Kind.RELEASE, principal=_operator(), action="release.promote", resource=row.digest,
                           trust_domain=domain, decision="allow", detail={"name": name})
    console.print(f"promoted {row.digest} to [bold]{domain}[/]")


@app.command("rotate")
def rotate(
    domain: str = typer.Option(..., "--domain", help="Trust domain whose CA to rotate."),
    overlap: int = typer.Option(7200, "--overlap", help="Seconds the previous CA stays in the bundle."),
) -> None:
    """Start a new CA generation; the previous one stays trusted for the overlap window."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        ca = plane.rotate_ca(domain, overlap, operator=_operator())
    console.print(f"{domain}: generation {ca.current.number}; previous trusted {overlap}s more")


@app.command("bundle")
def bundle(domain: str = typer.Option(..., "--domain", help="Trust domain.")) -> None:
    """Print the trust bundle (PEM) of a trust domain."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        pem = plane.ca(domain).bundle_pem(plane.clock.now())
    typer.echo(pem.decode(), nl=False)


@app.command("register-host")
def register_host(
    host: str = typer.Argument(..., help="Host name the posture agent reports for."),
    public_key: Path = typer.Option(..., "--public-key", help="The agent's Ed25519 public key (PEM or raw 32 bytes)."),
) -> None:
    """Register a host posture agent's key so its signed reports count in attestation."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        data = public_key.read_bytes()
        try:
            key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----")
                   else Ed25519PublicKey.from_public_bytes(data))
        except ValueError as exc:
            raise IdentityError(f"unreadable key: {exc}", reason="posture.bad_key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise IdentityError("posture agent keys are Ed25519", reason="posture.bad_key")
        plane.register_host(host, key)
    console.print(f"registered posture agent of [bold]{host}[/]")
