"""``trustfabric token ...``: issue and verify certificate-bound access tokens; the signing keys.

``token verify`` exits 0 and prints the claims as JSON when the token is valid;
otherwise it exits non-zero with one line ``reason.code: message``. With
``--cert`` the certificate is checked too (chain to the trust domain of the
audience - or of the certificate - validity and revocation) before the binding;
every token is bound, a person's to the desk device's certificate it was issued for.

Keys: ``jwks`` prints the keys trusted now (the active one and those retired less
than their retain window ago), ``rotate-key`` makes a new signing key, and
``revoke-key KID`` removes a retired key at once - a person's action
(``token.revoke_key``: password, TOTP, security officer), audited under their name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trustfabric.commands import operate
from trustfabric.commands.common import operator_credential, refusals_exit
from trustfabric.home import home_dir
from trustfabric.identity.certs import load_certificate, peer_spiffe_id, verify_chain
from trustfabric.identity.errors import CertificateError, SpiffeIdError, TokenError
from trustfabric.identity.operators import Operator
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.tokens import MAX_TTL_S

app = typer.Typer(no_args_is_help=True,
                  help="Certificate-bound access tokens: issue, verify; signing keys: JWKS, rotate, revoke.")


def _cert_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}", reason="cert.missing") from exc
    from cryptography.hazmat.primitives.serialization import Encoding

    return load_certificate(data).public_bytes(Encoding.DER)


@app.command("issue")
def issue(
    sub: str = typer.Option(..., "--sub", help="Subject: a SPIFFE ID or a user name (a person: with --code)."),
    aud: str = typer.Option(..., "--aud", help="Audience: the service the token is for."),
    cert: Path = typer.Option(None, "--cert", help="The cert.pem the token binds to (RFC 8705): the workload's own, "
                                                   "or for a person the desk device's."),
    ttl: int = typer.Option(MAX_TTL_S, "--ttl", help="Lifetime in seconds (at most 300)."),
    code: str = typer.Option(None, "--code", help="For a person: current TOTP code."),
    password: str = typer.Option(None, "--password", help="For a person: password (prompted when omitted)."),
) -> None:
    """Issue a signed access token bound to --cert and print it (the certificate must be valid and unrevoked)."""
    if cert is None:
        with refusals_exit():
            raise TokenError("a person's token must be bound to the desk device's certificate: pass --cert"
                             if code is not None else "a token must be bound: pass --cert", reason="token.unbound")
    person = not sub.startswith("spiffe:")
    if person and code is not None and password is None:
        password = typer.prompt("password", hide_input=True)
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        now = plane.clock.now()
        issuer = plane.token_issuer()
        cert_der = _cert_der(cert)
        presented = load_certificate(cert_der)
        domain = peer_spiffe_id(presented).trust_domain
        verify_chain(presented, plane.ca(domain).bundle_pem(now), now, domain, revocations=plane.revocations)
        if not person:
            token = issuer.issue(sub, aud, now, ttl, cert_der=cert_der)
        else:
            if code is None:
                raise TokenError("a person's token needs a login: pass --code (and --password)",
                                 reason="token.missing_claim")
            auth = plane.users().login(sub, password or "", code, now)
            token = issuer.issue(sub, aud, now, ttl, cert_der=cert_der, amr=auth.amr, auth_time=auth.auth_time)
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
    """Print the JWKS: the public token-signing keys trusted now (active, or retired within their window)."""
    with refusals_exit(), IdentityPlane(home_dir()) as plane:
        document = plane.keys.jwks()
    typer.echo(json.dumps(document, indent=2))


@app.command("rotate-key")
def rotate_key(
    user: Optional[str] = typer.Option(None, "--user", help="You (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code; else $TRUSTFABRIC_TOTP."),
) -> None:
    """Make a new token signing key; the previous one verifies for its retain window, then is destroyed.

    On a running floor the control plane rotates and pushes the new key set to every
    enforcement point before the command returns.
    """

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            key = plane.rotate_token_key(operator.principal)
        return {"kid": key.kid}

    outcome = operate.run("token.rotate_key", "", {},
                          operator_credential(user, totp=totp, action="token.rotate_key", target=""), offline)
    typer.echo(outcome.result.get("kid", ""))


@app.command("revoke-key")
def revoke_key(
    kid: str = typer.Argument(..., help="The kid of a retired signing key (see `token jwks`)."),
    user: Optional[str] = typer.Option(None, "--user", help="Who revokes (a security officer); else $TRUSTFABRIC_USER."),
    totp: Optional[str] = typer.Option(None, "--totp", help="Your current TOTP code (the step-up); else a prompt."),
) -> None:
    """Revoke a retired signing key now: gone from the store, the key ring and the JWKS; its tokens refused.

    The active key cannot be revoked (token.key_active): rotate first. On a running floor the
    control plane revokes it and every enforcement point closes the sessions its tokens admitted.
    """

    def offline(operator: Operator) -> dict[str, str]:
        with IdentityPlane(home_dir()) as plane:
            entry = plane.revoke_token_key(kid, operator.principal)
        return {"version": str(entry.version)}

    outcome = operate.run("token.revoke_key", kid, {},
                          operator_credential(user, totp=totp, action="token.revoke_key", target=kid), offline)
    typer.echo(f"revoked token key {kid} (revocation version {outcome.result.get('version', '?')}) "
               f"by {outcome.operator}")
