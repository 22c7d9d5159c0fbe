"""The hop benchmark: what a zero-trust hop costs, measured against plain TCP in the same run.

One process, one uvloop event loop, loopback only. Three framed servers answer the
same small ``Request``: plain TCP, mTLS, and mTLS + the enforcement point (session
open with a real identity-plane token - EdDSA, bound to the client certificate by
``cnf.x5t#S256``, replay-checked - then the hot-path check, and the decision written
as a compact record to a real audit :class:`~trustfabric.audit.spool.Spool` in its
``durability="write"`` mode - one ``write()`` before the reply leaves, a background
fsync every ``--sync-interval-ms``). Rounds alternate plain / TLS / zero-trust so that machine noise
hits all three alike; the added cost is zero-trust minus plain, p50 and p99.

Also measured: the in-session check alone (``pep_check_us_p50``), the same
decision evaluated by cedarpy per message through the policy engine's naive path
(``cedar_per_request_us_p50``; policy text, entities and schema re-parsed each
call, as a per-request PDP would) and with the engine's pre-parsed handles
(``cedar_decide_us_p50``), session open at the PEP (token signature, binding,
replay, table pull), and revocation: from a quarantine published on the policy
bus to refusal at 20 enforcement points.

``tls_added_us_p50`` (TLS minus plain, no enforcement) is the TLS record layer's own
cost in our transport; ``zt_over_tls_us_p50`` is what enforcement and audit add on top of it.
``tls_floor_added_us_p50`` is the same TLS cost measured with nothing around it (two
blocking loopback sockets driven by hand, the ``ssl`` module only): the least any mTLS
hop adds on this machine, so the part of ``zt_added_us_p50`` that no Python code of ours
can remove. ``zt_added_over_tls_floor_us_p50`` is the rest.

The decision measured is the floor's ``algo-momentum`` -> ``submit_order`` on
``risk/orders`` with its notional cap and symbol set; its rate obligation is
raised so that the measured messages stay allowed (the bucket arithmetic runs
all the same).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from trustfabric.audit.events import MemorySink
from trustfabric.audit.spool import DURABILITY_WRITE, Spool
from trustfabric.percentiles import percentile
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.guard import guarded_handler
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.policy.decision import QUARANTINE, RELEASE, DecisionTable, Obligations
from trustfabric.policy.paths import POLICIES_DIR
from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.engine import PolicyEngine
from trustfabric.transport.client import echo_handler
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.frames import OpenSession, Request, SessionReady
from trustfabric.transport.tls import TLSConfig

ACTION, RESOURCE, SYMBOL, NOTIONAL = "submit_order", "risk/orders", "AAPL", 10_000.0


class _BenchTokens:
    """The identity plane's real tokens: EdDSA JWTs from a :class:`TokenIssuer`, bound (``cnf.x5t#S256``)
    to the client certificate, checked by a :class:`TokenVerifier` with a :class:`ReplayCache`."""

    ISSUER = "https://idp.bench-hop.trustfabric"

    def __init__(self) -> None:
        keys = KeyRing.generate(time.time())
        self.issuer = TokenIssuer(keys, self.ISSUER)
        self.verifier = TokenVerifier(keys, self.ISSUER, replay_cache=ReplayCache())

    def issue(self, sub: str, aud: str, cert_der: bytes, ttl: int = 300) -> str:
        return self.issuer.issue(sub, aud, time.time(), ttl, cert_der=cert_der)


class _GenerousRate:
    """The engine's tables with the rate obligation raised so that benchmark messages stay allowed."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def decision_table(self, principal: str, now: float) -> DecisionTable:
        table = self.engine.decision_table(principal, now)
        entries = {}
        for key, d in table.entries.items():
            ob = d.obligations
            if d.allowed and ob.max_rate is not None:
                ob = Obligations(ttl_s=ob.ttl_s, max_notional=ob.max_notional, max_rate=1e9, burst=10**9,
                                 symbols=ob.symbols, step_up_max_age_s=ob.step_up_max_age_s)
                d = type(d)(d.allowed, d.principal, d.action, d.resource, d.reason, d.policy_ids, d.errors, ob,
                            d.epoch)
            entries[key] = d
        return DecisionTable(table.principal, table.epoch, table.global_epoch, table.issued_at, table.expires_at,
                             entries)


