"""verify_chain refuses a certificate exactly when a real listener of the fabric refuses it at the handshake.

The listener is a :class:`FrameServer` on 127.0.0.1 with the fabric's TLS (build_context:
TLS 1.3, strict X.509, our bundle) and its identity step; the client is a plain ``ssl``
client that presents whatever chain it is given (security level 0, so that it can hold
weak keys and SHA-1 certificates at all). Hand-made chains (tests/cert_factory.py) vary
basic constraints and path length, key usage, EKU, an unknown critical extension, key
type and size, signature hash, validity, key identifiers, SAN and the issuer chain.

Outside the generated domain, on purpose: P-224 keys on CA certificates and name
constraints or certificate policies (OpenSSL takes them, verify_chain refuses them) -
see :mod:`trustfabric.identity.certs`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import tempfile
import time

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cert_factory import CertSpec, Chain, ca_spec, make_chain
from trustfabric.identity.certs import verify_chain
from trustfabric.identity.errors import CertificateError
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.transport.connection import FrameServer
from trustfabric.transport.tls import TLSConfig

from .conftest import DOMAIN, FAST_LIMITS

SID = f"spiffe://{DOMAIN}/algo/momentum"
ACCEPTED = "accepted"


def _pem(certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _client_context(chain: Chain) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only the server's verdict is under test
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client hold what a careless or hostile one would
    key_pem = chain.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    with tempfile.TemporaryDirectory(prefix="tf-prop-") as tmp:
        cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_path, "wb") as fh:
            fh.write(_pem((chain.leaf, *chain.intermediates)))
        with open(key_path, "wb") as fh:
            fh.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


async def _listener_verdict(chain: Chain, server_creds) -> str:
    """``accepted`` or the listener's refusal reason, for a client presenting ``chain``."""
    creds = WorkloadCredentials(cert_pem=server_creds.cert_pem, key_pem=server_creds.key_pem,
                                bundle_pem=_pem([chain.root]))
    tls = TLSConfig(creds, trust_domain=DOMAIN)

    async def hold(conn):
        await conn.recv()

    async with FrameServer(hold, tls=tls, limits=FAST_LIMITS) as server:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=_client_context(chain))
        except (ssl.SSLError, OSError):
            writer = None  # a handshake the server broke off early: its verdict is below
        for _ in range(300):
            if server.accepted or server.refusals:
                break
            await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()
        if server.accepted:
            return ACCEPTED
        assert server.refusals, "the listener gave no verdict"
        return next(iter(server.refusals))


def _verify_chain_verdict(chain: Chain, now: float) -> str:
    try:
        verify_chain(chain.leaf, [chain.root], now, DOMAIN, intermediates=chain.intermediates)
    except CertificateError as exc:
        return exc.reason
    return ACCEPTED


def _verdicts(chain: Chain, server_creds, now: float) -> tuple[str, str]:
    return _verify_chain_verdict(chain, now), asyncio.run(_listener_verdict(chain, server_creds))


# -- the property ------------------------------------------------------------------------

GOOD_KEYS = ("ec256", "ec384", "ed25519", "rsa2048")
# Each mutation takes one field of one certificate away from a good chain: these are the values tried.
CA_MUTATIONS = {
    "key": ("rsa1024", "ec521"),
    "hash": ("sha1", "sha224", "sha384", "sha512"),
    "ca": (False, None),
    "path_length": (0, 1),
    "bc_critical": (False,),
    "key_usage": (("digital_signature", "crl_sign"), None, ("key_cert_sign",)),
    "eku": (("client",), ("server",), ("code",), ("client", "server")),
    "unknown_critical": (True,),
    "validity": ("expired", "not_yet_valid"),
    "ski": (False,),
    "aki": (False,),
}
LEAF_MUTATIONS = {
    "key": ("rsa1024", "ec224", "ec521"),
    "hash": ("sha1", "sha224", "sha384", "sha512"),
    "ca": (None, True),
    "key_usage": (("key_encipherment",), ("key_agreement",), None, ("digital_signature", "key_encipherment"),
                  ("digital_signature", "key_cert_sign")),
    "eku": (None, ("client",), ("server",), ("code",)),
    "unknown_critical": (True,),
    "validity": ("expired", "not_yet_valid"),
    "ski": (False,),
    "aki": (False,),
    "uris": ((SID, f"spiffe://{DOMAIN}/ops/admin"), ("spiffe://dev.acme/algo/x",), ()),
}


