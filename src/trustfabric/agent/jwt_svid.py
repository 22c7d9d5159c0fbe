"""JWT-SVIDs: the SPIFFE JWT profile, signed with an ES256 key of the trust domain's agent.

The JWT-SVID specification admits RS*, ES* and PS* signatures (not the Ed25519 the
fabric's certificate-bound access tokens use), so the agent keeps an ECDSA P-256
key per trust domain (``$TRUSTFABRIC_HOME/agent/jwt-svid-<trust domain>.pem``,
0600) and publishes its public half as the trust domain's JWT bundle (a JWKS
with ``use: jwt-svid``). A JWT-SVID carries ``sub`` (the SPIFFE ID), ``aud`` (at
least one audience), ``exp`` and ``iat``; :meth:`JwtSvidKeys.verify` checks the
signature with the algorithm pinned to ES256, the expiry (no leeway beyond
:data:`LEEWAY_S`), that ``sub`` is a SPIFFE ID of this trust domain and that the
audience asked for is one of the token's. Every failure is a typed
:class:`~trustfabric.errors.IdentityError` with a ``jwt_svid.*`` reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustfabric.errors import IdentityError, TrustFabricError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.tokens import Claims
from trustfabric.keyfiles import key_to_pem, write_private_file

ALGORITHM = "ES256"
LEEWAY_S = 5
MAX_TOKEN_CHARS = 8192


class JwtSvidKeys:
    def __init__(self, trust_domain: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.trust_domain = trust_domain
        self._key = key
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        self.kid = jwt.utils.base64url_encode(
            jwt.utils.force_bytes(jwk["x"] + jwk["y"])).decode()[:16]
        self._jwk = {**jwk, "kid": self.kid, "use": "jwt-svid", "alg": ALGORITHM}

    @classmethod
    def open(cls, home: Path | str, trust_domain: str) -> "JwtSvidKeys":
        path = Path(home) / "agent" / f"jwt-svid-{trust_domain}.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise IdentityError(f"{path} holds no EC key", reason="jwt_svid.bad_key")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_private_file(path, key_to_pem(key))
        return cls(trust_domain, key)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    def jwks_json(self) -> bytes:
        return json.dumps(self.jwks(), sort_keys=True).encode()

    def sign(self, spiffe_id: str, audience: list[str], now: float, *, ttl_s: int = 300) -> str:
        claims = {"sub": spiffe_id, "aud": audience if len(audience) > 1 else audience[0],
                  "iat": int(now), "exp": int(now) + int(ttl_s)}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"})

    @property
    def bundle(self) -> "JwtBundle":
        return JwtBundle(self.trust_domain, self.kid, self._key.public_key())

    def verify(self, token: str, audience: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a JWT-SVID of this trust domain for ``audience``; a typed refusal otherwise."""
        return self.bundle.verify(token, audience, now)


class JwtBundle:
    """A trust domain's JWT-SVID verification key (what ``FetchJWTBundles`` hands out), verifying tokens."""

    def __init__(self, trust_domain: str, kid: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self.trust_domain, self.kid, self._public = trust_domain, kid, public_key

    @classmethod
    def from_jwks(cls, trust_domain: str, jwks: bytes | str | dict) -> "JwtBundle":
        try:
            doc = json.loads(jwks) if isinstance(jwks, (bytes, str)) else jwks
            (entry,) = [k for k in doc["keys"] if k.get("use") == "jwt-svid" and k.get("alg") == ALGORITHM]
            public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(entry))
        except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
            raise IdentityError(f"unusable JWT bundle: {exc}", reason="jwt_svid.bad_bundle") from None
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise IdentityError("the JWT bundle holds no public EC key", reason="jwt_svid.bad_bundle")
        return cls(trust_domain, str(entry["kid"]), public)

    def verify(self, token: str, audience: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a JWT-SVID of this trust domain for ``audience``; a typed refusal otherwise."""
        now = time.time() if now is None else now
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise IdentityError("not a JWT-SVID", reason="jwt_svid.malformed")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or header.get("kid") != self.kid:
                raise IdentityError(f"alg {header.get('alg')!r} / kid {header.get('kid')!r} is not this trust "
                                    "domain's JWT-SVID key", reason="jwt_svid.unknown_key")
            claims = jwt.decode(token, self._public, algorithms=[ALGORITHM], audience=audience,
                                leeway=LEEWAY_S, options={"require": ["sub", "aud", "exp"], "verify_iat": False},
                                # the clock is ours: PyJWT reads time itself, so check exp against ``now`` below
                                )
        except IdentityError:
            raise
        except jwt.InvalidAudienceError:
            raise IdentityError(f"the JWT-SVID is not for {audience!r}", reason="jwt_svid.wrong_audience") from None
        except jwt.ExpiredSignatureError:
            raise IdentityError("the JWT-SVID has expired", reason="jwt_svid.expired") from None
        except jwt.PyJWTError as exc:
            raise IdentityError(f"JWT-SVID refused: {exc}", reason="jwt_svid.invalid") from None
        if now > float(claims["exp"]) + LEEWAY_S:
            raise IdentityError("the JWT-SVID has expired", reason="jwt_svid.expired")
        try:
            sid = SpiffeId.parse(str(claims["sub"]))
        except TrustFabricError:
            raise IdentityError("sub is not a SPIFFE ID", reason="jwt_svid.bad_subject") from None
        if sid.trust_domain != self.trust_domain:
            raise IdentityError(f"{sid} is not of {self.trust_domain}", reason="jwt_svid.wrong_trust_domain")
        return claims


class JwtSvidVerifier:
    """An enforcement point's token verifier that also takes JWT-SVIDs of its trust domain.

    A JWT-SVID (``alg`` ES256, this bundle's ``kid``) carries no certificate binding
    (``cnf``), so it is accepted only over mTLS: the enforcement point then requires
    its ``sub`` to be the SPIFFE ID of the certificate the peer presented (the subject
    check every session open makes), its audience to be the point's, and it is good
    for one session open (its SHA-256 stands in for a ``jti``: a replay is refused).
    Every other token goes to ``fallback`` (the fabric's access-token verifier).
    """

    def __init__(self, bundle: JwtBundle, fallback: Any = None) -> None:
        self.bundle = bundle
        self.fallback = fallback

    def verify(self, token: str, audience: str, presented_cert_der: bytes | None = None,
               now: float | None = None) -> Claims:
        try:
            header = jwt.get_unverified_header(token) if isinstance(token, str) else {}
        except jwt.PyJWTError:
            header = {}
        if header.get("alg") != ALGORITHM or header.get("kid") != self.bundle.kid:
            if self.fallback is None:
                raise IdentityError("not a JWT-SVID of this trust domain", reason="jwt_svid.unknown_key")
            return self.fallback.verify(token, audience, presented_cert_der, now=now)
        if not presented_cert_der:
            raise IdentityError("a JWT-SVID is taken over mTLS only", reason="jwt_svid.no_certificate")
        claims = self.bundle.verify(token, audience, now)
        aud = claims["aud"]
        return Claims(iss=f"spiffe://{self.bundle.trust_domain}", sub=str(claims["sub"]),
                      aud=(aud,) if isinstance(aud, str) else tuple(aud), exp=float(claims["exp"]),
                      nbf=float(claims.get("iat", 0)), iat=float(claims.get("iat", 0)),
                      jti="jwt-svid:" + hashlib.sha256(token.encode()).hexdigest()[:32], kid=self.bundle.kid)
