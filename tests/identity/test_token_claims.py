"""Claims signed with a valid key are still untrusted input: every value is refused with a reason, never a crash.

The report: ``exp``/``iat`` of ``10**400`` raised OverflowError (``token verify`` printed a
traceback) and a lone surrogate in ``iss`` or in the cnf thumbprint raised UnicodeEncodeError.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from trustfabric.clock import FakeClock
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.errors import TokenError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.tokens import MAX_TOKEN_BYTES, KeyRing, TokenVerifier
from trustfabric.identity.workload import issue_for_test

from .conftest import PROD, T0

ISS = "https://idp.acme.example"
AUD = "spiffe://prod.acme.example/trading/oms"
ALGO = str(SpiffeId.workload(PROD, "algo", "momentum"))
DESK = f"spiffe://{PROD}/desk/desk-1"
_CA = CertificateAuthority.create(PROD, T0 - 10)
ALGO_CREDS = issue_for_test(_CA, ALGO, T0 - 5)
DESK_CREDS = issue_for_test(_CA, DESK, T0 - 5)
RING = KeyRing.generate(T0, clock=FakeClock(T0))
VERIFIER = TokenVerifier(RING, ISS, clock=FakeClock(T0))
SURROGATE = "\ud800"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(body: dict | str, header: dict | None = None) -> str:
    """A compact JWS of ``body`` (an object, or raw JSON text) under the ring's active key."""
    raw = body if isinstance(body, str) else json.dumps(body)  # ensure_ascii: surrogates as \\udXXX escapes
    signing_input = f"{b64(json.dumps(header or {'alg': 'EdDSA', 'kid': RING.active.kid}).encode())}." \
                    f"{b64(raw.encode())}".encode()
    return signing_input.decode() + "." + b64(RING.active.private_key.sign(signing_input))


def workload(**changes) -> dict:
    body = {"iss": ISS, "sub": ALGO, "aud": AUD, "iat": int(T0), "nbf": int(T0), "exp": int(T0) + 300,
            "jti": "j-1", "cnf": {"x5t#S256": ALGO_CREDS.x5t_s256}}
    body.update(changes)
    return body


def person(**changes) -> dict:
    return workload(**{"sub": "user:alice", "amr": ["pwd", "otp"], "auth_time": int(T0),
                       "cnf": {"x5t#S256": DESK_CREDS.x5t_s256}, **changes})


def refusal(token: str, cert_der: bytes | None = ALGO_CREDS.cert_der) -> str:
    with pytest.raises(TokenError) as info:
        VERIFIER.verify(token, AUD, cert_der, now=T0)
    return info.value.reason


def test_the_well_formed_tokens_verify() -> None:
    assert VERIFIER.verify(sign(workload()), AUD, ALGO_CREDS.cert_der, now=T0).sub == ALGO
    assert VERIFIER.verify(sign(person()), AUD, DESK_CREDS.cert_der, now=T0).auth_time == T0


BAD_DATES = [10**400, -(10**400), int(T0) + 0.5, float(int(T0)), -1, True, False, str(int(T0)), None, [], {},
             10**12 * 1000]


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", BAD_DATES, ids=repr)
def test_a_date_that_is_not_whole_seconds_in_range_is_refused(name, value) -> None:
    assert refusal(sign(workload(**{name: value}))) == "token.missing_claim"


@pytest.mark.parametrize("value", BAD_DATES, ids=repr)
def test_a_persons_auth_time_that_is_not_whole_seconds_in_range_is_refused(value) -> None:
    assert refusal(sign(person(auth_time=value)), DESK_CREDS.cert_der) == "token.missing_claim"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_non_finite_and_oversized_number_literals_are_refused(literal) -> None:
    raw = json.dumps(workload(exp="EXP")).replace('"EXP"', literal)
    assert refusal(sign(raw)) in ("token.missing_claim", "token.malformed")


