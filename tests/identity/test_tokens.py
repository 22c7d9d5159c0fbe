"""Tokens: issued, verified, bound - and every listed forgery or mistake refused with its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.errors import IdentityError, TokenError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.tokens import (
    KeyRing,
    ReplayCache,
    StaticJwks,
    TokenIssuer,
    TokenVerifier,
    public_jwk,
)
from trustfabric.identity.workload import issue_for_test

from .conftest import DEV, PROD, T0

ISS = "https://idp.acme.example"
AUD = "spiffe://prod.acme.example/trading/oms"
ALGO = SpiffeId.workload(PROD, "algo", "momentum")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj) -> str:
    return b64(json.dumps(obj).encode())


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.generate(T0)


_PROD_CA = CertificateAuthority.create(PROD, T0 - 10)
ALGO_CREDS = issue_for_test(_PROD_CA, ALGO, T0 - 5)
DESK = f"spiffe://{PROD}/desk/desk-1"
DESK_CREDS = issue_for_test(_PROD_CA, DESK, T0 - 5)
DESK2_CREDS = issue_for_test(_PROD_CA, f"spiffe://{PROD}/desk/desk-2", T0 - 5)


@pytest.fixture(scope="module")
def algo_creds():
    return ALGO_CREDS


@pytest.fixture
def issuer(ring) -> TokenIssuer:
    return TokenIssuer(ring, ISS)


@pytest.fixture
def verifier(ring) -> TokenVerifier:
    return TokenVerifier(ring, ISS, clock=FakeClock(T0))


def payload(**changes):
    body = {"iss": ISS, "sub": str(ALGO), "aud": AUD, "iat": int(T0), "nbf": int(T0), "exp": int(T0) + 300,
            "jti": "j-1"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def signed(ring: KeyRing, header: dict, body: dict) -> str:
    signing_input = f"{seg(header)}.{seg(body)}".encode()
    return signing_input.decode() + "." + b64(ring.active.private_key.sign(signing_input))


def reason(verifier: TokenVerifier, token, cert_der=None, aud=AUD, now=T0) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, aud, presented_cert_der=cert_der, now=now)
    assert isinstance(info.value, IdentityError)
    return info.value.reason


# ---------------------------------------------------------------- the happy paths


def test_bound_workload_token_round_trip(issuer, verifier, algo_creds) -> None:
    token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    claims = verifier.verify(token, AUD, presented_cert_der=algo_creds.cert_der, now=T0 + 10)
    assert claims.sub == str(ALGO) and claims.aud == (AUD,) and claims.iss == ISS
    assert claims.exp - claims.iat == 300
    assert claims.cnf_x5t_s256 == algo_creds.x5t_s256
    with pytest.raises(AttributeError):
        claims.sub = "x"  # type: ignore[misc]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA" and header["kid"] == issuer._keys.active.kid


def test_person_token_carries_amr_and_auth_time_and_binds_to_the_desk(issuer, verifier) -> None:
    token = issuer.issue("alice", "console", T0, ttl_s=120, cert_der=DESK_CREDS.cert_der, amr=["pwd", "otp"],
                         auth_time=T0 - 30)
    claims = verifier.verify(token, "console", DESK_CREDS.cert_der, now=T0)
    assert claims.amr == ("pwd", "otp") and claims.auth_time == T0 - 30
    assert claims.cnf_x5t_s256 == DESK_CREDS.x5t_s256


def test_issuer_refuses_long_ttl_unbound_workload_and_wrong_cert(issuer, algo_creds, prod_ca) -> None:
    with pytest.raises(TokenError) as info:
        issuer.issue(str(ALGO), AUD, T0, ttl_s=301, cert_der=algo_creds.cert_der)
    assert info.value.reason == "token.lifetime"
    with pytest.raises(TokenError) as info:
        issuer.issue(str(ALGO), AUD, T0)
    assert info.value.reason == "token.unbound"
    other = issue_for_test(prod_ca, SpiffeId.workload(PROD, "trading", "sor"), T0)
    with pytest.raises(TokenError) as info:
        issuer.issue(str(ALGO), AUD, T0, cert_der=other.cert_der)
    assert info.value.reason == "token.sub_mismatch"
    with pytest.raises(TokenError) as info:
        issuer.issue("alice", AUD, T0)
    assert info.value.reason == "token.missing_claim"


# ---------------------------------------------------------------- algorithm attacks


@pytest.mark.parametrize("alg", ["none", "None", "NONE", None])
def test_alg_none_refused(ring, verifier, alg) -> None:
    header = {"alg": alg, "kid": ring.active.kid}
    if alg is None:
        header.pop("alg")
    for signature in ("", b64(b"x")):
        token = f"{seg(header)}.{seg(payload())}.{signature}"
        assert reason(verifier, token) == "token.alg_none"


def test_alg_json_null_refused(ring, verifier) -> None:
    token = f"{seg({'alg': None, 'kid': ring.active.kid})}.{seg(payload())}."
    assert reason(verifier, token) == "token.alg_none"


def test_empty_signature_refused(ring, verifier) -> None:
    token = f"{seg({'alg': 'EdDSA', 'kid': ring.active.kid})}.{seg(payload())}."
    assert reason(verifier, token) == "token.bad_signature"


def _hs256(ring: KeyRing, secret: bytes) -> str:
    signing_input = f"{seg({'alg': 'HS256', 'kid': ring.active.kid, 'typ': 'JWT'})}.{seg(payload())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_hs256_with_the_public_key_refused_in_every_form(ring, verifier) -> None:
    public = ring.active.public_key
    forms = {
        "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk": json.dumps(public_jwk(public, ring.active.kid)).encode(),
        "raw": public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    }
    for form, secret in forms.items():
        assert reason(verifier, _hs256(ring, secret)) == "token.alg_mismatch", form


def test_other_asymmetric_alg_on_our_kid_refused(ring, verifier) -> None:
    token = signed(ring, {"alg": "ES256", "kid": ring.active.kid}, payload())
    assert reason(verifier, token) == "token.alg_mismatch"


def test_unknown_and_missing_kid_refused(ring, verifier) -> None:
    assert reason(verifier, signed(ring, {"alg": "EdDSA", "kid": "nope"}, payload())) == "token.unknown_kid"
    assert reason(verifier, signed(ring, {"alg": "EdDSA"}, payload())) == "token.unknown_kid"


def test_token_signed_by_a_foreign_key_under_our_kid_refused(ring, verifier) -> None:
    rogue = Ed25519PrivateKey.generate()
    signing_input = f"{seg({'alg': 'EdDSA', 'kid': ring.active.kid})}.{seg(payload())}".encode()
    token = signing_input.decode() + "." + b64(rogue.sign(signing_input))
    assert reason(verifier, token) == "token.bad_signature"


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_location_headers_refused(ring, verifier, name) -> None:
    values = {"jku": "https://evil.example/jwks", "x5u": "https://evil.example/c.pem",
              "jwk": public_jwk(Ed25519PrivateKey.generate().public_key(), "evil"), "x5c": ["MIIB"]}
    token = signed(ring, {"alg": "EdDSA", "kid": ring.active.kid, name: values[name]}, payload())
    assert reason(verifier, token) == "token.forbidden_header"


def test_unknown_crit_refused(ring, verifier) -> None:
    token = signed(ring, {"alg": "EdDSA", "kid": ring.active.kid, "crit": ["exp-ext"], "exp-ext": 1}, payload())
    assert reason(verifier, token) == "token.unknown_crit"


# ---------------------------------------------------------------- claims


def _ok(ring, **changes) -> str:
    """A well-signed token bound to ALGO_CREDS unless ``changes`` say otherwise."""
    changes.setdefault("cnf", {"x5t#S256": ALGO_CREDS.x5t_s256})
    return signed(ring, {"alg": "EdDSA", "kid": ring.active.kid}, payload(**changes))


def test_wrong_audience_and_issuer_refused(ring, verifier, algo_creds) -> None:
    assert reason(verifier, _ok(ring), algo_creds.cert_der, aud="spiffe://prod.acme.example/x/y") == "token.wrong_aud"
    assert reason(verifier, _ok(ring, iss="https://evil.example"), algo_creds.cert_der) == "token.wrong_iss"


def test_workload_token_for_an_audience_in_another_trust_domain_refused(ring, verifier, algo_creds) -> None:
    """A prod workload's token naming a dev service (in its aud too) is still refused at that service."""
    dev_oms = "spiffe://dev.acme.example/trading/oms"
    token = _ok(ring, aud=[AUD, dev_oms])
    assert reason(verifier, token, algo_creds.cert_der, aud=dev_oms) == "token.wrong_trust_domain"
    assert verifier.verify(token, AUD, algo_creds.cert_der, now=T0 + 1).sub == str(ALGO)  # its own domain: fine


