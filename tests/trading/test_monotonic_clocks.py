"""Durations and timeouts run on the monotonic clock: a wall-clock step moves none of them.

Certificate rotation, pre-trade risk's approvals (signed by risk, checked by the router), the kill
switch's resume request and the FIX session's timers, each driven by a FakeClock whose wall time
jumps while its monotonic time does not (and the other way round).
"""

import msgspec
import pytest

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.protocol import Command
from trustfabric.enforcement.service import Context
from trustfabric.trading import killswitch as ks
from trustfabric.trading.approval import APPROVAL_EXPIRED
from trustfabric.trading.fix import session as fs
from trustfabric.trading.fix.client import FixInitiator
from trustfabric.trading.fix.store import MemorySeqStore
from trustfabric.trading.messages import NewOrder, Quote
from trustfabric.trading.services.base import ServiceRuntime, encode_body, renewal_deadline
from trustfabric.trading.services.risk import RiskService
from trustfabric.trading.services.router import RouterService
from trustfabric.trading.services.wire import OrderAck, RouteReply
from trustfabric.transport.frames import Request

from tests.floor_fixtures import POLICY_DIR

WALL = 1_790_000_000.0
KEY = "11" * 32


class _Creds:
    """A certificate's validity, as the rotation loop reads it."""

    def __init__(self, not_before: float, lifetime: float) -> None:
        self.not_before, self.not_after = not_before, not_before + lifetime


def test_a_wall_clock_step_back_of_more_than_half_a_lifetime_still_renews_on_time():
    clock = FakeClock(WALL)
    creds = _Creds(WALL - 10, 600.0)  # received 10 s into a 10-minute certificate: renew in 290 s
    renew_at = renewal_deadline(creds, clock)
    clock.advance(100.0)
    clock.set(clock.now() - 400.0)  # wall time steps back by more than half the lifetime
    wait = renew_at - clock.monotonic()
    assert wait == pytest.approx(190.0)  # on time: 290 s after receipt
    # the wall-time formula would wait past the certificate's expiry
    assert (creds.not_before + 300.0) - clock.now() > creds.not_after - (WALL + 100.0)


def _runtime(tmp_path, name, clock):
    rt = ServiceRuntime(name, "perimeter", {"home": str(tmp_path), "topology": str(POLICY_DIR / "floor.toml"),
                                            "ports": {}, "approval_key": KEY}, clock=clock)
    rt.sink = MemorySink()
    rt.events = Emitter(name, rt.sink, clock)
    return rt


class _CapturingLink:
    """Stands in for a service's link to a peer (risk -> router, router -> venue): keeps what it would send."""

    up = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def request(self, action, resource, body, **kw) -> bool:
        self.sent.append(body)
        return True


@pytest.fixture
def floor(tmp_path):
    clock = FakeClock(WALL)
    risk_rt, router_rt = _runtime(tmp_path / "r", "pre-trade-risk", clock), _runtime(tmp_path / "o", "order-router",
                                                                                     clock)
    risk, router = RiskService(risk_rt), RouterService(router_rt)
    link = risk.router = _CapturingLink()
    for venue in ("venue-a", "venue-b"):
        router_rt.links[venue] = _CapturingLink()  # type: ignore[assignment]
    risk_svc, router_svc = _Service(), _Service()
    risk.register(risk_svc)
    router.register(router_svc)
    risk.on_market_data(Quote(symbol="AAPL", bid=1_899_000, bid_size=100, ask=1_901_000, ask_size=100,
                              time_ns=int(WALL * 1e9)))
    yield clock, risk, risk_svc, router_svc, link
    risk_rt.spool.close()
    router_rt.spool.close()


class _Service:
    """Collects the handlers a service declares (what GuardedService would route to)."""

    def __init__(self) -> None:
        self.handlers = {}

    def handler(self, *, action, resource, **kw):
        def register(fn):
            self.handlers[action] = fn
            return fn
        return register


