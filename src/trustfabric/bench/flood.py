"""``trustfabric bench flood``: connection floods against the sidecar and a floor service, memory watched.

Two real processes are flooded in turn, each on loopback:

* ``sidecar``: ``trustfabric sidecar`` (the CLI, as a firm runs it) in front of a plain
  echo service, with its own CA and a client certificate allowed to connect;
* ``venue-a``: a floor service started by the launcher, zero-trust, with its control
  plane in this process.

A flood is ``idle_tcp`` TCP connections that never send a byte and, spread among
them, ``client_hellos`` connections that send a real TLS ClientHello and then stall (each makes the server
build a TLS object and answer, the costly half-open state), opened as fast as the
listener takes them and held ``hold_s``. During the flood the target's resident memory
(``VmRSS``) is sampled every ``sample_s``; its peak is reported. Then every flood
connection is closed and, after ``settle_s`` (longer than the handshake deadline, so
that whatever the target still holds has timed out), the settled RSS is read.

Refusals are what the flood saw: a connection the target reset at once (admission
control) or closed before any handshake byte came back. After each flood a fresh
client must still be served: the sidecar carries an mTLS round trip to the echo
service; the floor service completes a TLS handshake and refuses the certificate-less
probe with its ``certificate_required`` alert (it is serving handshakes again).

``settled_ratio`` is the last flood's settled RSS over the baseline (read after start
and one served probe); the target is within 1.2 for both processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.paths import POLICIES_DIR
from trustfabric.trading.launcher import Floor
from trustfabric.trading.services.base import ZERO_TRUST
from trustfabric.transport.tls import build_context

DOMAIN = "prod.acme.example"
VENUE = f"spiffe://{DOMAIN}/venue/venue-a"
ROUTER = f"spiffe://{DOMAIN}/routing/order-router"
SETTLED_WITHIN = 1.2


def rss_bytes(pid: int) -> int:
    """The process's resident set size (``VmRSS``), in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def client_hello() -> bytes:
    """The bytes of a TLS 1.3 ClientHello (what a half-open TLS connection sends before it stalls)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@dataclass
class Target:
    name: str
    pid: int
    port: int
    probe: Callable[[], Awaitable[bool]]
    stop: Callable[[], Awaitable[None]]
    floods: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FloodPlan:
    floods: int = 5
    idle_tcp: int = 5000
    client_hellos: int = 500
    hold_s: float = 1.0
    settle_s: float = 7.0
    sample_s: float = 0.05
    concurrency: int = 512


async def _open(port: int, payload: bytes, sem: asyncio.Semaphore,
                timeout_s: float = 3.0) -> tuple[socket.socket | None, str]:
    """One flood connection: the socket when it is up, and what happened (``connected``, ``reset``...)."""
    loop = asyncio.get_running_loop()
    async with sem:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout_s)
            if payload:
                await asyncio.wait_for(loop.sock_sendall(sock, payload), timeout_s)
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
            sock.close()
            return None, "reset"  # refused by the target before or as the connection came up
        except TimeoutError:
            sock.close()
            return None, "timeout"  # the listen queue was full: the kernel dropped the SYN
        except OSError:
            sock.close()
            return None, "error"
        return sock, "connected"


def _fate(sock: socket.socket) -> str:
    """What the target did with a flood connection so far: reset, closed, answered, or held."""
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return "held"
    except ConnectionResetError:
        return "reset"
    except OSError:
        return "reset"
    return "answered" if data else "closed"


async def flood_once(target: Target, plan: FloodPlan, hello: bytes) -> dict[str, Any]:
    """One flood against ``target``: RSS before / peak / settled, what the flood saw, a probe after."""
    before = rss_bytes(target.pid)
    peak = [before]
    sampling = True

    async def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], rss_bytes(target.pid))
            await asyncio.sleep(plan.sample_s)

    sampler = asyncio.get_running_loop().create_task(sample())
    sem = asyncio.Semaphore(plan.concurrency)
    t0 = time.perf_counter()
    total = plan.idle_tcp + plan.client_hellos
    every = max(1, total // max(1, plan.client_hellos))  # the ClientHellos spread through the flood
    payloads = [hello if plan.client_hellos and i % every == 0 else b"" for i in range(total)]
    opened = await asyncio.gather(*(_open(target.port, p, sem) for p in payloads))
    socks = [s for s, _ in opened if s is not None]
    flood_s = time.perf_counter() - t0
    await asyncio.sleep(plan.hold_s)
    fates: dict[str, int] = {}
    for _, outcome in opened:
        if outcome != "connected":
            fates[outcome] = fates.get(outcome, 0) + 1
    for s in socks:
        fate = _fate(s)
        fates[fate] = fates.get(fate, 0) + 1
    for s in socks:
        s.close()
    await asyncio.sleep(plan.settle_s)
    sampling = False
    await sampler
    settled = rss_bytes(target.pid)
    served = await target.probe()
    return {"connections": len(payloads), "refused": fates.get("reset", 0) + fates.get("closed", 0),
            "held": fates.get("held", 0), "answered": fates.get("answered", 0),
            "not_connected": fates.get("timeout", 0) + fates.get("error", 0), "flood_s": round(flood_s, 2),
            "rss_before_mb": round(before / 2**20, 1), "rss_peak_mb": round(peak[0] / 2**20, 1),
            "rss_settled_mb": round(settled / 2**20, 1), "served_after": served}


# -- targets -------------------------------------------------------------------------------
def _echo_server() -> tuple[socket.socket, int]:
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
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _mtls_roundtrip(port: int, ctx: ssl.SSLContext, payload: bytes = b"35=D probe") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(payload)
            return tls.recv(65536) == payload
    except (ssl.SSLError, OSError):
        return False


def _refused_with_alert(port: int, bundle_pem: bytes) -> bool:
    """A certificate-less TLS client gets the handshake and then the ``certificate_required`` alert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            tls.recv(1)
    except ssl.SSLError as exc:
        return "CERTIFICATE_REQUIRED" in (exc.reason or "")
    except OSError:
        return False
    return False


