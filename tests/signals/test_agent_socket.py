"""Host posture agents on Unix sockets: a fresh report signed by the host's key, to this user's processes only."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pytest

from tests.waiting import eventually
from trustfabric.errors import SignalError
from trustfabric.signals.agent_socket import PostureAgentServer, fetch_report
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import HostKeyRegistry, decode_signed, verify_report


@pytest.fixture
async def agents(tmp_path):
    registry = HostKeyRegistry()
    hosts = {h: HostPostureAgent(h) for h in ("oms", "venue-a")}
    for agent in hosts.values():
        agent.register(registry)
    server = await PostureAgentServer(hosts, tmp_path / "run" / "posture").start()
    yield server, registry
    await server.close()


async def test_each_host_serves_a_fresh_report_signed_by_its_own_key(agents):
    server, registry = agents
    for host in ("oms", "venue-a"):
        before = time.time()
        report = verify_report(decode_signed(await fetch_report(server.paths[host])), registry)
        assert report.host == host and report.issued_at >= before - 1  # made now, not at boot
    first = verify_report(decode_signed(await fetch_report(server.paths["oms"])), registry)
    await asyncio.sleep(0.05)
    second = verify_report(decode_signed(await fetch_report(server.paths["oms"])), registry)
    assert second.issued_at > first.issued_at  # every request gets its own report


async def test_sockets_are_private_to_the_user(agents):
    server, _ = agents
    assert stat.S_IMODE(os.stat(server.directory).st_mode) == 0o700
    for path in server.paths.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a_bad_request_gets_nothing(agents):
    server, _ = agents
    reader, writer = await asyncio.open_unix_connection(str(server.paths["oms"]))
    writer.write(b"GIVE ME THE KEY\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    await eventually(lambda: server.refused == 1)


async def test_no_agent_no_report(tmp_path):
    with pytest.raises(SignalError) as info:
        await fetch_report(tmp_path / "nobody.sock", timeout_s=1.0)
    assert info.value.reason == "posture.agent_unreachable"


async def test_garbage_from_the_socket_is_refused(tmp_path):
    async def liar(reader, writer):
        await reader.readline()
        writer.write(b"\x00\x00\x00\x05hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(liar, path=str(tmp_path / "liar.sock"))
    try:
        with pytest.raises(SignalError) as info:
            await fetch_report(tmp_path / "liar.sock", timeout_s=2.0)
        assert info.value.reason == "posture.malformed"
    finally:
        server.close()


async def test_a_run_directory_too_long_for_a_socket_address_gets_a_private_short_one(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "run" / "posture"
    server = await PostureAgentServer({"pre-trade-risk": HostPostureAgent("pre-trade-risk")}, deep).start()
    try:
        path = server.paths["pre-trade-risk"]
        assert len(str(path)) < 100 and path.parent.stat().st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert await fetch_report(path)
    finally:
        await server.close()
    assert not path.exists()


async def test_connections_beyond_the_in_flight_cap_are_refused_and_counted(agents):
    from trustfabric.signals.agent_socket import MAX_IN_FLIGHT

    server, registry = agents
    idle = [await asyncio.open_unix_connection(str(server.paths["oms"])) for _ in range(MAX_IN_FLIGHT + 5)]
    await eventually(lambda: server.refused_busy == 5)
    for _reader, writer in idle:
        writer.close()
    await eventually(lambda: server.in_flight == 0)
    report = verify_report(decode_signed(await fetch_report(server.paths["oms"])), registry)
    assert report.host == "oms"  # served again once the flood is gone
