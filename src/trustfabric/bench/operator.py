"""Command-to-enforcement time on a running zero-trust floor (``trustfabric bench operator``).

A bench floor (:func:`~trustfabric.bench.floor.start_bench_floor`) runs; security
officers are enrolled in its identity plane. For each kind of change - a quarantine
(then its release), a kill switch halting the algo (then ACTIVE again), its risk score
raised to 95 (then 0), a threat-intel bundle naming its SPIFFE ID (then one naming
nothing on the floor) - and each repetition:

1. the algo sends a burst of orders (``bench`` command), so that it is trying when
   the change lands; the measurement starts once the OMS sees the burst flowing;
2. a person's :class:`~trustfabric.control.protocol.OperatorRequest` goes to the
   operator endpoint from a client thread of its own (as the CLI would after
   ``trustfabric login``, over TLS: the operator session and a fresh proof of
   possession checked by the control plane); ``t_sent`` is taken just before;
3. ``to_first_refusal_ms``: to the earliest refusal of the algo stamped by an
   enforcement point (a denied decision, a refused session or handshake: the
   services report them to the control plane, each with its own time);
   ``to_last_ack_ms``: to the reply, which comes only after every enforcement point
   acknowledged the change;
4. the same two from ``applied_at`` (the plane applied the change, after the
   person's password and TOTP were checked), so the authentication's own cost
   (an argon2id verification) stands apart from the propagation; and from
   ``applied_at`` to the first enforcement point's acknowledgement;
5. the change is undone (also through the operator API) and the floor is let back
   to trading before the next sample.

Wall clock, one host: every timestamp comes from ``time.time()`` of processes on
this machine. p50 and p99 per kind over the repetitions.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.control.client import operator_request
from trustfabric.control.plane import DEFAULT_POLICIES
from trustfabric.control.protocol import OperatorReply, OperatorRequest
from trustfabric.identity.operators import OperatorCredential, SessionIssuer, make_proof
from trustfabric.percentiles import percentile
from trustfabric.signals.threat_intel import ADDRESS, SPIFFE_ID, indicator_bundle
from trustfabric.trading.launcher import Floor
from trustfabric.bench.floor import bench_policies, start_bench_floor
from trustfabric.trading.services.base import ZERO_TRUST

AGENT = "algo-momentum"
BURST = 5000  # orders the algo sends around each change (a few thousand per second on loopback)
REFUSAL_KINDS = frozenset({Kind.SESSION_REFUSED, Kind.HANDSHAKE_REFUSED, Kind.TOKEN_REFUSED})
PASSWORD = "bench operator passphrase"
_tags = itertools.count(10_000)
_commanded: dict[int, list[int]] = {}  # floor -> orders commanded in bursts so far


class _Officers:
    """Security officers enrolled on demand: a TOTP code is accepted once, so each officer serves two
    password + TOTP requests (the current and the next time step: both stay valid however long the
    check waits). The measured changes go as a CLI sends them after ``trustfabric login``: one
    operator session, bound to a machine key, with a fresh proof of possession per request."""

    def __init__(self, identity: Any) -> None:
        import pyotp

        self._pyotp = pyotp
        self.identity = identity
        self.users = identity.users()
        self.people: list[tuple[str, Any]] = []
        self.uses = 2
        self._session: tuple[str, Ed25519PrivateKey, str] | None = None

    def session_credential(self, action: str, target: str) -> OperatorCredential:
        """Session + proof for ``action`` on ``target`` (one login, then no password or TOTP per request)."""
        if self._session is None:
            login = self.credential()
            key = Ed25519PrivateKey.generate()
            session = SessionIssuer.for_plane(self.identity).login(login.user, login.password, login.totp,
                                                                   key.public_key(), time.time())
            self._session = (login.user, key, session.token)
        name, key, token = self._session
        return OperatorCredential(user=name, session=token, proof=make_proof(key, token, action, target, time.time()))

    def credential(self) -> OperatorCredential:
        if self.uses >= 2:
            name = f"bench-officer-{len(self.people)}"
            secret = self.users.enrol(name, "security_officer", PASSWORD, time.time()).totp_secret
            self.people.append((name, self._pyotp.TOTP(secret)))
            self.uses = 0
        name, totp = self.people[-1]
        code = totp.at(time.time() + 30 * self.uses)
        self.uses += 1
        return OperatorCredential(user=name, password=PASSWORD, totp=code)


def _changes(floor: Floor) -> dict[str, tuple[tuple[str, str, dict[str, str]], tuple[str, str, dict[str, str]]]]:
    spiffe = floor.topology.spiffe_id(AGENT)
    return {
        "quarantine": (("quarantine", AGENT, {"reason": "bench"}), ("release", AGENT, {})),
        "kill_switch": (("signal.kill", AGENT, {"scope": "agent", "state": "HALTED"}),
                        ("signal.kill", AGENT, {"scope": "agent", "state": "ACTIVE"})),
        "risk": (("signal.risk", AGENT, {"score": "95"}), ("signal.risk", AGENT, {"score": "0"})),
        "intel": (("signal.intel", "bench-match", {"bundle": indicator_bundle([(SPIFFE_ID, spiffe)])}),
                  ("signal.intel", "bench-clear", {"bundle": indicator_bundle([(ADDRESS, "192.0.2.250")])})),
    }


async def _send(floor: Floor, credential: OperatorCredential, action: str, target: str, args: dict[str, str]
                ) -> OperatorReply:
    """One operator request from a thread of its own (its own event loop, like a separate CLI process)."""
    assert floor.plane is not None and floor.server is not None
    request = OperatorRequest(credential=credential, action=action, target=target, args=args)
    port, bundle, control_id = floor.server.bootstrap_port, floor.plane.credentials.bundle_pem, floor.plane.control_id

    def run() -> OperatorReply:
        return asyncio.run(operator_request("127.0.0.1", port, bundle_pem=bundle, control_id=control_id,
                                            request=request))

    return await asyncio.to_thread(run)


def _allowed(floor: Floor, principal: str) -> bool:
    plane = floor.plane
    assert plane is not None
    if plane.is_quarantined(principal):
        return False
    decision = plane.engine.decision_table(principal, time.time()).lookup("submit_order", "risk/orders")
    return decision is not None and decision.allowed is True


def _allowed_at_risk(floor: Floor) -> float:
    return float(floor.stats().get("pre-trade-risk", {}).get("pep_allowed", 0.0))


async def _flowing(floor: Floor, timeout_s: float = 15.0) -> bool:
    """Orders are passing pre-trade-risk's enforcement point now (its allowed count moves)."""
    start = _allowed_at_risk(floor)
    return await floor.wait_for(lambda: _allowed_at_risk(floor) >= start + 50, timeout_s, interval_s=0.005)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 3)