async def start_sidecar(work: Path) -> Target:
    now = time.time()
    ca = CertificateAuthority.create(DOMAIN, now - 60)
    venue, router = issue_for_test(ca, VENUE, now - 60), issue_for_test(ca, ROUTER, now - 60)
    venue.write(work / "venue")
    echo, echo_port = _echo_server()
    env = {**os.environ, "TRUSTFABRIC_HOME": str(work / "home"), "COLUMNS": "300"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "127.0.0.1:0",
        "--upstream", f"127.0.0.1:{echo_port}", "--identity", str(work / "venue"), "--policies",
        str(POLICIES_DIR), "--assume-healthy", "--events", str(work / "sidecar-events.jsonl"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    if " listening on " not in line:
        proc.kill()
        raise RuntimeError(f"the sidecar did not start: {line!r}")
    port = int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])
    ctx = build_context(router, server_side=False)

    async def probe() -> bool:
        return await asyncio.to_thread(_mtls_roundtrip, port, ctx)

    async def stop() -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        echo.close()

    return Target("sidecar", proc.pid, port, probe, stop)


async def start_floor_service(work: Path, service: str = "venue-a") -> Target:
    floor = Floor(work / "floor-home", ZERO_TRUST, services=(service,), collect_audit=False)
    await floor.start()
    bundle = floor.plane.credentials.bundle_pem if floor.plane is not None else b""
    bundle = bundle.encode() if isinstance(bundle, str) else bundle
    port = floor.ports[service]

    async def probe() -> bool:
        return await asyncio.to_thread(_refused_with_alert, port, bundle)

    async def stop() -> None:
        await floor.stop()

    return Target(service, floor.processes[service].proc.pid, port, probe, stop)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


async def measure(plan: FloodPlan = FloodPlan(), on_flood: Callable[[str, dict], None] | None = None
                  ) -> dict[str, Any]:
    """Flood the sidecar, then a floor service, ``plan.floods`` times each; one result object."""
    _raise_fd_limit(plan.idle_tcp + plan.client_hellos + 1024)
    hello = client_hello()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-flood-"))
    result: dict[str, Any] = {"plan": plan.__dict__, "targets": {}}
    try:
        for start in (lambda: start_sidecar(work), lambda: start_floor_service(work)):
            target = await start()
            try:
                await target.probe()  # warm: one served connection before the baseline
                await asyncio.sleep(0.5)
                baseline = rss_bytes(target.pid)
                for _ in range(plan.floods):
                    flood = await flood_once(target, plan, hello)
                    target.floods.append(flood)
                    if on_flood is not None:
                        on_flood(target.name, flood)
                settled = target.floods[-1]["rss_settled_mb"] * 2**20 if target.floods else baseline
                result["targets"][target.name] = {
                    "pid": target.pid, "baseline_rss_mb": round(baseline / 2**20, 1),
                    "peak_rss_mb": max((f["rss_peak_mb"] for f in target.floods), default=0.0),
                    "settled_rss_mb": round(settled / 2**20, 1),
                    "settled_ratio": round(settled / baseline, 3) if baseline else None,
                    "refused": sum(f["refused"] for f in target.floods),
                    "served_after_every_flood": all(f["served_after"] for f in target.floods),
                    "floods": target.floods}
            finally:
                await target.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [t["settled_ratio"] for t in result["targets"].values() if t["settled_ratio"] is not None]
    result["settled_within_20pct"] = bool(ratios) and all(r <= SETTLED_WITHIN for r in ratios)
    return result