async def _samples(conn, frame, n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    box: list[Any] = [None]

    def on_frame(_reply) -> None:
        fut = box[0]
        if fut is not None and not fut.done():
            fut.set_result(_reply)

    conn.on_frame = on_frame
    out = []
    timer = time.perf_counter_ns
    send = conn.send
    for _ in range(n):
        fut = loop.create_future()
        box[0] = fut
        start = timer()
        send(frame)
        reply = await fut
        out.append(timer() - start)
    if not getattr(reply, "ok", False):
        raise RuntimeError(f"benchmark request refused: {reply}")
    return out


async def measure(rounds: int, per_round: int, policies: Path, warmup: int = 500,
                   repeat: int = 200, sync_interval_ms: float = 5.0) -> dict[str, Any]:
    engine = PolicyEngine.from_dir(policies, assume_healthy=True)  # deliberate: the bench measures the hop, not signals
    topo = engine.topology
    server_id, client_id = topo.spiffe_id("pre-trade-risk"), topo.spiffe_id("algo-momentum")
    now = time.time()
    ca = CertificateAuthority.create(server_id.split("/")[2], now - 60)
    server_creds = issue_for_test(ca, server_id, now - 60)
    client_creds = issue_for_test(ca, client_id, now - 60)
    tokens = _BenchTokens()
    spool_dir = Path(tempfile.mkdtemp(prefix="tf-bench-hop-"))
    sink = Spool(spool_dir / "pep", "bench-hop-pep", durability=DURABILITY_WRITE,
                 sync_interval_s=sync_interval_ms / 1000)
    pep = EnforcementPoint(server_id, _GenerousRate(engine), tokens.verifier, sink=sink)
    engine.bus.subscribe(pep.on_invalidation)

    async def plain_echo(conn):
        await echo_handler(conn)

    plain = await FrameServer(plain_echo, tls=None, name="plain").start()
    tls = await FrameServer(plain_echo, tls=TLSConfig(server_creds), name="tls").start()
    zt = await FrameServer(guarded_handler(pep), tls=TLSConfig(server_creds), name="zt").start()
    client_tls = TLSConfig(client_creds)
    c_plain = await connect("127.0.0.1", plain.port, tls=None)
    c_tls = await connect("127.0.0.1", tls.port, tls=client_tls)
    c_zt = await connect("127.0.0.1", zt.port, tls=client_tls)
    c_zt.send(OpenSession(token=tokens.issue(client_id, server_id, client_creds.cert_der)))
    ready = await asyncio.wait_for(c_zt.recv(), 5)
    if not isinstance(ready, SessionReady):
        raise RuntimeError(f"session refused: {ready}")
    frame = Request(rid=1, action=ACTION, resource=RESOURCE, symbol=SYMBOL, notional=NOTIONAL)
    frame_bytes = zt.codec.encode(frame)
    s_plain: list[int] = []
    s_tls: list[int] = []
    s_zt: list[int] = []
    for conn in (c_plain, c_tls, c_zt):  # warm-up
        await _samples(conn, frame, warmup)
    round_p50 = []
    for _ in range(rounds):  # interleaved: noise falls on all three alike
        a = await _samples(c_plain, frame, per_round)
        b = await _samples(c_tls, frame, per_round)
        c = await _samples(c_zt, frame, per_round)
        s_plain += a
        s_tls += b
        s_zt += c
        round_p50.append((statistics.median(c) - statistics.median(a)) / 1000)
    for conn in (c_plain, c_tls, c_zt):
        conn.close()
    for server in (plain, tls, zt):
        await server.close()
    us = lambda xs, q: percentile(xs, q * 100) / 1000  # noqa: E731
    result: dict[str, Any] = {
        "plain_rtt_us_p50": us(s_plain, 0.5), "tls_rtt_us_p50": us(s_tls, 0.5), "zt_rtt_us_p50": us(s_zt, 0.5),
        "plain_rtt_us_p99": us(s_plain, 0.99), "tls_rtt_us_p99": us(s_tls, 0.99), "zt_rtt_us_p99": us(s_zt, 0.99),
        "zt_added_us_p50": us(s_zt, 0.5) - us(s_plain, 0.5),
        "zt_added_us_p99": us(s_zt, 0.99) - us(s_plain, 0.99),
        "tls_added_us_p50": us(s_tls, 0.5) - us(s_plain, 0.5),
        "zt_over_tls_us_p50": us(s_zt, 0.5) - us(s_tls, 0.5),
        "zt_added_us_p50_rounds_min": min(round_p50), "zt_added_us_p50_rounds_max": max(round_p50),
        "rounds": rounds, "messages_per_round": per_round,
    }

    # The TLS record layer alone (no loop, no framing, no enforcement): the floor under zt_added.
    result.update(_tls_floor(TLSConfig(server_creds), client_tls, bytes(frame_bytes), rounds, per_round))
    result["zt_added_over_tls_floor_us_p50"] = result["zt_added_us_p50"] - result["tls_floor_added_us_p50"]

    # The in-session check alone, in batches (the timer costs more than the check).
    direct = pep.open_session(_PeerOf(client_creds), tokens.issue(client_id, server_id, client_creds.cert_der))
    check = pep.check
    batch = 200
    per_call = []
    for _ in range(max(3, repeat * 3 // 2)):
        start = time.perf_counter_ns()
        for _ in range(batch):
            check(direct, ACTION, RESOURCE, NOTIONAL, SYMBOL)
        per_call.append((time.perf_counter_ns() - start) / batch / 1000)
        pep.flush_decisions()
    if not check(direct, ACTION, RESOURCE, NOTIONAL, SYMBOL)[0]:
        raise RuntimeError("benchmark decision is not an allow")

    # The same decision through cedarpy, per message.
    bundle = engine.naive_request(client_id, ACTION, RESOURCE)
    if not engine.naive_decide(bundle):
        raise RuntimeError("cedar denies the benchmark decision")
    naive = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        engine.naive_decide(bundle)
        naive.append((time.perf_counter_ns() - start) / 1000)
    parsed = []
    for _ in range(repeat * 5):
        start = time.perf_counter_ns()
        engine.decide(client_id, ACTION, RESOURCE, {"notional": int(NOTIONAL)})
        parsed.append((time.perf_counter_ns() - start) / 1000)
    pep_p50 = percentile(per_call, 50)
    result.update({
        "pep_check_us_p50": pep_p50,
        "cedar_per_request_us_p50": percentile(naive, 50),
        "cedar_decide_us_p50": percentile(parsed, 50),
        "speedup_vs_cedar": percentile(naive, 50) / pep_p50,
        "speedup_vs_cedar_preparsed": percentile(parsed, 50) / pep_p50,
    })

    # Session open at the PEP: token signature and binding, replay, table pull.
    opens = []
    peer = _PeerOf(client_creds)
    for _ in range(repeat):
        token = tokens.issue(client_id, server_id, client_creds.cert_der)
        start = time.perf_counter_ns()
        s = pep.open_session(peer, token)
        opens.append((time.perf_counter_ns() - start) / 1e6)
        pep.close(s)
    result["session_open_ms_p50"] = percentile(opens, 50)

    # Revocation: quarantine published on the policy bus -> refused at 20 enforcement points.
    peps = []
    for i in range(20):
        p = EnforcementPoint(f"{server_id}-{i}", _GenerousRate(engine), tokens.verifier, sink=MemorySink())
        engine.bus.subscribe(p.on_invalidation)
        peps.append(p)
    revocations = []
    for _ in range(max(2, repeat // 4)):
        sessions = []
        for p in peps:
            p.release(client_id)
            sessions.append(p.open_session(peer, tokens.issue(client_id, p.audience, client_creds.cert_der)))
        start = time.perf_counter_ns()
        engine.bump([client_id], "quarantine.bench", "bench", QUARANTINE)
        refused = all(not p.check(s, ACTION, RESOURCE, NOTIONAL, SYMBOL)[0] for p, s in zip(peps, sessions))
        revocations.append((time.perf_counter_ns() - start) / 1e6)
        if not refused:
            raise RuntimeError("a quarantined principal was still allowed")
        for p in peps:
            try:
                p.open_session(peer, tokens.issue(client_id, p.audience, client_creds.cert_der))
                raise RuntimeError("a quarantined principal opened a session")
            except SessionRefused:
                pass
        engine.bump([client_id], "release.bench", "bench", RELEASE)
    result["revocation_ms_p50"] = percentile(revocations, 50)
    pep.flush_decisions()
    result["fail_open"] = pep.fail_open + sum(p.fail_open for p in peps)
    result["audit_records_spooled"] = sink.records_flushed
    result["audit_durability"] = f"{sink.durability}, fsync every {sync_interval_ms:g} ms"
    result["audit_fsyncs"] = sink.syncs
    sink.close()
    shutil.rmtree(spool_dir, ignore_errors=True)
    result["targets_met"] = {
        "zt_added_us_p50<=5": result["zt_added_us_p50"] <= 5, "zt_added_us_p99<=20": result["zt_added_us_p99"] <= 20,
        "speedup_vs_cedar>=10": result["speedup_vs_cedar"] >= 10,
        "session_open_ms_p50<=5": result["session_open_ms_p50"] <= 5,
        "revocation_ms_p50<=10": result["revocation_ms_p50"] <= 10,
    }
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}


def _tls_floor(server_tls, client_tls, payload: bytes, rounds: int, per_round: int) -> dict[str, float]:
    """The TLS record layer's own cost on this machine, with no framework around it.

    Two connected loopback sockets in one thread, blocking, driven by hand: one
    ``payload`` there and back per sample, through plain ``send``/``recv`` and through
    the ``ssl`` module's TLS objects (the same contexts as the servers). Nothing else
    runs: no event loop, no framing, no enforcement. Its added p50 is the least any
    mTLS hop can add here, so it is the floor under ``zt_added_us_p50``.
    """

    def connected() -> tuple[socket.socket, socket.socket]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        server, _ = listener.accept()
        listener.close()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return server, client

    plain_server, plain_client = connected()
    raw_server, raw_client = connected()
    server_ctx, _ = server_tls.context(server_side=True)
    client_ctx, _ = client_tls.context(server_side=False)
    box: dict[str, Any] = {}
    accept = threading.Thread(target=lambda: box.setdefault("s", server_ctx.wrap_socket(raw_server, server_side=True)))
    accept.start()
    tls_client = client_ctx.wrap_socket(raw_client, server_side=False)
    accept.join(10)
    tls_server = box["s"]

    def sample(server_read, server_write, client_read, client_write, n: int) -> list[int]:
        out = []
        timer = time.perf_counter_ns
        for _ in range(n):
            start = timer()
            client_write(payload)
            server_read(65536)
            server_write(payload)
            client_read(65536)
            out.append(timer() - start)
        return out

    plain_args = (plain_server.recv, plain_server.send, plain_client.recv, plain_client.send)
    tls_args = (tls_server.recv, tls_server.send, tls_client.recv, tls_client.send)
    plain: list[int] = []
    tls: list[int] = []
    try:
        sample(*plain_args, per_round)
        sample(*tls_args, per_round)
        for _ in range(rounds):
            plain += sample(*plain_args, per_round)
            tls += sample(*tls_args, per_round)
    finally:
        for sock in (plain_server, plain_client, tls_server, tls_client):
            sock.close()
    p_plain, p_tls = percentile(plain, 50) / 1000, percentile(tls, 50) / 1000
    return {"raw_plain_rtt_us_p50": p_plain, "raw_tls_rtt_us_p50": p_tls, "tls_floor_added_us_p50": p_tls - p_plain}


class _PeerOf:
    def __init__(self, creds) -> None:
        self.spiffe_id = str(creds.spiffe_id)
        self.cert_der = creds.cert_der
        self.fingerprint_sha256 = creds.fingerprint_sha256
        self.serial = creds.serial
        self.not_after = creds.not_after


async def measure_brief(rounds: int = 3, per_round: int = 1500) -> dict[str, Any]:
    """The hop measurement run briefly (the simulator's and the demo's per-hop figure), with its size."""
    hop = await measure(rounds, per_round, POLICIES_DIR)
    hop["rounds"], hop["per_round"] = rounds, per_round
    return hop
