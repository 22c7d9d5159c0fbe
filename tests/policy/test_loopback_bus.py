"""The loopback invalidation bus carries invalidations between processes over 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.waiting import wait_until
from trustfabric.policy.decision import Invalidation
from trustfabric.policy.loopback_bus import LoopbackBusClient, LoopbackBusServer


def test_engine_invalidations_reach_a_loopback_subscriber(topology, hub, clock):
    from trustfabric.policy.engine import PolicyEngine

    from .conftest import POLICY_DIR

    with LoopbackBusServer() as server:
        engine = PolicyEngine(topology, hub, bus=server, clock=clock)
        engine.load_dir(POLICY_DIR)
        with LoopbackBusClient(server.address) as client:
            got: list[Invalidation] = []
            done = threading.Event()
            client.subscribe(lambda inv: (got.append(inv), done.set()))
            wait_until(lambda: server.subscriber_count == 1)
            hub.quarantine("algo-momentum", origin="response")
            assert done.wait(5.0)
            assert got[0].principal == topology.spiffe_id("algo-momentum")
            assert got[0].epoch == engine.epoch_of("algo-momentum") and got[0].source == "response"


def test_client_publish_fans_out_through_the_server():
    with LoopbackBusServer() as server, LoopbackBusClient(server.address) as a, LoopbackBusClient(server.address) as b:
        got_b: list[Invalidation] = []
        b.subscribe(got_b.append)
        wait_until(lambda: server.subscriber_count == 2)
        a.publish(Invalidation(None, 0, 7, "policy.loaded", "test"))
        wait_until(lambda: len(got_b) == 1)
        assert got_b[0].global_epoch == 7


def test_malformed_and_oversized_frames_do_not_crash_the_server():
    with LoopbackBusServer() as server, LoopbackBusClient(server.address) as good:
        got: list[Invalidation] = []
        good.subscribe(got.append)
        raw = socket.create_connection(server.address, timeout=2)
        raw.sendall(b'{"principal": 5}\nnot json\n')
        wait_until(lambda: server.malformed == 2)
        raw.sendall(b"x" * (70 * 1024))
        wait_until(lambda: server.subscriber_count == 1)  # the oversized sender was dropped
        raw.close()
        server.publish(Invalidation("p", 1, 0, "signal.risk", "test"))
        wait_until(lambda: len(got) == 1)


def test_subscriber_learns_when_the_bus_goes_away():
    server = LoopbackBusServer()
    client = LoopbackBusClient(server.address)
    lost = threading.Event()
    client.on_disconnect(lost.set)
    wait_until(lambda: server.subscriber_count == 1)
    server.close()
    assert lost.wait(5.0) and not client.connected
    client.close()


def test_server_listens_on_loopback_only():
    with pytest.raises(ValueError):
        LoopbackBusServer(host="0.0.0.0")


@pytest.mark.slow
def test_invalidation_crosses_a_process_boundary():
    with LoopbackBusServer() as server:
        code = (
            "import sys\n"
            "from trustfabric.policy.loopback_bus import LoopbackBusClient\n"
            "import threading\n"
            "done = threading.Event()\n"
            f"c = LoopbackBusClient(('127.0.0.1', {server.address[1]}))\n"
            "c.subscribe(lambda inv: (print(inv.principal, inv.epoch, flush=True), done.set()))\n"
            "print('ready', flush=True)\n"
            "sys.exit(0 if done.wait(10) else 3)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            wait_until(lambda: server.subscriber_count == 1)
            server.publish(Invalidation("spiffe://prod.acme.example/oms/oms", 4, 1, "signal.posture", "agent"))
            out, _ = proc.communicate(timeout=10)
            assert proc.returncode == 0 and out.strip() == "spiffe://prod.acme.example/oms/oms 4"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
