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
from trustfabric.clock import FakeClock
from trustfabric.enforcement.sidecar import DEFAULT_BUSY_POLL_US, BusyPoll, RevocationMirror, Sidecar
from trustfabric.identity.revocation import RevocationSet
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
             "intruder": issue_for_test(dev, "spiffe://dev.acme.example/routing/order-router", now - 60)}
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


@pytest.fixture(params=[DEFAULT_BUSY_POLL_US, 0], ids=["polling", "sleeping"])
async def rig(pki, request):
    """The sidecar as it runs by default (polling), and with --busy-poll-us 0 (every check must hold in both)."""
    echo, echo_port = await echo_server()
    tables = StaticTableSource.from_mapping({"principals": {ROUTER: [{"action": "connect", "resource": "svc/venue-a"}]}})
    sink = MemorySink()
    pep = EnforcementPoint(VENUE, tables, FakeTokenVerifier(), sink=sink)
    tls = TLSConfig(pki["server"][0])
    sidecar = Sidecar(pep, "svc/venue-a", ("127.0.0.1", echo_port), server_context(pki), tls.verify_peer,
                      handshake_timeout_s=2.0, busy_poll_us=request.param)
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


@pytest.mark.slow  # starts an openssl s_client process
@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_allowed(rig, pki):
    _, port, _ = rig
    assert await s_client(port, pki, "router") == b"from openssl\n"


@pytest.mark.slow  # starts an openssl s_client process
@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_wrong_trust_domain(rig, pki):
    _, port, sink = rig
    assert await s_client(port, pki, "intruder") == b""
    for _ in range(100):
        if sink.of_kind(Kind.HANDSHAKE_REFUSED):
            break
        await asyncio.sleep(0.01)
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED)


@pytest.mark.slow  # starts an openssl s_client process
@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
async def test_openssl_revoked(rig, pki):
    sidecar, port, sink = rig
    sidecar.pep.revoke_certificate(pki["router"][0].fingerprint_sha256)
    assert await s_client(port, pki, "router") == b""
    assert sink.of_kind(Kind.SESSION_REFUSED)[-1].reason == E.SESSION_PEER_REVOKED


# ---------------------------------------------------------------- the revocation mirror (store poll, push)


class _Row:
    """A store revocation row as ``IdentityStore.list_revocations`` returns it."""

    def __init__(self, kind, value, reason="revoked", revoked_at=0.0):
        self.kind, self.value, self.reason, self.revoked_at = kind, value, reason, revoked_at


@pytest.fixture
async def mirrored(pki):
    echo, echo_port = await echo_server()
    tables = StaticTableSource.from_mapping({"principals": {ROUTER: [{"action": "connect",
                                                                      "resource": "svc/venue-a"}]}})
    sink = MemorySink()
    clock = FakeClock(time.time())
    mirror = RevocationMirror(RevocationSet(), clock=clock, max_age_s=5.0)
    mirror.load([])
    pep = EnforcementPoint(VENUE, tables, FakeTokenVerifier(), sink=sink)
    pep.attach_revocations(mirror)
    tls = TLSConfig(pki["server"][0], revocation=mirror)
    sidecar = Sidecar(pep, "svc/venue-a", ("127.0.0.1", echo_port), server_context(pki), tls.verify_peer,
                      handshake_timeout_s=2.0)
    _, port = await sidecar.start("127.0.0.1", 0)
    yield mirror, clock, port, sink
    await sidecar.close()
    echo.close()
    assert pep.fail_open == 0


async def test_store_revocation_closes_the_live_connection_and_refuses_the_handshake(mirrored, pki):
    mirror, _clock, port, sink = mirrored
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, "router"))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(100), 3) == b"ping"
    rows = [_Row("serial", str(pki["router"][0].serial))]
    stop = asyncio.Event()
    poll = asyncio.get_running_loop().create_task(mirror.follow_store(lambda: (1, rows), stop, interval_s=0.01))
    assert await asyncio.wait_for(reader.read(100), 3) == b""  # closed by the revocation
    writer.close()
    stop.set()
    await poll
    assert await roundtrip(port, client_context(pki, "router")) == b""
    refused = [e for e in sink.of_kind(Kind.HANDSHAKE_REFUSED) if e.reason == "cert.revoked"]
    assert refused  # at the handshake, before any session


async def test_pushed_quarantine_and_release(mirrored, pki):
    mirror, _clock, port, _sink = mirrored
    mirror.apply("spiffe_id", ROUTER, "quarantine.lateral_movement")
    assert await roundtrip(port, client_context(pki, "router")) == b""
    mirror.apply("release_spiffe_id", ROUTER, "released")
    assert await roundtrip(port, client_context(pki, "router")) == b"hello venue"


async def test_a_stale_mirror_refuses_every_handshake(mirrored, pki):
    mirror, clock, port, sink = mirrored
    clock.advance(6.0)  # no successful read of the store for longer than max_age_s
    assert mirror.stale
    assert await roundtrip(port, client_context(pki, "router")) == b""
    mirror.load([])
    assert await roundtrip(port, client_context(pki, "router")) == b"hello venue"


async def test_a_failing_store_is_counted_and_unknown_kinds_change_nothing(mirrored):
    mirror, _clock, _port, _sink = mirrored

    def broken():
        raise OSError("disk gone")

    stop = asyncio.Event()
    poll = asyncio.get_running_loop().create_task(mirror.follow_store(broken, stop, interval_s=0.01))
    for _ in range(300):  # bounded
        if mirror.store_failures:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await poll
    assert mirror.store_failures >= 1 and mirror.last_error == "OSError"
    assert mirror.load([_Row("jti", "abc"), _Row("serial", "not-a-number")]) == 2
    assert not mirror.is_revoked(1, ROUTER)
    assert mirror.last_error == "revocation.bad_entry"


async def test_busy_polling_keeps_the_loop_awake_only_for_its_window():
    loop = asyncio.get_running_loop()
    poll = BusyPoll(2000)  # 2 ms
    spins = 0
    original = poll._spin

    def counted() -> None:
        nonlocal spins
        spins += 1
        original()

    poll._spin = counted  # type: ignore[method-assign]
    poll.touch()
    poll.touch()  # a second touch while spinning extends the window, it does not start a second spinner
    await asyncio.sleep(0.05)
    assert spins > 1 and not poll._spinning  # it polled, then stopped on its own
    assert poll.polled_s >= 0.002  # at least its window, counted (the sidecar's busy_poll_seconds metric)
    stopped_at = spins
    await asyncio.sleep(0.01)
    assert spins == stopped_at
    off = BusyPoll(0)
    off.touch()
    assert not off._spinning and off.polled_s == 0 and loop.is_running()


def test_the_sidecar_polls_by_default_and_can_be_told_not_to(pki):
    tables = StaticTableSource.from_mapping({"principals": {}})
    pep = EnforcementPoint(VENUE, tables, FakeTokenVerifier(), sink=MemorySink())
    tls = TLSConfig(pki["server"][0])
    default = Sidecar(pep, "svc/venue-a", ("127.0.0.1", 1), server_context(pki), tls.verify_peer)
    off = Sidecar(pep, "svc/venue-a", ("127.0.0.1", 1), server_context(pki), tls.verify_peer, busy_poll_us=0)
    assert default.busy_poll.window_s == DEFAULT_BUSY_POLL_US / 1e6 > 0
    assert off.busy_poll.window_s == 0 and off.stats()["busy_poll_s"] == 0
