"""The sidecar in front of a plain TCP echo server: mTLS, policy on connect, push closes, openssl clients."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time

import pytest

from trustfabric.audit.events import Kind, MemorySink
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.sidecar import Sidecar
from trustfabric.enforcement.tables import StaticTableSource

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.transport.tls import TLSConfig, build_context

from .fakes import FakeTokenVerifier

DOMAIN = "prod.acme.example"
VENUE = f"spiffe://{DOMAIN}/venue/venue-a"
ROUTER = f"spiffe://{DOMAIN}/routing/order-router"
ALGO = f"spiffe://{DOMAIN}/algo/algo-momentum"  # has no rule for the venue: default deny


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    now = time.time()
    prod = CertificateAuthority.create(DOMAIN, now - 60)
    dev = CertificateAuthority.create("dev.acme.example", now - 60)
    creds = {"server": issue_for_test(prod, VENUE, now - 60), "router": issue_for_test(prod, ROUTER, now - 60),
             "algo": issue_for_test(prod, ALGO, now - 60),
             "intruder": issue_for_test(dev, f"spiffe://dev.acme.example/routing/order-router", now - 60)}
    return {name: (c, c.write(out / name)) for name, c in creds.items()}


def server_context(pki) -> ssl.SSLContext:
    return build_context(pki["server"][0], server_side=True)


def client_context(pki, who: str) -> ssl.SSLContext:
    creds, _ = pki[who]
    ctx = build_context(creds, server_side=False)
    if who == "intruder":  # it trusts the prod bundle (to reach the server) but holds a dev certificate
        ctx.load_verify_locations(cadata=pki["server"][0].bundle_pem.decode())
    return ctx


async def echo_server():
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def rig(pki):
    echo, echo_port = await echo_server()
    tables = StaticTableSource.from_mapping({"principals": {ROUTER: [{"action": "connect", "resource": "svc/venue-a"}]}})
    sink = MemorySink()
    pep = EnforcementPoint(VENUE, tables, FakeTokenVerifier(), sink=sink)
    tls = TLSConfig(pki["server"][0])
    sidecar = Sidecar(pep, "svc/venue-a", ("127.0.0.1", echo_port), server_context(pki), tls.verify_peer,
                      handshake_timeout_s=2.0)
    host, port = await sidecar.start("127.0.0.1", 0)
    yield sidecar, port, sink
    await sidecar.close()
    echo.close()
    pep.flush_decisions()
    assert pep.fail_open == 0


async def roundtrip(port, ctx, payload=b"hello venue"):
    """The echoed bytes, or b"" when the sidecar drops the connection (reset or close)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 3)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 3)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


async def test_allowed_peer_is_proxied(rig, pki):
    sidecar, port, sink = rig
    assert await roundtrip(port, client_context(pki, "router")) == b"hello venue"
    decision = [e for e in sink.of_kind(Kind.DECISION)][0]
    assert (decision.principal, decision.action, decision.decision) == (ROUTER, "connect", "allow")


async def test_peer_without_permit_is_dropped(rig, pki):
    sidecar, port, sink = rig
    assert await roundtrip(port, client_context(pki, "algo")) == b""
    [decision] = sink.of_kind(Kind.DECISION)
    assert (decision.principal, decision.decision, decision.reason) == (ALGO, "deny", E.NOT_IN_TABLE)


async def test_other_trust_domain_refused_at_handshake(rig, pki):
    sidecar, port, sink = rig
    assert await roundtrip(port, client_context(pki, "intruder")) == b""
    for _ in range(100):  # bounded wait for the server side to record the refusal
        if sink.of_kind(Kind.HANDSHAKE_REFUSED):
            break
        await asyncio.sleep(0.01)
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED)
    assert not sink.of_kind(Kind.DECISION)


async def test_revoked_certificate_refused_and_live_connection_closed(rig, pki):
    sidecar, port, sink = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, "router"))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(100), 3) == b"ping"
    assert sidecar.pep.revoke_serials([pki["router"][0].serial]) == 1
    assert await asyncio.wait_for(reader.read(100), 3) == b""  # pushed close
    writer.close()
    assert await roundtrip(port, client_context(pki, "router")) == b""
    assert sink.of_kind(Kind.SESSION_REFUSED)[-1].reason == E.SESSION_PEER_REVOKED


async def test_quarantine_closes_proxied_connection(rig, pki):
    sidecar, port, sink = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, "router"))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(100), 3) == b"ping"
    sidecar.pep.quarantine(ROUTER, "quarantine.lateral_movement")
    assert await asyncio.wait_for(reader.read(100), 3) == b""
    writer.close()


# ---------------------------------------------------------------- openssl s_client

OPENSSL = shutil.which("openssl")


async def s_client(port, pki, who, payload=b"from openssl\n"):
    proc = await asyncio.create_subprocess_exec(
        OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-quiet",
        "-cert", str(pki[who][1] / "cert.pem"), "-key", str(pki[who][1] / "key.pem"),
        "-CAfile", str(pki["server"][1] / "bundle.pem"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        proc.stdin.write(payload)
        await proc.stdin.drain()
        out = await asyncio.wait_for(proc.stdout.read(len(payload)), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return out


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_allowed(rig, pki):
    _, port, _ = rig
    assert await s_client(port, pki, "router") == b"from openssl\n"


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_wrong_trust_domain(rig, pki):
    _, port, sink = rig
    assert await s_client(port, pki, "intruder") == b""
    for _ in range(100):
        if sink.of_kind(Kind.HANDSHAKE_REFUSED):
            break
        await asyncio.sleep(0.01)
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_revoked(rig, pki):
    sidecar, port, sink = rig
    sidecar.pep.revoke_certificate(pki["router"][0].fingerprint_sha256)
    assert await s_client(port, pki, "router") == b""
    assert sink.of_kind(Kind.SESSION_REFUSED)[-1].reason == E.SESSION_PEER_REVOKED
