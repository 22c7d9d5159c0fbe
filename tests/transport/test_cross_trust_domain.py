"""A certificate of another trust domain at a real listener: refused, and an alert names who and from where.

The prod listener holds the CA certificates of its sibling domains (dev, test) so that
their chains pass the TLS handshake and reach the identity step, which refuses them by
the issuer's signature (``cert.wrong_trust_domain``) with the presented SPIFFE ID; the
response engine's handshake detector turns that event into a ``lateral.cross_trust_domain``
alert. A CA nobody here knows still fails inside TLS: that alert is keyed by the source.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from trustfabric.audit.events import Kind
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import (
    WorkloadCredentials,
    credentials_from,
    issue_for_test,
    new_key_and_csr,
)
from trustfabric.response.alerts import Category, Severity
from trustfabric.response.detectors import HandshakeDetector
from trustfabric.response.floor_map import FloorMap
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.errors import HandshakeRefused
from trustfabric.transport.tls import TLSConfig

from .conftest import CLIENT_ID, DOMAIN, FAST_LIMITS

DEV = "dev.acme"
DEV_ID = f"spiffe://{DEV}/algo/momentum"


@pytest.fixture(scope="module")
def dev_ca() -> CertificateAuthority:
    return CertificateAuthority.create(DEV, time.time() - 3600, ttl_s=7 * 86400)


@pytest.fixture
def guarded_tls(server_creds, revocation, dev_ca, other_ca) -> TLSConfig:
    """The prod listener's TLS, holding its sibling domains' CAs (dev and test)."""
    siblings = dev_ca.bundle_pem() + other_ca.bundle_pem()
    return TLSConfig(server_creds, revocation=revocation, sibling_bundle_pem=siblings)


def _as_attacker(creds: WorkloadCredentials, trusted_bundle: bytes) -> TLSConfig:
    """A client with ``creds`` that trusts the prod server (only the server's check can refuse it)."""
    return TLSConfig(WorkloadCredentials(cert_pem=creds.cert_pem, key_pem=creds.key_pem, bundle_pem=trusted_bundle),
                     trust_domain=DOMAIN)


async def _echo(conn):
    while True:
        frame = await conn.recv()
        conn.send(frame)


async def _refusal(tls: TLSConfig, client: TLSConfig, emitter, sink):
    async with FrameServer(_echo, tls=tls, emitter=emitter, limits=FAST_LIMITS, name="risk-pretrade") as server:
        with pytest.raises(HandshakeRefused) as info:
            await connect("127.0.0.1", server.port, tls=client, limits=FAST_LIMITS)
        for _ in range(200):
            if sink.of_kind(Kind.HANDSHAKE_REFUSED):
                break
            await asyncio.sleep(0.01)
        assert server.accepted == 0
    [event] = sink.of_kind(Kind.HANDSHAKE_REFUSED)
    return info.value, event


def _alerts(event):
    floor = FloorMap.build({"pretrade": "risk"}, {}, {})
    return HandshakeDetector(floor).observe(event, time.time())


async def test_a_dev_certificate_is_refused_at_the_handshake_and_raises_an_alert_naming_it(
        guarded_tls, server_creds, dev_ca, emitter, sink):
    dev = issue_for_test(dev_ca, DEV_ID, time.time() - 60)
    refused, event = await _refusal(guarded_tls, _as_attacker(dev, server_creds.bundle_pem), emitter, sink)
    assert refused.reason == "cert.wrong_trust_domain"  # the server told the client why, over the TLS session
    assert event.reason == "cert.wrong_trust_domain" and event.decision == "deny"
    assert event.principal == DEV_ID
    source = event.detail["peer_address"]
    assert source.startswith("127.0.0.1:")
    [alert] = _alerts(event)
    assert alert.category == Category.CROSS_TRUST_DOMAIN == "lateral.cross_trust_domain"
    assert alert.principal == DEV_ID and alert.severity in (Severity.HIGH, Severity.CRITICAL)
    assert source in alert.summary and DEV_ID in alert.summary


async def test_a_dev_ca_certificate_carrying_a_prod_spiffe_id_is_refused(guarded_tls, server_creds, dev_ca,
                                                                          emitter, sink):
    """The dev CA's key signs a certificate naming a prod workload: the SAN proves nothing, the signature does."""
    key, csr = new_key_and_csr(CLIENT_ID)
    forged_ca = CertificateAuthority(DOMAIN, list(dev_ca.generations))  # dev's keys, told it is prod
    forged = credentials_from(forged_ca, key, forged_ca.issue(csr, CLIENT_ID, time.time() - 60))
    assert forged.spiffe_id.trust_domain == DOMAIN
    _, event = await _refusal(guarded_tls, _as_attacker(forged, server_creds.bundle_pem), emitter, sink)
    assert event.reason == "cert.wrong_trust_domain"
    assert event.principal == CLIENT_ID  # what it claimed to be
    [alert] = _alerts(event)
    assert alert.category == Category.CROSS_TRUST_DOMAIN and alert.principal == CLIENT_ID


async def test_our_own_workloads_still_pass_a_listener_holding_sibling_cas(guarded_tls, client_tls, emitter, sink):
    async with FrameServer(_echo, tls=guarded_tls, emitter=emitter, limits=FAST_LIMITS) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
        assert str(conn.peer.spiffe_id).startswith(f"spiffe://{DOMAIN}/")
        conn.close()
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED) == []


async def test_an_unknown_ca_fails_inside_tls_and_alerts_keyed_by_source(server_tls, server_creds, emitter, sink):
    stranger_ca = CertificateAuthority.create("prod.elsewhere", time.time() - 3600)
    stranger = issue_for_test(stranger_ca, "spiffe://prod.elsewhere/algo/x", time.time() - 60)
    _, event = await _refusal(server_tls, _as_attacker(stranger, server_creds.bundle_pem), emitter, sink)
    assert event.reason == "cert.wrong_trust_domain" and event.principal == ""
    detector = HandshakeDetector(FloorMap.build({"pretrade": "risk"}, {}, {}))
    [alert] = detector.observe(event, time.time())
    assert alert.category == Category.CROSS_TRUST_DOMAIN and alert.principal == ""
    assert alert.resource == "peer:127.0.0.1" and event.detail["peer_address"] in alert.summary
    assert alert.severity == Severity.LOW  # alert only: there is no principal to contain
    assert detector.observe(event, time.time()) == []  # the same source again: folded


def test_a_sibling_bundle_that_cannot_be_read_is_refused_at_once(server_creds):
    from trustfabric.identity.errors import CertificateError

    with pytest.raises(CertificateError) as info:
        TLSConfig(server_creds, sibling_bundle_pem=b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    assert info.value.reason == "cert.malformed"


async def test_an_issuer_found_once_is_remembered_but_revocation_is_checked_every_time(
        guarded_tls, client_tls, client_creds, revocation, emitter, sink):
    async with FrameServer(_echo, tls=guarded_tls, emitter=emitter, limits=FAST_LIMITS) as server:
        for _ in range(2):
            (await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)).close()
        assert guarded_tls.remembers_issuer(client_creds.fingerprint_sha256)
        revocation.revoke_serial(client_creds.serial, time.time())
        with pytest.raises(HandshakeRefused) as info:
            await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
        assert info.value.reason == "cert.revoked"