async def measure(floor: Floor, officers: _Officers, kind: str, change: tuple, undo: tuple,
                  refusals: list[AuditEventV1]) -> dict[str, Any]:
    """One sample of ``kind``: change while the algo trades, time it, undo it."""
    principal = floor.topology.spiffe_id(AGENT)
    sample: dict[str, Any] = {"kind": kind}
    await floor.wait_for(lambda: _allowed(floor, principal), 10.0)
    floor.command(AGENT, "bench", orders=BURST, tag=next(_tags))
    commanded = _commanded.setdefault(id(floor), [0])
    commanded[0] += BURST
    sample["flowing"] = await _flowing(floor)
    credential = officers.session_credential(change[0], change[1])
    mark = len(refusals)
    t_sent = time.time()
    reply = await _send(floor, credential, *change)
    t_reply = time.time()
    # the algo was still sending when the reply came (bursts queue behind each other; none is cancelled)
    sample["burst_running"] = floor.stats().get(AGENT, {}).get("bench_sent", 0.0) < commanded[0]
    sample.update(ok=reply.ok, reason=reply.reason, applied=len(reply.applied), missing=list(reply.missing),
                  to_last_ack_ms=_ms(t_sent, t_reply))
    applied_at = float(reply.result.get("applied_at", "0") or 0)
    first_ack = float(reply.result.get("first_ack_at", "0") or 0)
    if applied_at:
        sample["applied_to_last_ack_ms"] = _ms(applied_at, t_reply)
        sample["authentication_ms"] = _ms(t_sent, applied_at)
        if first_ack:
            sample["applied_to_first_ack_ms"] = _ms(applied_at, first_ack)

    def first() -> float | None:
        times = [e.time_ns / 1e9 for e in refusals[mark:] if e.time_ns / 1e9 >= t_sent]
        return min(times) if times else None

    await floor.wait_for(lambda: first() is not None, 2.0, interval_s=0.005)
    refused_at = first()
    if refused_at is not None:
        sample["to_first_refusal_ms"] = _ms(t_sent, refused_at)
        if applied_at:
            sample["applied_to_first_refusal_ms"] = _ms(applied_at, refused_at)
    undone = await _send(floor, officers.credential(), *undo)
    sample["undone"] = undone.ok
    if not undone.ok:
        sample["undo_reason"] = undone.reason
    return sample


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3), "n": len(values)}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(s["kind"] for s in samples):
        rows = [s for s in samples if s["kind"] == kind]
        good = [s for s in rows if s["ok"] and s["flowing"]]
        out[kind] = {"samples": len(rows), "ok": sum(1 for s in rows if s["ok"]),
                     "measured": len(good),  # ok, and the algo was trading when the request left
                     "refusal_seen": sum(1 for s in good if "to_first_refusal_ms" in s),
                     "failures": sorted({s["reason"] for s in rows if not s["ok"]})}
        for key in ("to_last_ack_ms", "applied_to_last_ack_ms", "applied_to_first_ack_ms", "authentication_ms"):
            out[kind][key] = _percentiles([s[key] for s in good if key in s])
        # a first refusal counts only while the algo was still sending its burst when the reply came
        # (else the refusal waits for its strategy's next order, and stale refusals may precede the change)
        trying = [s for s in good if s.get("burst_running")]
        for key in ("to_first_refusal_ms", "applied_to_first_refusal_ms"):
            out[kind][key] = _percentiles([s[key] for s in trying if key in s])
    return out