@pytest.mark.parametrize("claims", [
    workload(iss=ISS + SURROGATE), workload(sub=ALGO + SURROGATE), workload(aud=[AUD, SURROGATE]),
    workload(aud=SURROGATE), workload(jti="j" + SURROGATE),
    workload(cnf={"x5t#S256": ALGO_CREDS.x5t_s256[:-1] + SURROGATE}), workload(scope=SURROGATE),
    person(sub="user:" + SURROGATE), person(amr=["pwd", SURROGATE]),
], ids=lambda c: next(k for k, v in c.items() if SURROGATE in json.dumps(v, ensure_ascii=False)))
def test_a_lone_surrogate_in_any_text_claim_is_refused(claims) -> None:
    cert = DESK_CREDS.cert_der if "amr" in claims else ALGO_CREDS.cert_der
    assert refusal(sign(claims), cert) == "token.malformed"


@pytest.mark.parametrize("cnf", [[], "x", 1, True, {}, {"x5t#S256": 7}, {"x5t#S256": ""}, {"x5t#S256": "short"},
                                 {"x5t#S256": ["a"]}])
def test_a_cnf_that_is_not_an_object_with_a_thumbprint_is_refused(cnf) -> None:
    assert refusal(sign(workload(cnf=cnf))) in ("token.malformed", "token.missing_claim")


@pytest.mark.parametrize("changes", [{"aud": []}, {"aud": [1]}, {"aud": {"a": AUD}}, {"amr": "pwd"}, {"amr": []},
                                     {"amr": [1]}, {"scope": 1}, {"scope": ["a"]}, {"sub": 1}, {"jti": ""}])
def test_other_claims_of_the_wrong_shape_are_refused(changes) -> None:
    assert refusal(sign(person(**changes)), DESK_CREDS.cert_der) in ("token.malformed", "token.missing_claim")


def test_a_huge_token_is_refused_before_any_parse() -> None:
    assert refusal(sign(workload(scope="x" * MAX_TOKEN_BYTES))) == "token.oversized"
    assert refusal(sign(workload(aud=[AUD] * 400))) == "token.oversized"


def test_unbound_tokens_and_persons_bound_to_a_workload_are_refused() -> None:
    body = workload()
    del body["cnf"]
    assert refusal(sign(body)) == "token.unbound"
    assert refusal(sign(person(cnf=None)), DESK_CREDS.cert_der) == "token.unbound"
    # a person's token bound (and presented) with a workload's certificate: no desk device
    assert refusal(sign(person(cnf={"x5t#S256": ALGO_CREDS.x5t_s256}))) == "token.not_desk_device"


# ---------------------------------------------------------------- property: only TokenError, whatever the claims

_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
_numbers = (st.integers() | st.sampled_from([10**400, -(10**400), 2**63, int(T0), int(T0) + 300])
            | st.floats(allow_nan=True, allow_infinity=True))
_values = st.recursive(st.none() | st.booleans() | _numbers | _text,
                       lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
                       max_leaves=8)
_claims = st.fixed_dictionaries({}, optional={
    "iss": st.just(ISS) | _values, "sub": st.sampled_from([ALGO, "user:alice"]) | _values,
    "aud": st.just(AUD) | st.just([AUD]) | _values,
    "exp": st.just(int(T0) + 300) | _values, "nbf": st.just(int(T0)) | _values, "iat": st.just(int(T0)) | _values,
    "jti": st.just("j-1") | _values, "auth_time": st.just(int(T0)) | _values,
    "amr": st.just(["pwd", "otp"]) | _values, "scope": _values,
    "cnf": st.sampled_from([{"x5t#S256": ALGO_CREDS.x5t_s256}, {"x5t#S256": DESK_CREDS.x5t_s256}]) | _values,
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=_claims, cert=st.sampled_from([ALGO_CREDS.cert_der, DESK_CREDS.cert_der, None]))
def test_arbitrary_json_claims_signed_with_a_valid_key_only_ever_raise_token_error(claims, cert) -> None:
    try:
        verified = VERIFIER.verify(sign(claims), AUD, cert, now=T0)
    except TokenError as exc:
        assert exc.reason.startswith("token.")
        return
    # whatever passed is a valid token for us, bound to the certificate presented
    assert verified.iss == ISS and AUD in verified.aud and verified.cnf_x5t_s256 is not None
    assert verified.sub in (ALGO, "user:alice")
