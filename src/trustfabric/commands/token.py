"""``trustfabric token ...``: issue and verify certificate-bound access tokens; print the JWKS.

``token verify`` exits 0 and prints the claims as JSON when the token is valid;
otherwise it exits non-zero with one line ``reason.code: message``. With
``--cert`` the certificate is checked too (chain to the trust domain of the
audience - or of the certificate - validity and revocation) before the binding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trustfabric.audit.events import Kind
from trustfabric.commands import operate
from trustfabric.commands.common import operator_credential, refusals_exit
from trustfabric.home import home_dir
from trustfabric.identity.certs import load_certificate, peer_spiffe_id, verify_chain
from trustfabric.identity.errors import CertificateError, SpiffeIdError, TokenError
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.tokens import MAX_TTL_S

app = typer.Typer(no_args_is_help=True, help="Certificate-bound access tokens: issue, verify, JWKS.")


def _cert_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}", reason="cert.missing") from exc
    from cryptography.hazmat.primitives.serialization import Encoding

    return load_certificate(data).public_bytes(Encoding.DER)


@app.command("issue")
def issue(
    sub: str = typer.Option(..., "--sub", help="Subject: a SPIFFE ID (needs --cert) or a user name (needs --code)."),
    aud: str = typer.Option(..., "--aud", help="Audience: the service the token is for."),
    cert: Path = typer.Option(None, "--cert", help="The workload's cert.pem; binds the token to it (RFC 8705)."),
    ttl: int = typer.Option(MAX_TTL_S, "--ttl", help="Lifetime in seconds (at most 300)."),
    code: str = typer.Option(None, "--code", help="For a person: current TOTP code."),
    password: str = typer.Option(None, "--password", help="For a person: password (prompted when omitted)."),
) -> None:
    """Issue a signed access token and print it (a --cert must be valid and unrevoked in its domain)."""
    if cert is None and not sub.startswith("spiffe:") and password is None and code is not None:
        password = typer.prompt("password", hide_input=True)
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        now = plane.clock.now()
        issuer = plane.token_issuer()
        if cert is not None:
            cert_der = _cert_der(cert)
            presented = load_certificate(cert_der)
            domain = peer_spiffe_id(presented).trust_domain
            verify_chain(presented, plane.ca(domain).bundle_pem(now), now, domain, revocations=plane.revocations)
            token = issuer.issue(sub, aud, now, ttl, cert_der=cert_der)
        elif sub.startswith("spiffe:"):
            raise TokenError("a workload token must be bound: pass --cert", reason="token.unbound")
        else:
            if code is None:
                raise TokenError("a person's token needs a login: pass --code (and --password)",
                                 reason="token.missing_claim")
            auth = plane.users().login(sub, password or "", code, now)
            token = issuer.issue(sub, aud, now, ttl, amr=auth.amr, auth_time=auth.auth_time)
    typer.echo(token)


@app.command("verify")
def verify(
    token: str = typer.Argument(..., help="The token (compact JWS)."),
    aud: str = typer.Option(..., "--aud", help="The audience this verifier is."),
    cert: Path = typer.Option(None, "--cert", help="The presented client certificate (cert.pem)."),
) -> None:
    """Verify a token: exit 0 with the claims as JSON, or non-zero with one line `reason: message`."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        now = plane.clock.now()
        cert_der = None
        if cert is not None:
            cert_der = _cert_der(cert)
            presented = load_certificate(cert_der)
            try:
                domain = SpiffeId.parse(aud).trust_domain
            except SpiffeIdError:
                domain = peer_spiffe_id(presented).trust_domain
            verify_chain(presented, plane.ca(domain).bundle_pem(now), now, domain, revocations=plane.revocations)
        claims = plane.token_verifier().verify(token, aud, presented_cert_der=cert_der, now=now)
    typer.echo(json.dumps(claims.to_dict(), indent=2, sort_keys=True))


@app.command("jwks")
def jwks() -> None:
    """Print the JWKS (public token-signing keys, with kid)."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        document = plane.keys.jwks()
    typer.echo(json.dumps(document, indent=2))


@app.command("rotate-key")
def rotate_key(
    user: Optional[str] = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP."),
) -> None:
    """Make a new token signing key; the previous one stays published for tokens still alive.

    On a running floor the control plane rotates and pushes the new key set to every
    enforcement point before the command returns.
    """

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            key = plane.keys.rotate(plane.clock.now())
            plane.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action="token.key_rotated",
                               resource=key.kid, decision="allow")
        return {"kid": key.kid}

    outcome = operate.run("token.rotate_key", "", {}, operator_credential(user, totp=totp), offline)
    typer.echo(outcome.result.get("kid", ""))
