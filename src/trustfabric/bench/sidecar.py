"""``trustfabric bench sidecar``: what the sidecar adds to a round trip, beside haproxy and stunnel4.

One plain TCP echo service (:mod:`trustfabric.bench.echo`, its own process) and, in
front of it on loopback, each target terminating mTLS (TLS 1.3, client certificate
required and verified against the same CA):

* ``plain``: no proxy, the echo service itself (the baseline);
* ``sidecar``: ``trustfabric sidecar`` as a firm runs it (the CLI, its defaults:
  polling 100 us after each chunk), deciding each connection by the floor's Cedar
  policies and writing its audit record before the first byte goes upstream;
* ``sidecar-no-poll``: the same sidecar with ``--busy-poll-us 0`` (it sleeps in
  epoll between chunks);
* ``haproxy`` (``mode tcp``, ``verify required``, ``ssl-min-ver TLSv1.3``, its
  defaults otherwise), ``haproxy-busy-polling`` (the same with haproxy's global
  ``busy-polling``) and ``stunnel4`` (``verifyChain``, ``requireCert``), when they
  are on ``PATH``.

The client (this process, blocking sockets, one persistent connection per target)
sends ``size`` bytes and reads them back; the rounds interleave the targets (and the
order rotates each round), so the machine's drift falls on every target alike.
``added_us_p50`` / ``added_us_p99`` are a target's percentile minus plain TCP's;
``connect_ms_p50`` is TCP connect plus the TLS handshake plus one round trip (the
sidecar decides and logs the connection before it forwards the first byte).
``cpu_us_per_rtt`` is the proxy process's CPU time (user and system, from
``/proc/<pid>/stat``) over its own rounds, per round trip: what polling costs.
haproxy's ``busy-polling`` polls even with nothing to do, so that process is
stopped (``SIGSTOP``) outside its own rounds: it would otherwise take a core
from the targets measured meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.percentiles import percentile
from trustfabric.policy.paths import POLICIES_DIR
from trustfabric.transport.tls import build_context

DOMAIN = "prod.acme.example"
SERVER = f"spiffe://{DOMAIN}/venue/venue-a"
CLIENT = f"spiffe://{DOMAIN}/routing/order-router"
ALWAYS_POLLING = ("haproxy-busy-polling",)  # targets that poll even when idle: stopped outside their rounds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s")


class _Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                if proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                proc.terminate()
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGCONT)  # a stopped process takes its SIGTERM once it runs
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_sidecar(work: Path, procs: _Processes, name: str, echo_port: int, extra: list[str]) -> tuple[int, int]:
    """Start ``trustfabric sidecar`` in front of the echo service; (its port, its pid)."""
    env = {**os.environ, "TRUSTFABRIC_HOME": str(work / "home"), "COLUMNS": "300"}
    side = procs.start([sys.executable, "-m", "trustfabric.cli", "sidecar", "--listen", "127.0.0.1:0",
                        "--upstream", f"127.0.0.1:{echo_port}", "--identity", str(work / "server"),
                        "--policies", str(POLICIES_DIR), "--assume-healthy",
                        "--events", str(work / f"{name}-events.jsonl"), *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert side.stdout is not None
    line = side.stdout.readline()
    if " listening on " not in line:
        raise RuntimeError(f"the sidecar did not start: {line!r}")
    return int(line.split(" listening on ")[1].split()[0].rsplit(":", 1)[1]), side.pid


def _start_targets(work: Path, procs: _Processes, only: tuple[str, ...],
                   busy_poll_us: int | None = None) -> tuple[dict[str, int], dict[str, int], ssl.SSLContext]:
    """Start the echo service and every target; (ports, pids of the proxies, the client's TLS context)."""
    now = time.time()
    ca = CertificateAuthority.create(DOMAIN, now - 60)
    server, client = issue_for_test(ca, SERVER, now - 60), issue_for_test(ca, CLIENT, now - 60)
    server.write(work / "server")
    cert, key, bundle = work / "server" / "cert.pem", work / "server" / "key.pem", work / "server" / "bundle.pem"
    echo = procs.start([sys.executable, "-m", "trustfabric.bench.echo"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None
    echo_port = int(echo.stdout.readline().split()[1])
    ports = {"plain": echo_port}
    pids: dict[str, int] = {}
    if "sidecar" in only:
        window = [] if busy_poll_us is None else ["--busy-poll-us", str(busy_poll_us)]
        ports["sidecar"], pids["sidecar"] = _start_sidecar(work, procs, "sidecar", echo_port, window)
        if busy_poll_us != 0:
            ports["sidecar-no-poll"], pids["sidecar-no-poll"] = _start_sidecar(
                work, procs, "sidecar-no-poll", echo_port, ["--busy-poll-us", "0"])
    if "haproxy" in only and shutil.which("haproxy"):
        combined = work / "haproxy.pem"
        combined.write_bytes(cert.read_bytes() + key.read_bytes())
        for name, extra in (("haproxy", ""), ("haproxy-busy-polling", "    busy-polling\n")):
            port = _free_port()
            cfg = work / f"{name}.cfg"
            cfg.write_text(f"""global
    maxconn 4096
{extra}defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port} ssl crt {combined} ca-file {bundle} verify required ssl-min-ver TLSv1.3
    default_backend be
backend be
    server echo 127.0.0.1:{echo_port}
""")
            proc = procs.start(["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            _wait_port(port, proc)
            ports[name], pids[name] = port, proc.pid
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if "stunnel4" in only and stunnel:
        port = _free_port()
        cfg = work / "stunnel.conf"
        cfg.write_text(f"""foreground = yes
pid =
[echo]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{echo_port}
cert = {cert}
key = {key}
CAfile = {bundle}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
""")
        proc = procs.start([stunnel, str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(port, proc)
        ports["stunnel4"], pids["stunnel4"] = port, proc.pid
    return ports, pids, build_context(client, server_side=False)


def _connect(port: int, ctx: ssl.SSLContext | None) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw) if ctx is not None else raw


def _roundtrip(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = 0
    while got < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the target closed the connection")
        got += len(chunk)


@contextlib.contextmanager
def _running(pid: int | None) -> Iterator[None]:
    """A stopped process (``SIGSTOP``) let run for the block, stopped again after; nothing for None."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGCONT)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGSTOP)


def _cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of a process (all its threads), or None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1000.0


def measure(rounds: int = 10, per_round: int = 2000, size: int = 64, warmup: int = 500, connects: int = 20,
            only: tuple[str, ...] = ("sidecar", "haproxy", "stunnel4"),
            busy_poll_us: int | None = None) -> dict[str, Any]:
    """Interleaved rounds of ``per_round`` round trips per target; one result object.

    ``busy_poll_us`` is the ``sidecar`` target's polling window (None: the sidecar's default).
    """
    work = Path(tempfile.mkdtemp(prefix="tf-bench-sidecar-"))
    procs = _Processes()
    payload = os.urandom(size)
    try:
        ports, pids, ctx = _start_targets(work, procs, only, busy_poll_us)
        names = list(ports)
        tls = {name: (None if name == "plain" else ctx) for name in names}
        conns = {name: _connect(ports[name], tls[name]) for name in names}
        for name in names:
            for _ in range(warmup):
                _roundtrip(conns[name], payload)
        always_polling = {name: pids[name] for name in names if name in ALWAYS_POLLING}
        for pid in always_polling.values():
            os.kill(pid, signal.SIGSTOP)
        rtts: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, float | None] = {name: 0.0 for name in pids}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                sock = conns[name]
                samples = rtts[name]
                with _running(always_polling.get(name)):
                    if name in always_polling:
                        for _ in range(min(warmup, 50)):
                            _roundtrip(sock, payload)
                    before = _cpu_s(pids[name]) if name in pids else None
                    for _ in range(per_round):
                        samples.append(_timed(lambda: _roundtrip(sock, payload)))
                    after = _cpu_s(pids[name]) if name in pids else None
                if name in pids:
                    spent = cpu[name]
                    cpu[name] = None if before is None or after is None or spent is None else spent + after - before
        connect_ms: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(connects):
            for name in names:
                def once(name: str = name) -> None:
                    with _connect(ports[name], tls[name]) as s:
                        _roundtrip(s, payload)
                with _running(always_polling.get(name)):
                    connect_ms[name].append(_timed(once) / 1000.0)
        for pid in always_polling.values():
            os.kill(pid, signal.SIGCONT)
        for sock in conns.values():
            with contextlib.suppress(OSError):
                sock.close()
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)
    plain50, plain99 = percentile(rtts["plain"], 50), percentile(rtts["plain"], 99)
    targets: dict[str, dict[str, float | None]] = {}
    for name in names:
        p50, p99 = percentile(rtts[name], 50), percentile(rtts[name], 99)
        entry: dict[str, float | None] = {"rtt_us_p50": round(p50, 1), "rtt_us_p99": round(p99, 1)}
        if name != "plain":
            spent = cpu.get(name)
            entry.update(added_us_p50=round(p50 - plain50, 1), added_us_p99=round(p99 - plain99, 1),
                         connect_ms_p50=round(percentile(connect_ms[name], 50), 3),
                         cpu_us_per_rtt=None if spent is None else round(spent * 1e6 / len(rtts[name]), 1))
        targets[name] = entry
    result: dict[str, Any] = {"targets": targets, "rounds": rounds, "per_round": per_round, "size": size,
                              "busy_poll_us": busy_poll_us}
    if "haproxy" in targets and "sidecar" in targets:
        ha = targets["haproxy"]
        for name in ("sidecar", "sidecar-no-poll"):
            if name in targets:
                key = name.replace("-", "_")
                result[f"{key}_over_haproxy_added_p50"] = _ratio(targets[name]["added_us_p50"], ha["added_us_p50"])
                result[f"{key}_over_haproxy_added_p99"] = _ratio(targets[name]["added_us_p99"], ha["added_us_p99"])
        side = targets["sidecar"]
        result["targets_met"] = {"added_p50<=haproxy": side["added_us_p50"] <= ha["added_us_p50"],
                                 "added_p99<=1.5x_haproxy": side["added_us_p99"] <= 1.5 * ha["added_us_p99"]}
    return result


def _ratio(value: Any, baseline: Any) -> float:
    return round(value / max(baseline, 0.1), 3)