def _replace(spec: CertSpec, **changes) -> CertSpec:
    return CertSpec(**{**spec.__dict__, **changes})


def _sha1_only_under_rsa(specs: list[CertSpec]) -> list[CertSpec]:
    """SHA-1 certificates can be made under an RSA issuer only (elsewhere: SHA-256); a root's hash is its own."""
    fixed = [specs[0]]
    for issuer, spec in itertools.pairwise(specs):
        if spec.hash == "sha1" and not issuer.key.startswith("rsa"):
            spec = _replace(spec, hash="sha256")
        fixed.append(spec)
    if fixed[0].hash == "sha1" and not fixed[0].key.startswith("rsa"):
        fixed[0] = _replace(fixed[0], hash="sha256")
    return fixed


@st.composite
def _chains(draw) -> tuple[CertSpec, tuple[CertSpec, ...], CertSpec]:
    """A good chain (root, 0-2 intermediates, leaf) with 0-3 of its fields mutated."""
    depth = draw(st.integers(0, 2))
    specs = [ca_spec(key=draw(st.sampled_from(GOOD_KEYS))) for _ in range(depth + 1)]
    specs.append(CertSpec(key=draw(st.sampled_from(GOOD_KEYS)), uris=(SID,)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(specs) - 1))
        table = LEAF_MUTATIONS if at == len(specs) - 1 else CA_MUTATIONS
        field = draw(st.sampled_from(sorted(table)))
        specs[at] = _replace(specs[at], **{field: draw(st.sampled_from(table[field]))})
    specs = _sha1_only_under_rsa(specs)
    return specs[0], tuple(specs[1:-1]), specs[-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs=_chains())
def test_verify_chain_refuses_exactly_what_the_listener_refuses(specs, server_creds):
    root, intermediates, leaf = specs
    now = time.time()
    chain = make_chain(root, intermediates, leaf, now)
    ours, listener = _verdicts(chain, server_creds, now)
    assert (ours == ACCEPTED) == (listener == ACCEPTED), (ours, listener, specs)


# -- the issue's cases, one by one, at both --------------------------------------------

GOOD_LEAF = CertSpec(uris=(SID,))
CASES = {
    "a CA below a pathlen:0 CA": (ca_spec(path_length=0), (ca_spec(),), GOOD_LEAF),
    "an intermediate without keyCertSign": (ca_spec(), (ca_spec(key_usage=("digital_signature", "crl_sign")),),
                                            GOOD_LEAF),
    "an unknown critical extension": (ca_spec(), (), CertSpec(uris=(SID,), unknown_critical=True)),
    "a serverAuth-only EKU as a client": (ca_spec(), (), CertSpec(uris=(SID,), eku=("server",))),
    "an RSA-1024 key": (ca_spec(), (), CertSpec(uris=(SID,), key="rsa1024")),
    "a keyEncipherment-only leaf": (ca_spec(), (), CertSpec(uris=(SID,), key_usage=("key_encipherment",))),
    "a SHA-1 signature": (ca_spec(key="rsa2048"), (), CertSpec(uris=(SID,), hash="sha1")),
    "a CA without critical basicConstraints": (ca_spec(), (ca_spec(bc_critical=False),), GOOD_LEAF),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_of_the_issue_is_refused_by_verify_chain_and_by_the_listener(case, server_creds):
    root, intermediates, leaf = CASES[case]
    now = time.time()
    ours, listener = _verdicts(make_chain(root, intermediates, leaf, now), server_creds, now)
    assert ours != ACCEPTED and listener != ACCEPTED, (ours, listener)


def test_a_good_hand_made_chain_is_accepted_by_both(server_creds):
    now = time.time()
    chain = make_chain(ca_spec(path_length=1), (ca_spec(path_length=0),), GOOD_LEAF, now)
    assert _verdicts(chain, server_creds, now) == (ACCEPTED, ACCEPTED)
