"""Every listener tells a refused TLS client why, with the alert OpenSSL chose, instead of dropping TCP.

A client without a certificate reads ``certificate_required``; one whose chain is
another CA's reads ``unknown_ca``; one whose certificate has expired reads
``certificate_expired``. Checked on the framed floor listener (``FrameServer``),
the edge listener (``StreamListener``: FIX gateway, control bootstrap), the
sidecar, and the FIX gateway itself behind its real edge port.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest

from trustfabric.audit.events import MemorySink
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.sidecar import Sidecar
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.identity.workload import WorkloadCredentials, issue_for_test
from trustfabric.transport.connection import FrameServer
from trustfabric.transport.listener import StreamListener
from trustfabric.transport.tls import TLSConfig, build_context

from tests.trading.fix_edge_harness import GatewayHarness

from ..enforcement.fakes import FakeTokenVerifier

REQUIRED = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
UNKNOWN_CA = "TLSV1_ALERT_UNKNOWN_CA"
EXPIRED = "SSLV3_ALERT_CERTIFICATE_EXPIRED"


def _no_cert_context(bundle_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    return ctx


def _client_context(creds, server_bundle_pem: bytes) -> ssl.SSLContext:
    ctx = build_context(creds, server_side=False)
    ctx.load_verify_locations(cadata=server_bundle_pem.decode())  # it trusts the server, whatever it holds
    return ctx


def _alert(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS alert the server sent (the SSL error's reason), or what happened instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"hello")
                data = tls.recv(100)
                return f"no alert: read {data!r}"
        except ssl.SSLError as exc:
            return exc.reason or str(exc)
        except OSError as exc:
            return f"no alert: {type(exc).__name__}"


async def alert(port: int, ctx: ssl.SSLContext) -> str:
    return await asyncio.to_thread(_alert, port, ctx)


@pytest.fixture(scope="module")
def outsiders(ca, other_ca):
    now = time.time()
    return {"foreign": issue_for_test(other_ca, "spiffe://test.acme/algo/momentum", now - 60, ttl_s=3600),
            "expired": issue_for_test(ca, "spiffe://prod.acme/algo/momentum", now - 7200, ttl_s=3600)}


async def _check_all(port: int, bundle_pem: bytes, outsiders) -> None:
    assert await alert(port, _no_cert_context(bundle_pem)) == REQUIRED
    assert await alert(port, _client_context(outsiders["foreign"], bundle_pem)) == UNKNOWN_CA
    assert await alert(port, _client_context(outsiders["expired"], bundle_pem)) == EXPIRED


async def test_the_frame_server_sends_the_alert(server_tls, server_creds, outsiders):
    async def nothing(conn):
        await conn.recv()

    server = await FrameServer(nothing, tls=server_tls, name="venue").start()
    try:
        await _check_all(server.port, server_creds.bundle_pem, outsiders)
        assert server.refusals["cert.missing"] == 1 and server.refusals["cert.expired"] == 1
    finally:
        await server.close()


async def test_the_stream_listener_sends_the_alert_and_reports_the_refusal(server_tls, server_creds, outsiders):
    refused = []

    async def nothing(stream):
        await stream.read(1)

    listener = await StreamListener(nothing, context=lambda: server_tls.context(server_side=True)[0],
                                    on_refuse=lambda r, d, a, p: refused.append(r)).start()
    try:
        await _check_all(listener.port, server_creds.bundle_pem, outsiders)
    finally:
        await listener.close()
    assert refused == ["cert.missing", "cert.wrong_trust_domain", "cert.expired"]


async def test_the_sidecar_sends_the_alert(server_creds, outsiders):
    async def echo(reader, writer):
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    sink = MemorySink()
    pep = EnforcementPoint(str(server_creds.spiffe_id), StaticTableSource.from_mapping({"principals": {}}),
                           FakeTokenVerifier(), sink=sink)
    tls = TLSConfig(server_creds)
    sidecar = Sidecar(pep, "svc/pretrade", ("127.0.0.1", upstream.sockets[0].getsockname()[1]),
                      lambda: tls.context(server_side=True)[0], tls.verify_peer)
    _, port = await sidecar.start("127.0.0.1", 0)
    try:
        await _check_all(port, server_creds.bundle_pem, outsiders)
        assert sidecar.refused == 3
    finally:
        await sidecar.close()
        upstream.close()


async def test_the_fix_gateway_sends_the_alert(tmp_path, outsiders):
    async with GatewayHarness(tmp_path) as gw:
        edge = WorkloadCredentials.load(gw.edge["fix_edge_dir"])
        assert await alert(gw.port, _no_cert_context(edge.bundle_pem)) == REQUIRED
        assert await alert(gw.port, _client_context(outsiders["foreign"], edge.bundle_pem)) == UNKNOWN_CA
        assert gw.service.counters["fix_tls_refusals"] == 2
