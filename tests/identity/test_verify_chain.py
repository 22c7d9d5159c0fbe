"""verify_chain checks what the TLS layer checks, each refusal with its own reason; no certificate crashes a parse.

One example per defect: each hand-made chain differs from a good one in one field
(tests/cert_factory.py). The same chains at a real listener: tests/transport/test_cert_property.py.
"""

from __future__ import annotations

import pytest

from tests.cert_factory import (
    CertSpec,
    ca_spec,
    duplicate_extension_certificate,
    make_chain,
    malformed_name_constraint_certificate,
)
from trustfabric.identity.certs import (
    SERVER,
    check_workload_certificate,
    load_certificate,
    peer_spiffe_id,
    read_certificate,
    verify_chain,
)
from trustfabric.identity.errors import CertificateError

from .conftest import PROD, T0

SID = f"spiffe://{PROD}/trading/algo-momentum"
LEAF = CertSpec(uris=(SID,))


def _verdict(root: CertSpec | None = None, intermediates: tuple[CertSpec, ...] = (), leaf: CertSpec = LEAF,
             **kw) -> str:
    chain = make_chain(root or ca_spec(), intermediates, leaf, T0)
    try:
        verify_chain(chain.leaf, [chain.root], T0, PROD, intermediates=chain.intermediates, **kw)
    except CertificateError as exc:
        return exc.reason
    return "accepted"


def test_a_good_chain_with_intermediates_is_accepted() -> None:
    assert _verdict(ca_spec(path_length=1), (ca_spec(path_length=0),)) == "accepted"
    assert _verdict(ca_spec(), (ca_spec(), ca_spec())) == "accepted"  # no path length: no limit


def test_a_ca_below_a_pathlen_0_ca_is_refused() -> None:
    assert _verdict(ca_spec(path_length=0), (ca_spec(),)) == "cert.path_length"
    assert _verdict(ca_spec(path_length=1), (ca_spec(), ca_spec())) == "cert.path_length"


def test_an_intermediate_without_keycertsign_is_refused() -> None:
    assert _verdict(intermediates=(ca_spec(key_usage=("digital_signature", "crl_sign")),)) == "cert.key_usage"
    assert _verdict(intermediates=(ca_spec(key_usage=None),)) == "cert.key_usage"


def test_an_issuer_that_is_no_ca_is_refused() -> None:
    assert _verdict(intermediates=(ca_spec(ca=False),)) == "cert.basic_constraints"
    assert _verdict(intermediates=(ca_spec(ca=None),)) == "cert.basic_constraints"
    assert _verdict(intermediates=(ca_spec(bc_critical=False),)) == "cert.basic_constraints"


def test_an_unknown_critical_extension_is_refused_on_leaf_and_issuer() -> None:
    assert _verdict(leaf=CertSpec(uris=(SID,), unknown_critical=True)) == "cert.critical_extension"
    assert _verdict(ca_spec(unknown_critical=True)) == "cert.critical_extension"


def test_a_serverauth_only_certificate_is_refused_as_a_client() -> None:
    server_only = CertSpec(uris=(SID,), eku=("server",))
    assert _verdict(leaf=server_only) == "cert.eku"
    assert _verdict(leaf=server_only, role=SERVER) == "accepted"
    assert _verdict(leaf=CertSpec(uris=(SID,), eku=("client",)), role=SERVER) == "cert.eku"
    assert _verdict(ca_spec(eku=("server",))) == "cert.eku"  # an issuer's EKU constrains too


def test_an_rsa_1024_key_is_refused_leaf_or_issuer() -> None:
    assert _verdict(leaf=CertSpec(uris=(SID,), key="rsa1024")) == "cert.weak_key"
    assert _verdict(ca_spec(key="rsa1024")) == "cert.weak_key"
    assert _verdict(leaf=CertSpec(uris=(SID,), key="rsa2048")) == "accepted"
    assert _verdict(leaf=CertSpec(uris=(SID,), key="ed25519")) == "accepted"


def test_a_p224_key_is_refused() -> None:
    assert _verdict(ca_spec(key="ec224")) == "cert.weak_key"


def test_a_key_encipherment_only_leaf_is_refused() -> None:
    assert _verdict(leaf=CertSpec(uris=(SID,), key_usage=("key_encipherment",))) == "cert.key_usage"
    assert _verdict(leaf=CertSpec(uris=(SID,), key_usage=("key_agreement",))) == "cert.key_usage"
    assert _verdict(leaf=CertSpec(uris=(SID,), key_usage=("digital_signature", "key_cert_sign"))) == "cert.key_usage"


def test_a_sha1_signature_is_refused_below_the_anchor_only() -> None:
    rsa_root = ca_spec(key="rsa2048")
    assert _verdict(rsa_root, leaf=CertSpec(uris=(SID,), hash="sha1")) == "cert.weak_signature"
    assert _verdict(rsa_root, (ca_spec(hash="sha1"),)) == "cert.weak_signature"
    assert _verdict(ca_spec(key="rsa2048", hash="sha1")) == "accepted"  # OpenSSL ignores an anchor's self-signature
    assert _verdict(leaf=CertSpec(uris=(SID,), hash="sha224")) == "cert.weak_signature"


def test_missing_key_identifiers_are_refused() -> None:
    assert _verdict(leaf=CertSpec(uris=(SID,), aki=False)) == "cert.key_identifier"
    assert _verdict(ca_spec(ski=False)) == "cert.key_identifier"


def test_expired_issuers_are_refused() -> None:
    assert _verdict(ca_spec(validity="expired")) == "cert.expired"
    assert _verdict(intermediates=(ca_spec(validity="not_yet_valid"),)) == "cert.not_yet_valid"


# -- certificates the parser chokes on --------------------------------------------------

@pytest.mark.parametrize("make", [duplicate_extension_certificate, malformed_name_constraint_certificate])
def test_a_certificate_the_parser_chokes_on_is_a_malformed_refusal_everywhere(make) -> None:
    cert = make(T0, SID)
    with pytest.raises(Exception) as raw:  # what the foreign parser does with it
        cert.extensions  # noqa: B018
    assert not isinstance(raw.value, CertificateError)
    for check in (read_certificate, peer_spiffe_id,
                  lambda c: check_workload_certificate(c, T0, PROD),
                  lambda c: verify_chain(c, [c], T0, PROD)):
        with pytest.raises(CertificateError) as info:
            check(cert)
        assert info.value.reason == "cert.malformed"


def test_garbage_der_is_malformed() -> None:
    with pytest.raises(CertificateError) as info:
        load_certificate(b"\x30\x03\x02\x01\x01")
    assert info.value.reason == "cert.malformed"
