"""mTLS over real loopback sockets: the identity extracted, and every refusal as an audit event."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustfabric.audit.events import Kind
from trustfabric.clock import FakeClock
from trustfabric.identity.workload import WorkloadCredentials, issue_for_test
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.errors import HandshakeRefused
from trustfabric.transport.frames import Request, Response
from trustfabric.transport.tls import TLSConfig, build_context, identity_from_der

from .conftest import CLIENT_ID, DOMAIN, FAST_LIMITS, SERVER_ID


async def _echo(conn):
    while True:
        frame = await conn.recv()
        conn.send(Response(rid=frame.rid, ok=True))


async def _start(server_tls, emitter, **kw):
    return await FrameServer(_echo, tls=server_tls, emitter=emitter, limits=FAST_LIMITS, **kw).start()


async def _refused(server, sink, client_tls) -> tuple[str, str]:
    """Connect with ``client_tls``; return (client-side reason, server event reason)."""
    with pytest.raises(HandshakeRefused) as info:
        await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    for _ in range(200):  # the server records the refusal on its own task
        if sink.of_kind(Kind.HANDSHAKE_REFUSED):
            break
        await asyncio.sleep(0.01)
    events = sink.of_kind(Kind.HANDSHAKE_REFUSED)
    assert len(events) == 1, events
    assert events[0].decision == "deny"
    assert server.accepted == 0
    return info.value.reason, events[0].reason


async def test_mutual_tls_extracts_both_identities_and_carries_frames(server_tls, client_tls, emitter, sink):
    server_peers = []

    async def handler(conn):
        server_peers.append(conn.peer)
        await _echo(conn)

    async with FrameServer(handler, tls=server_tls, emitter=emitter, limits=FAST_LIMITS) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls, expected_peer=SERVER_ID)
        conn.send(Request(rid=5, action="a", resource="r"))
        reply = await asyncio.wait_for(conn.recv(), 3)
        assert reply == Response(rid=5, ok=True)
        assert str(conn.peer.spiffe_id) == SERVER_ID
        peer = server_peers[0]
        assert str(peer.spiffe_id) == CLIENT_ID and peer.trust_domain == DOMAIN
        client_cert = client_tls.credentials.current()
        assert peer.fingerprint_sha256 == client_cert.fingerprint_sha256
        assert peer.serial == client_cert.serial and peer.cert_der == client_cert.cert_der
        assert peer.not_after == client_cert.not_after
        conn.close()
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED) == []


def test_contexts_are_tls13_only_and_require_the_peer_certificate(server_creds):
    for server_side in (True, False):
        ctx = build_context(server_creds, server_side=server_side)
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname is False
        assert len(ctx.get_ca_certs()) == 2  # our domain's root and issuing CA, nothing else


async def test_refused_without_client_certificate(server_tls, server_creds, emitter, sink):
    server = await _start(server_tls, emitter)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=server_creds.bundle_pem.decode())
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(100), 3)
            if not data:
                raise ConnectionError("closed")
        writer.close()
        for _ in range(200):
            if sink.of_kind(Kind.HANDSHAKE_REFUSED):
                break
            await asyncio.sleep(0.01)
        [event] = sink.of_kind(Kind.HANDSHAKE_REFUSED)
        assert event.reason == "cert.missing"
        assert server.accepted == 0
    finally:
        await server.close()


async def test_refused_certificate_from_another_trust_domain(server_tls, other_ca, server_creds, emitter, sink):
    foreign = issue_for_test(other_ca, "spiffe://test.acme/algo/momentum", time.time() - 60, ttl_s=3600)
    # The foreign workload trusts our bundle (so that only the server's check can refuse it).
    attacker = WorkloadCredentials(cert_pem=foreign.cert_pem, key_pem=foreign.key_pem,
                                   bundle_pem=server_creds.bundle_pem)
    server = await _start(server_tls, emitter)
    try:
        _, reason = await _refused(server, sink, TLSConfig(attacker, trust_domain=DOMAIN))
        assert reason == "cert.wrong_trust_domain"
    finally:
        await server.close()


async def test_refused_expired_certificate(ca, server_tls, emitter, sink):
    expired = issue_for_test(ca, CLIENT_ID, time.time() - 7200, ttl_s=600)
    server = await _start(server_tls, emitter)
    try:
        # Our client refuses to present it at all; force it to, as a stolen-cert attacker would.
        tls = TLSConfig(expired)
        client_reason_clock = FakeClock(expired.not_after - 10)
        tls.clock = client_reason_clock
        _, reason = await _refused(server, sink, tls)
        assert reason == "cert.expired"
    finally:
        await server.close()


async def test_client_never_presents_its_own_expired_certificate(ca, server_tls, emitter, sink):
    expired = issue_for_test(ca, CLIENT_ID, time.time() - 7200, ttl_s=600)
    server = await _start(server_tls, emitter)
    try:
        with pytest.raises(HandshakeRefused) as info:
            await connect("127.0.0.1", server.port, tls=TLSConfig(expired), limits=FAST_LIMITS)
        assert info.value.reason == "cert.expired"
        await asyncio.sleep(0.05)
        assert sink.of_kind(Kind.HANDSHAKE_REFUSED) == []  # it never reached the server's TLS layer
    finally:
        await server.close()


async def test_refused_not_yet_valid_certificate(ca, server_tls, emitter, sink):
    future = issue_for_test(ca, CLIENT_ID, time.time() + 3600, ttl_s=600)
    server = await _start(server_tls, emitter)
    try:
        _, reason = await _refused(server, sink, TLSConfig(future))
        assert reason == "cert.not_yet_valid"
    finally:
        await server.close()


async def test_validity_is_rechecked_against_the_injected_clock(server_creds, client_tls, revocation, emitter, sink):
    clock = FakeClock(client_tls.credentials.current().not_after + 1)  # the fabric's time says: expired
    server = await _start(TLSConfig(server_creds, revocation=revocation, clock=clock), emitter)
    try:
        client_reason, reason = await _refused(server, sink, client_tls)
        assert reason == client_reason == "cert.expired"
    finally:
        await server.close()


async def test_refused_revoked_certificate_by_serial(server_tls, client_tls, revocation, emitter, sink):
    creds = client_tls.credentials.current()
    revocation.revoke_serial(creds.serial, time.time())
    server = await _start(server_tls, emitter)
    try:
        client_reason, reason = await _refused(server, sink, client_tls)
        assert reason == client_reason == "cert.revoked"
    finally:
        await server.close()


async def test_refused_quarantined_spiffe_id(ca, server_tls, revocation, emitter, sink):
    fresh = issue_for_test(ca, CLIENT_ID, time.time() - 60, ttl_s=600)
    revocation.revoke_spiffe_id(CLIENT_ID, time.time())
    server = await _start(server_tls, emitter)
    try:
        _, reason = await _refused(server, sink, TLSConfig(fresh))
        assert reason == "cert.revoked"
    finally:
        await server.close()


def _two_san_credentials(ca, bundle_pem) -> WorkloadCredentials:
    """A certificate with two URI SANs, signed by our domain's issuing CA key directly (no API issues it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    gen = ca.current
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(gen.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(CLIENT_ID),
            x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/ops/admin"),
        ]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(gen.issuing_key.public_key()),
                       critical=False)  # VERIFY_X509_STRICT refuses a leaf without one
        .sign(gen.issuing_key, hashes.SHA256())
    )
    return WorkloadCredentials(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM) + ca.chain_pem(),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        bundle_pem=bundle_pem,
    )