def test_workload_token_with_a_malformed_spiffe_subject_refused(ring, verifier, algo_creds) -> None:
    """The subject's trust domain is read by the strict SPIFFE parser: an upper-case domain is not ours."""
    for sub in ("spiffe://PROD.acme.example/trading/algo", "spiffe://prod.acme.example//algo"):
        assert reason(verifier, _ok(ring, sub=sub), algo_creds.cert_der) == "token.malformed"


def test_expiry_and_leeway(ring, verifier, algo_creds) -> None:
    token = _ok(ring)
    verifier.verify(token, AUD, algo_creds.cert_der, now=T0 + 300 + 30)  # within leeway
    assert reason(verifier, token, algo_creds.cert_der, now=T0 + 331) == "token.expired"


def test_future_nbf_and_iat_beyond_leeway_refused(ring, verifier, algo_creds) -> None:
    verifier.verify(_ok(ring, nbf=int(T0) + 30), AUD, algo_creds.cert_der, now=T0)
    assert reason(verifier, _ok(ring, nbf=int(T0) + 31), algo_creds.cert_der) == "token.not_yet_valid"
    future = _ok(ring, iat=int(T0) + 40, nbf=int(T0), exp=int(T0) + 300)
    assert reason(verifier, future, algo_creds.cert_der) == "token.iat_future"


