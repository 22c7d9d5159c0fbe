"""``trustfabric sidecar`` as a real process in front of a plain TCP echo server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.people import PASSWORD, Pool
from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.commands.sidecar import _follow_control_plane
from trustfabric.control.protocol import (
    CONTROL_CODEC, PushInvalidation, PushRevocation, RevocationSnapshot, Subscribe, Subscribed,
)
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.sidecar import RevocationMirror
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.users import UserDirectory
from trustfabric.policy.decision import QUARANTINE, Invalidation
from trustfabric.transport.connection import FrameServer
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import issue_for_test
from trustfabric.transport.tls import PeerIdentity, TLSConfig, build_context

DOMAIN = "prod.acme.example"
VENUE = f"spiffe://{DOMAIN}/venue/venue-a"
ROUTER = f"spiffe://{DOMAIN}/routing/order-router"
ALGO = f"spiffe://{DOMAIN}/algo/algo-momentum"
CONTROL = f"spiffe://{DOMAIN}/control/control-plane"
POLICIES = Path(__file__).resolve().parents[2] / "policies"


def echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


METRICS_URL: dict[int, str] = {}  # sidecar port -> its Prometheus endpoint (printed at start)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "300", "TRUSTFABRIC_HOME": str(tmp_path / "home")}


@contextlib.contextmanager
def running_sidecar(tmp_path: Path, echo_port: int, events: Path):
    """``trustfabric sidecar`` as a process under ``tmp_path/home``; yields its port, stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "127.0.0.1:0",
         "--upstream", f"127.0.0.1:{echo_port}", "--identity", str(tmp_path / "venue"),
         "--policies", str(POLICIES), "--assume-healthy", "--events", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line + proc.stderr.read()
        port = int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])
        metrics = proc.stdout.readline()
        assert metrics.startswith("metrics on http://127.0.0.1:"), metrics
        METRICS_URL[port] = metrics.split()[-1]
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def pki(tmp_path):
    now = time.time()
    ca = CertificateAuthority.create(DOMAIN, now - 60)
    creds = {name: issue_for_test(ca, sid, now - 60) for name, sid in
             (("venue", VENUE), ("router", ROUTER), ("algo", ALGO), ("control", CONTROL))}
    creds["venue"].write(tmp_path / "venue")
    return creds


@pytest.fixture
def echo_port():
    srv, port = echo_server()
    yield port
    srv.close()


@pytest.fixture
def sidecar(tmp_path, pki, echo_port):
    events = tmp_path / "events.jsonl"
    with running_sidecar(tmp_path, echo_port, events) as port:
        yield port, pki, events


def roundtrip(port: int, creds, payload: bytes = b"NEW ORDER 35=D") -> bytes:
    ctx = build_context(creds, server_side=False)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(payload)
                return tls.recv(65536)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return b""


def read_events(path: Path) -> list[dict]:
    for _ in range(100):  # bounded: the sidecar writes through on every decision
        if path.exists() and path.read_text().strip():
            break
        time.sleep(0.02)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_policy_allows_router_and_denies_algo(sidecar):
    port, creds, events = sidecar
    assert roundtrip(port, creds["router"]) == b"NEW ORDER 35=D"
    assert roundtrip(port, creds["algo"]) == b""
    decisions = [e for e in read_events(events) if e["kind"] == "decision"]
    assert [(d["principal"], d["decision"]) for d in decisions] == [(ROUTER, "allow"), (ALGO, "deny")]
    assert decisions[0]["resource"] == "svc/venue-a"


def test_the_sidecar_exposes_prometheus_metrics_that_count_its_decisions(sidecar):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    port, creds, _events = sidecar
    assert roundtrip(port, creds["router"]) == b"NEW ORDER 35=D"
    assert roundtrip(port, creds["algo"]) == b""
    text = urllib.request.urlopen(METRICS_URL[port], timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("trustfabric_decisions_total", (("outcome", "allow"),))] == 1
    assert samples[("trustfabric_decisions_total", (("outcome", "deny"),))] == 1
    assert samples[("trustfabric_fail_open_total", ())] == 0
    assert samples[("trustfabric_sidecar_proxied_bytes_total", ())] >= 2 * len(b"NEW ORDER 35=D")
    assert samples[("trustfabric_sidecar_busy_poll_seconds_total", ())] > 0  # it polled after forwarding (default)
    assert samples[("trustfabric_certificate_expiry_seconds", (("service", "sidecar"),))] > 0