async def test_refused_certificate_with_two_uri_sans(ca, server_creds, server_tls, emitter, sink):
    two = _two_san_credentials(ca, server_creds.bundle_pem)
    with pytest.raises(Exception):
        two.spiffe_id  # noqa: B018 - the identity plane itself will not read it
    server = await _start(server_tls, emitter)
    try:
        client_reason, reason = await _refused(server, sink, TLSConfig(two, trust_domain=DOMAIN))
        assert reason == client_reason == "cert.san"
    finally:
        await server.close()


async def test_client_refuses_a_server_that_is_not_the_expected_peer(server_tls, client_tls, emitter):
    server = await _start(server_tls, emitter)
    try:
        with pytest.raises(HandshakeRefused) as info:
            await connect("127.0.0.1", server.port, tls=client_tls, expected_peer=f"spiffe://{DOMAIN}/oms/core")
        assert info.value.reason == "cert.unexpected_peer"
    finally:
        await server.close()


def test_identity_check_refuses_a_spiffe_id_of_another_domain_even_if_the_chain_verified(client_creds):
    with pytest.raises(HandshakeRefused) as info:
        identity_from_der(client_creds.cert_der, trust_domain="test.acme", now=time.time())
    assert info.value.reason == "cert.wrong_trust_domain"


def test_a_revocation_set_that_fails_is_a_refusal(client_creds):
    class Broken:
        def is_revoked(self, serial, spiffe_id):
            raise RuntimeError("store down")

    with pytest.raises(HandshakeRefused) as info:
        identity_from_der(client_creds.cert_der, trust_domain=DOMAIN, now=time.time(), revocation=Broken())
    assert info.value.reason == "cert.revoked"
