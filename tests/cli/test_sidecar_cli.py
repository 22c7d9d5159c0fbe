"""``trustfabric sidecar`` as a real process in front of a plain TCP echo server."""

from __future__ import annotations

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

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.transport.tls import build_context

DOMAIN = "prod.acme.example"
VENUE = f"spiffe://{DOMAIN}/venue/venue-a"
ROUTER = f"spiffe://{DOMAIN}/routing/order-router"
ALGO = f"spiffe://{DOMAIN}/algo/algo-momentum"
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


@pytest.fixture
def sidecar(tmp_path):
    now = time.time()
    ca = CertificateAuthority.create(DOMAIN, now - 60)
    creds = {name: issue_for_test(ca, sid, now - 60) for name, sid in
             (("venue", VENUE), ("router", ROUTER), ("algo", ALGO))}
    creds["venue"].write(tmp_path / "venue")
    srv, echo_port = echo_server()
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "127.0.0.1:0",
         "--upstream", f"127.0.0.1:{echo_port}", "--identity", str(tmp_path / "venue"),
         "--policies", str(POLICIES), "--assume-healthy", "--events", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line + proc.stderr.read()
        port = int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])
        yield port, creds, events
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        srv.close()


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


def test_cli_refuses_bad_options(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "nonsense", "--upstream", "127.0.0.1:1",
         "--identity", str(tmp_path), "--rules", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "config.address" in result.stderr