def test_missing_exp_and_other_claims_refused(ring, verifier, algo_creds) -> None:
    assert reason(verifier, _ok(ring, exp=...), algo_creds.cert_der) == "token.missing_exp"
    for name in ("jti", "nbf", "iat", "sub"):
        assert reason(verifier, _ok(ring, **{name: ...}), algo_creds.cert_der) == "token.missing_claim", name
    assert reason(verifier, _ok(ring, exp="soon"), algo_creds.cert_der) == "token.missing_claim"


def test_lifetime_over_five_minutes_refused(ring, verifier, algo_creds) -> None:
    assert reason(verifier, _ok(ring, exp=int(T0) + 301), algo_creds.cert_der) == "token.lifetime"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "e30.e30.!!!", "eyJ.e30.AAAA", "%%%.e30.AAAA", "e30.e30.A",
     b64(b"[1,2]") + ".e30.AAAA", b64(b"\xff\xfe") + ".e30.AAAA"],
)
def test_malformed_tokens_refused(verifier, token) -> None:
    assert reason(verifier, token) in ("token.malformed", "token.unknown_kid", "token.alg_none")
    if token.count(".") != 2 or not token.split(".")[0] or "!" in token or "%" in token:
        assert reason(verifier, token) == "token.malformed"


def test_malformed_payload_after_valid_signature_refused(ring, verifier) -> None:
    header = seg({"alg": "EdDSA", "kid": ring.active.kid})
    body = b64(b"not json")
    signing_input = f"{header}.{body}".encode()
    token = signing_input.decode() + "." + b64(ring.active.private_key.sign(signing_input))
    assert reason(verifier, token) == "token.malformed"


def test_oversized_token_refused(ring, verifier) -> None:
    token = _ok(ring, scope="x" * 9000)
    assert reason(verifier, token) == "token.oversized"


# ---------------------------------------------------------------- certificate binding


def test_bound_token_needs_the_same_certificate(issuer, verifier, algo_creds, prod_ca) -> None:
    token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    assert reason(verifier, token, cert_der=None) == "token.cert_required"
    renewed = issue_for_test(prod_ca, ALGO, T0)  # same identity, another certificate
    assert reason(verifier, token, cert_der=renewed.cert_der) == "token.cnf_mismatch"