@pytest.mark.slow
def test_cli_refuses_bad_options(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "nonsense", "--upstream", "127.0.0.1:1",
         "--identity", str(tmp_path), "--rules", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "config.address" in result.stderr


def ca_revoke(tmp_path: Path, target: str) -> None:
    """``trustfabric ca revoke`` run by a security officer enrolled in the sidecar's home (a person's change)."""
    users = UserDirectory(SqliteIdentityStore(tmp_path / "home" / "identity.db"), Emitter("test", MemorySink()))
    result = subprocess.run([sys.executable, "-m", "trustfabric.cli", "ca", "revoke", target, *Pool(users).args()],
                            capture_output=True, text=True, timeout=60,
                            env={**_env(tmp_path), "TRUSTFABRIC_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stdout + result.stderr


def closed_within(tls: ssl.SSLSocket, tries: int = 100) -> bool:
    """True once the sidecar has closed ``tls`` (bounded: ``tries`` reads of at most 0.1 s each)."""
    tls.settimeout(0.1)
    for _ in range(tries):
        try:
            if tls.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ssl.SSLError, ConnectionError):
            return True
    return False


@pytest.mark.slow
def test_ca_revoke_closes_the_live_connection_and_refuses_new_handshakes(tmp_path, pki, echo_port):
    events = tmp_path / "events.jsonl"
    with running_sidecar(tmp_path, echo_port, events) as port:
        ctx = build_context(pki["router"], server_side=False)
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, ctx.wrap_socket(raw) as live:
            live.sendall(b"35=D")
            assert live.recv(65536) == b"35=D"
            ca_revoke(tmp_path, str(pki["router"].serial))
            assert closed_within(live)
        assert roundtrip(port, pki["router"]) == b""
    kinds = [(e["kind"], e.get("reason")) for e in read_events(events)]  # written through when it stopped
    assert ("session.close", "cert.revoked") in kinds
    assert ("handshake.refused", "cert.revoked") in kinds


@pytest.mark.slow
def test_a_sidecar_started_after_the_revocation_refuses_the_certificate(tmp_path, pki, echo_port):
    ca_revoke(tmp_path, str(pki["router"].serial))
    events = tmp_path / "events.jsonl"
    with running_sidecar(tmp_path, echo_port, events) as port:
        assert roundtrip(port, pki["router"]) == b""
    refused = [e for e in read_events(events) if e["kind"] == "handshake.refused"]
    assert refused and refused[0]["reason"] == "cert.revoked"


@pytest.mark.slow
def test_a_quarantine_closes_the_live_connection(sidecar, tmp_path):
    port, creds, events = sidecar
    ctx = build_context(creds["router"], server_side=False)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, ctx.wrap_socket(raw) as live:
        live.sendall(b"35=D")
        assert live.recv(65536) == b"35=D"
        ca_revoke(tmp_path, ROUTER)
        assert closed_within(live)
    assert roundtrip(port, creds["router"]) == b""


async def test_with_a_control_plane_running_the_sidecar_follows_its_push(tmp_path, pki, monkeypatch):
    """runtime.json names a control plane: the sidecar subscribes, takes the snapshot and the pushes."""
    control_id = CONTROL
    subscribers = []

    async def serve(conn) -> None:
        def on_frame(frame) -> None:
            if type(frame) is Subscribe and frame.service == "venue-a":
                subscribers.append(conn)
                conn.send(Subscribed(jwks=b"", revoked=RevocationSnapshot(serials=(4242,))))

        conn.on_frame = on_frame
        await conn.wait_closed()

    server = await FrameServer(serve, tls=TLSConfig(pki["control"]), codec=CONTROL_CODEC, name="control").start(
        "127.0.0.1", 0)
    home = tmp_path / "home"
    (home / "floor").mkdir(parents=True)
    (home / "floor" / "runtime.json").write_text(json.dumps({"mode": "zero-trust", "control": {
        "control_port": server.port, "bootstrap_port": server.port, "spiffe_id": control_id,
        "bundle_pem": pki["venue"].bundle_pem.decode()}}))
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    tables = StaticTableSource.from_mapping({"principals": {}})
    pep = EnforcementPoint(VENUE, tables, None)
    mirror = RevocationMirror(RevocationSet())
    mirror.load([])
    client = await _follow_control_plane(TLSConfig(pki["venue"]), "venue-a", mirror, pep)
    try:
        assert client is not None and subscribers
        assert mirror.is_revoked(4242, "")  # the snapshot
        subscribers[0].send(PushRevocation(kind="serial", value=str(pki["router"].serial), reason="revoked"))
        subscribers[0].send(PushInvalidation(invalidation=Invalidation(ALGO, 9, 9, "quarantine.anomaly", kind=QUARANTINE)))
        algo = PeerIdentity(SpiffeId.parse(ALGO), pki["algo"].cert_der, pki["algo"].fingerprint_sha256,
                            pki["algo"].serial, time.time() + 600)
        for _ in range(300):  # bounded: both pushes applied
            if mirror.is_revoked(pki["router"].serial, "") and _refusal(pep, algo):
                break
            await asyncio.sleep(0.01)
        assert mirror.is_revoked(pki["router"].serial, "")
        assert _refusal(pep, algo) == "session.peer_quarantined"
    finally:
        if client is not None:
            client.close()
        await server.close()


def _refusal(pep, peer) -> str:
    try:
        pep.admit_peer(peer)
    except SessionRefused as exc:
        return exc.reason
    return ""