async def run_operator_bench(home: Path, *, repetitions: int = 20) -> dict[str, Any]:
    """Start a zero-trust bench floor, measure every kind of change ``repetitions`` times, stop it."""
    home = Path(home)
    policies = bench_policies(DEFAULT_POLICIES, home / "bench-policies")
    floor = await start_bench_floor(home / "floor", ZERO_TRUST, policies)
    samples: list[dict[str, Any]] = []
    try:
        plane = floor.plane
        assert plane is not None
        principal = floor.topology.spiffe_id(AGENT)
        refusals: list[AuditEventV1] = []

        def on_event(event: AuditEventV1) -> None:
            if event.principal == principal and (event.decision == "deny" or event.kind in REFUSAL_KINDS):
                refusals.append(event)

        plane.event_listeners.append(on_event)
        officers = _Officers(plane.identity)
        changes = _changes(floor)
        for _ in range(repetitions):
            for kind, (change, undo) in changes.items():
                samples.append(await measure(floor, officers, kind, change, undo, refusals))
        points = sorted(plane.containment.points)
        auto = [i for i in plane.incidents() if not str(i.get("trigger", "")).startswith("manual:")]
    finally:
        await floor.stop()
    return {"kinds": summarize(samples), "repetitions": repetitions, "enforcement_points": points,
            "automatic_incidents": len(auto), "target_ms": 10.0, "burst_orders": BURST,
            "method": ("zero-trust bench floor on loopback; per sample the algo sends a burst of orders, a person's "
                       "OperatorRequest goes to the operator endpoint from its own thread; times from just before "
                       "sending (and from the plane's applied_at, after password+TOTP) to the earliest refusal of the "
                       "algo stamped by an enforcement point, and to the reply (every enforcement point acknowledged); "
                       "then the change is undone the same way"),
            "samples": samples}