def test_workload_token_without_cnf_refused(ring, verifier, algo_creds) -> None:
    verifier.verify(_ok(ring), AUD, algo_creds.cert_der, now=T0)
    assert reason(verifier, _ok(ring, cnf=...), algo_creds.cert_der) == "token.unbound"


def test_cnf_for_another_subject_refused(ring, verifier, prod_ca) -> None:
    stolen = issue_for_test(prod_ca, SpiffeId.workload(PROD, "trading", "sor"), T0)
    token = _ok(ring, cnf={"x5t#S256": stolen.x5t_s256})
    assert reason(verifier, token, stolen.cert_der) == "token.sub_mismatch"


def test_revoked_subject_refused(ring, issuer, algo_creds) -> None:
    revocations = RevocationSet()
    verifier = TokenVerifier(ring, ISS, revocations=revocations)
    token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    verifier.verify(token, AUD, algo_creds.cert_der, now=T0)
    revocations.revoke_serial(algo_creds.serial, T0)
    assert reason(verifier, token, algo_creds.cert_der) == "token.revoked"


# ---------------------------------------------------------------- replay, JWKS, rotation, events


def test_replayed_jti_refused(ring, issuer, algo_creds) -> None:
    cache = ReplayCache()
    verifier = TokenVerifier(ring, ISS, replay_cache=cache)
    token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    verifier.verify(token, AUD, algo_creds.cert_der, now=T0)
    assert reason(verifier, token, algo_creds.cert_der) == "token.replayed"


def test_replay_cache_is_bounded_and_fails_closed() -> None:
    cache = ReplayCache(max_entries=2, leeway_s=0)
    cache.check_and_remember("a", T0 + 10, T0)
    cache.check_and_remember("b", T0 + 100, T0)
    with pytest.raises(TokenError) as info:
        cache.check_and_remember("c", T0 + 100, T0)
    assert info.value.reason == "token.replay_cache_full"
    cache.check_and_remember("c", T0 + 100, T0 + 11)  # "a" expired and dropped
    assert len(cache) == 2


def test_jwks_verifies_and_rotation_keeps_old_tokens_valid(algo_creds) -> None:
    store = SqliteIdentityStore()
    clock = FakeClock(T0)
    ring = KeyRing.generate(T0, store, clock=clock)
    issuer = TokenIssuer(ring, ISS)
    old_token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    old_kid = ring.active.kid
    clock.advance(60)
    ring.rotate(T0 + 60)
    new_token = issuer.issue(str(ALGO), AUD, T0 + 60, cert_der=algo_creds.cert_der)
    jwks = ring.jwks()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, ring.active.kid}
    assert all(set(k) - {"exp"} == {"kty", "crv", "x", "kid", "alg", "use"} for k in jwks["keys"])
    assert {k["kid"]: k.get("exp") for k in jwks["keys"]} == {old_kid: int(T0) + 60 + 630, ring.active.kid: None}
    verifier = TokenVerifier(StaticJwks(json.loads(json.dumps(jwks))), ISS)
    assert verifier.verify(old_token, AUD, algo_creds.cert_der, now=T0 + 61).kid == old_kid
    assert verifier.verify(new_token, AUD, algo_creds.cert_der, now=T0 + 61).kid == ring.active.kid
    reloaded = KeyRing(store, clock=clock)
    assert reloaded.active.kid == ring.active.kid
    # long after the retention window the old key is no longer published
    ring.rotate(T0 + 60 + 10_000)
    assert old_kid not in {k["kid"] for k in ring.jwks(T0 + 60 + 10_000)["keys"]}
    with pytest.raises(TokenError):
        TokenVerifier(ring, ISS).verify(old_token, AUD, algo_creds.cert_der, now=T0 + 100)


def test_jwks_with_non_ed25519_key_refused() -> None:
    with pytest.raises(TokenError) as info:
        StaticJwks({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]})
    assert info.value.reason == "token.bad_jwks"