def _submit_and_route(clock, risk_svc, router_svc, link, n: int, *, step_wall: float = 0.0, wait: float = 0.0):
    agent = "spiffe://prod.acme.example/algo/algo-momentum"
    order = NewOrder(cl_ord_id=f"o{n}", account="ACC1", agent=agent, symbol="AAPL", side="buy", qty=10,
                     price=1_900_000)
    ack = msgspec.msgpack.decode(risk_svc.handlers["submit_order"](
        Request(rid=n, action="submit_order", resource="risk/orders", body=msgspec.Raw(encode_body(order))),
        Context(None)), type=OrderAck)
    assert ack.ok, ack
    if step_wall:
        clock.set(clock.now() + step_wall)
    if wait:
        clock.advance(wait)
    reply = router_svc.handlers["route_order"](
        Request(rid=n, action="route_order", resource="router/orders", body=msgspec.Raw(link.sent[-1])), Context(None))
    return msgspec.msgpack.decode(reply, type=RouteReply)


def test_a_risk_approval_ttl_is_unaffected_by_a_wall_clock_step(floor):
    clock, _risk, risk_svc, router_svc, link = floor
    for n, step in enumerate((-3600.0, +3600.0)):  # an hour back, an hour forward: the approval is fresh
        reply = _submit_and_route(clock, risk_svc, router_svc, link, n, step_wall=step)
        assert reply.reason != APPROVAL_EXPIRED, reply
        clock.advance(1.0)  # out of the duplicate window
    # while 3 s on the monotonic clock (validity 2 s) expire it, whatever the wall clock says
    reply = _submit_and_route(clock, risk_svc, router_svc, link, 9, step_wall=-3.0, wait=3.0)
    assert (reply.ok, reply.reason) == (False, APPROVAL_EXPIRED)


def _kill_switch(risk, clock, action: str, operator: str) -> None:
    risk.on_command(Command(name="killswitch", args={
        "action": action, "scope": ks.FIRM, "target": "", "operator": operator, "privileged": "1",
        "mfa_at": repr(clock.now() - 5.0)}))


def test_a_resume_request_expires_on_the_monotonic_clock_not_the_wall_clock(floor):
    clock, risk, *_ = floor
    switch = risk.core.checker.killswitch
    _kill_switch(risk, clock, "halt", "user:alice")
    assert switch.state_of(ks.FIRM) == ks.HALTED
    _kill_switch(risk, clock, "resume", "user:alice")  # the first pair of eyes
    clock.advance(switch.request_ttl_s + 1)
    clock.set(clock.now() - 3600.0)  # the wall clock steps back: the request is still too old
    _kill_switch(risk, clock, "resume", "user:bob")
    assert switch.state_of(ks.FIRM) == ks.HALTED
    _kill_switch(risk, clock, "resume", "user:alice")
    clock.advance(10.0)
    clock.set(clock.now() + 3600.0)  # the wall clock steps forward: the request is 10 s old
    _kill_switch(risk, clock, "resume", "user:bob")
    assert switch.state_of(ks.FIRM) == ks.ACTIVE


def test_fix_timers_run_on_the_monotonic_clock():
    mono = 500.0
    s = fs.FixSession("GW", "spiffe://test.acme/clients/c1", {"C1": "spiffe://test.acme/clients/c1"},
                      MemorySeqStore(), now=WALL, mono=mono)
    c = FixInitiator("C1", "GW", heartbeat_s=30)
    assert isinstance(s.on_bytes(c.logon(WALL), WALL, mono).events[0], fs.LoggedOn)
    # the wall clock jumps an hour ahead, monotonic time 1 s: no heartbeat, no TestRequest, no timeout
    assert not s.on_timer(WALL + 3600.0, mono + 1.0).outgoing
    # 37 s of monotonic silence while the wall clock stepped back: the TestRequest goes out
    out = s.on_timer(WALL - 3600.0, mono + 37.0)
    assert [m.message_type for raw in out.outgoing for m in c.receive(raw)][0] == b"1"
    # the logon timeout of a session that never logs on runs on the monotonic clock too
    idle = fs.FixSession("GW", "x", {}, MemorySeqStore(), now=WALL, mono=mono)
    assert not idle.on_timer(WALL + 3600.0, mono + 1.0).disconnect
    assert idle.on_timer(WALL - 3600.0, mono + 11.0).disconnect
