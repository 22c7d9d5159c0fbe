"""The control server's refusals over real sockets on 127.0.0.1: mode pairing, reports and subscriptions
only for the caller's own service."""

import asyncio
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustfabric.clock import FakeClock
from trustfabric.control import client as control_client
from trustfabric.control.errors import ControlRefused
from trustfabric.control.plane import ControlPlane
from trustfabric.control.protocol import Report
from trustfabric.control.server import ControlServer
from trustfabric.errors import ConfigError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

DIGEST = "ab" * 32

pytestmark = pytest.mark.timeout(30)


@pytest.fixture()
def plane(tmp_path):
    cp = ControlPlane(tmp_path)  # the system clock: real TLS handshakes check real validity
    cp.promote("venue-a", DIGEST)
    yield cp
    cp.close()


@pytest.mark.parametrize("with_plane, mode", [(False, "zero-trust"), (True, "perimeter"), (True, "zerotrust"),
                                               (False, "")])
def test_a_mode_without_its_plane_is_refused(plane, with_plane, mode):
    with pytest.raises(ConfigError) as err:
        ControlServer(plane if with_plane else None, mode=mode)
    assert err.value.reason == "config.control.mode"


async def _venue_a_client(plane, server) -> control_client.ControlClient:
    creds, reply = await control_client.join(
        "127.0.0.1", server.bootstrap_port, bundle_pem=plane.credentials.bundle_pem, control_id=plane.control_id,
        join_token=plane.issue_join_token("venue-a"), spiffe_id=plane.spiffe_id("venue-a"), code_digest=DIGEST,
        posture=plane.posture_report("venue-a"))
    tls = TLSConfig(RotatingCredentials(creds), revocation=RevocationSet())
    return control_client.ControlClient("127.0.0.1", server.control_port, tls, reply.control_id, "venue-a")


async def test_subscribing_as_another_service_is_refused(plane):
    server = await ControlServer(plane).start()
    try:
        impostor = await _venue_a_client(plane, server)
        impostor.service = "venue-b"
        with pytest.raises(ControlRefused) as err:
            await impostor.start()
        assert err.value.reason == "control.not_owner"
        assert "venue-b" not in server.subscribers or not server.subscribers["venue-b"]
    finally:
        await server.close()


async def test_a_report_about_another_service_is_refused_and_not_kept(plane):
    server = await ControlServer(plane).start()
    try:
        venue = await _venue_a_client(plane, server)
        await venue.start()
        venue.report(Report(service="venue-a", stats={"fail_open": 0.0}))
        venue.report(Report(service="venue-b", stats={"fail_open": 0.0, "pep_denied": 0.0}))
        for _ in range(100):
            if venue.conn.closed:
                break
            await asyncio.sleep(0.02)
        assert venue.conn.closed
        assert "venue-a" in server.stats and "venue-b" not in server.stats
    finally:
        await server.close()


async def test_after_the_plane_renews_its_certificate_both_endpoints_present_the_new_one(tmp_path):
    """A floor outlives the plane's own certificate: the bootstrap and control endpoints switch to the
    renewed one for every new handshake, without a restart."""
    clock = FakeClock(time.time() - 8)
    cp = ControlPlane(tmp_path, clock=clock, leaf_ttl_s=15)
    cp.promote("venue-a", DIGEST)
    server = await ControlServer(cp).start()
    try:
        first = cp.credentials
        clock.advance(8)  # past half of its 15 s
        assert cp.rotate_own_certificate()
        renewed = cp.credentials
        assert renewed.fingerprint_sha256 != first.fingerprint_sha256
        client = await _venue_a_client(cp, server)  # a join over the bootstrap endpoint after the renewal
        await client.start()
        assert client.conn.peer.fingerprint_sha256 == renewed.fingerprint_sha256
        client.close()
        ctx = ssl.create_default_context(cadata=renewed.bundle_pem.decode())
        ctx.check_hostname = False  # the identity is the SPIFFE ID in the certificate
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.bootstrap_port, ssl=ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM) in renewed.cert_pem
        writer.close()
    finally:
        await server.close()
        cp.close()