def test_refusals_and_issuance_are_logged(ring, algo_creds) -> None:
    sink = MemorySink()
    emitter = Emitter("idp", sink, FakeClock(T0))
    token = TokenIssuer(ring, ISS, emitter=emitter).issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    verifier = TokenVerifier(ring, ISS, emitter=emitter)
    with pytest.raises(TokenError):
        verifier.verify(token, "spiffe://prod.acme.example/other/svc", algo_creds.cert_der, now=T0)
    assert sink.of_kind(Kind.TOKEN_ISSUED)[0].principal == str(ALGO)
    assert sink.of_kind(Kind.TOKEN_REFUSED)[0].reason == "token.wrong_aud"


def test_certificate_from_another_domain_cannot_bind_prod_token(ring, issuer, dev_ca) -> None:
    dev_id = SpiffeId.workload(DEV, "algo", "momentum")
    dev_creds = issue_for_test(dev_ca, dev_id, T0)
    token = issuer.issue(str(dev_id), AUD, T0, cert_der=dev_creds.cert_der)
    # refused twice over: the token (a dev subject for a prod audience) and the certificate's chain
    assert reason(TokenVerifier(ring, ISS), token, dev_creds.cert_der) == "token.wrong_trust_domain"
    from trustfabric.identity.certs import verify_chain
    from trustfabric.identity.errors import CertificateError

    with pytest.raises(CertificateError) as info:
        verify_chain(dev_creds.certificate, CertificateAuthority.create(PROD, T0).bundle_pem(), T0, PROD)
    assert info.value.reason == "cert.wrong_trust_domain"


# ---------------------------------------------------------------- fuzzing: only typed refusals, never a crash

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_is_refused_with_a_reason(verifier, text) -> None:
    with pytest.raises(TokenError):
        verifier.verify(text, AUD, now=T0)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header_extra=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64", "zip", "cty"]), json_values,
                                    max_size=4),
       body=st.dictionaries(st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "cnf", "amr",
                                             "auth_time"]), json_values, max_size=10))
def test_well_signed_garbage_is_refused_with_a_reason(ring, verifier, header_extra, body) -> None:
    header = {"alg": "EdDSA", "kid": ring.active.kid, **header_extra}
    try:
        verifier.verify(signed(ring, header, body), AUD, presented_cert_der=ALGO_CREDS.cert_der, now=T0)
    except TokenError:
        return
    # whatever passed must really be a valid, bound token for us
    assert body.get("iss") == ISS and body.get("sub") == str(ALGO)


def test_non_finite_and_deeply_nested_claims_refused(ring, verifier) -> None:
    header = seg({"alg": "EdDSA", "kid": ring.active.kid})
    body = b64(json.dumps(payload(cnf={"x5t#S256": ALGO_CREDS.x5t_s256})).replace(
        str(int(T0) + 300), "NaN").encode())
    signing_input = f"{header}.{body}".encode()
    token = signing_input.decode() + "." + b64(ring.active.private_key.sign(signing_input))
    assert reason(verifier, token, ALGO_CREDS.cert_der) == "token.missing_claim"
    deep = b64(b"[" * 3000 + b"]" * 3000)
    signing_input = f"{header}.{deep}".encode()
    token = signing_input.decode() + "." + b64(ring.active.private_key.sign(signing_input))
    assert reason(verifier, token) == "token.malformed"
    assert reason(verifier, "é.e30.AAAA") == "token.malformed"


def test_a_revocation_set_that_cannot_answer_refuses_the_token(ring, issuer, algo_creds) -> None:
    class Unreachable:
        def is_revoked(self, serial: int, spiffe_id: str) -> bool:
            raise OSError("revocation store down")

    verifier = TokenVerifier(ring, ISS, revocations=Unreachable())
    token = issuer.issue(str(ALGO), AUD, T0, cert_der=algo_creds.cert_der)
    assert reason(verifier, token, algo_creds.cert_der) == "token.revoked"
    person = issuer.issue("alice", "console", T0, cert_der=DESK_CREDS.cert_der, amr=["pwd", "otp"], auth_time=T0)
    assert reason(verifier, person, DESK_CREDS.cert_der, aud="console") == "token.revoked"
