"""A peer certificate the parser chokes on is a typed handshake refusal (cert.malformed), never a bare exception."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from tests.cert_factory import (
    duplicate_extension_certificate,
    key_for,
    malformed_name_constraint_certificate,
)
from trustfabric.identity.ca import key_to_pem
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.errors import HandshakeRefused
from trustfabric.transport.tls import TLSConfig, identity_from_der

from .conftest import DOMAIN, FAST_LIMITS

MAKERS = [duplicate_extension_certificate, malformed_name_constraint_certificate]


@pytest.mark.parametrize("make", MAKERS)
def test_the_identity_step_refuses_an_unparseable_certificate(make):
    der = make(time.time(), f"spiffe://{DOMAIN}/algo/x").public_bytes(serialization.Encoding.DER)
    with pytest.raises(HandshakeRefused) as info:
        identity_from_der(der, trust_domain=DOMAIN, now=time.time())
    assert info.value.reason == "cert.malformed"


async def _noop(conn):
    await conn.recv()


# OpenSSL will not even load a certificate with a duplicate extension (the server fails the handshake);
# it does serve the malformed name constraint, which only the identity step can refuse.
@pytest.mark.parametrize(("make", "reason"), [(duplicate_extension_certificate, "handshake.failed"),
                                              (malformed_name_constraint_certificate, "cert.malformed")])
async def test_connect_to_a_server_with_such_a_certificate_is_a_handshake_refusal(make, reason, client_creds):
    cert = make(time.time(), f"spiffe://{DOMAIN}/risk/pretrade")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    server_creds = WorkloadCredentials(cert_pem=pem, key_pem=key_to_pem(key_for("rsa2048", 5)), bundle_pem=pem)
    server_tls = TLSConfig(server_creds, trust_domain=DOMAIN)
    # The client trusts that self-signed certificate, so only the identity step stands between.
    client = TLSConfig(WorkloadCredentials(cert_pem=client_creds.cert_pem, key_pem=client_creds.key_pem,
                                           bundle_pem=pem + client_creds.bundle_pem), trust_domain=DOMAIN)
    async with FrameServer(_noop, tls=server_tls, limits=FAST_LIMITS) as server:
        with pytest.raises(HandshakeRefused) as info:
            await connect("127.0.0.1", server.port, tls=client, limits=FAST_LIMITS)
    assert info.value.reason == reason
