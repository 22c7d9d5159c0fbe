"""The kill switch acting on orders on the running floor (real processes, FIX clients over mTLS).

One floor serves the whole module. Each test leaves every scope ACTIVE again
(through a four-eyes resume), and uses officers of its own, so that one person's
TOTP steps are never shared between tests.

* a halt cancels the orders resting at a venue, in its scope only (agent, firm);
* REDUCING: with a position held, a risk-increasing order is refused with
  ``risk.reducing_only`` and a risk-reducing one (selling part of a long) trades;
* refusals: a halt by a non-privileged person, with a replayed or an old TOTP
  code, changes nothing - the resting order stays working at the venue.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pyotp
import pytest
import pytest_asyncio
import simplefix

from trustfabric.trading.fix import codec
from trustfabric.trading.risk import tick_size
from trustfabric.trading.launcher import Floor
from trustfabric.trading.services.fix_client import START_PRICES, EdgeFixClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

FLOOR = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk", "fix-gateway")
PASSWORD = "correct horse battery"
SYMBOL = "KO"  # the least volatile symbol: an order 2.3% away from the market keeps resting
WAIT_S = 10.0
_names = itertools.count(1)


# ---------------------------------------------------------------------------- people
class Person:
    def __init__(self, floor: Floor, name: str, totp_secret: str) -> None:
        self.floor = floor
        self.name = name
        self.totp = pyotp.TOTP(totp_secret)

    async def kill_switch(self, action: str, scope: str, target: str = "", *, code: str | None = None,
                          step: int = 0) -> dict:
        """``step``: which TOTP step to use (0: now, 1: the next one) - each step logs in once."""
        code = self.totp.at(time.time() + 30 * step) if code is None else code
        return await self.floor.kill_switch(action, scope, target, user=self.name, password=PASSWORD, totp=code)


class People:
    """Enrols people on the floor's identity plane (one directory: one argon2 set-up)."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.directory = floor.plane.identity.users()

    def enrol(self, role: str) -> Person:
        name = f"{role.split('_')[0]}{next(_names)}"
        enrolment = self.directory.enrol(name, role, PASSWORD, time.time())
        return Person(self.floor, name, enrolment.totp_secret)

    async def resume(self, scope: str, target: str = "") -> None:
        """Four-eyes: one officer asks, a second one approves."""
        first, second = self.enrol("risk_officer"), self.enrol("security_officer")
        r = await first.kill_switch("resume", scope, target)
        assert r["ok"] and r["pending"], r
        r = await second.kill_switch("resume", scope, target)
        assert r["ok"] and r["state"] == "ACTIVE" and not r["pending"], r


# ---------------------------------------------------------------------------- FIX clients
class Client:
    """One logged-on FIX session that stays connected to receive its orders' reports."""

    def __init__(self, floor: Floor, name: str, sender: str) -> None:
        self.edge = EdgeFixClient(floor.fix_port, floor.fix_edge["client_dirs"][name], sender)
        self.ids = itertools.count(1)
        self.tag = f"{name}-{time.time_ns()}"

    async def __aenter__(self) -> "Client":
        await self.edge.connect()
        logon = await self.edge.logon(reset=True)
        assert logon is not None and logon.message_type == b"A"
        return self

    async def __aexit__(self, *exc) -> None:
        self.edge.send(self.edge.fix.logout(time.time()))
        await self.edge.read_until(lambda m: m.message_type == b"5", 1.0)
        await self.edge.close()

    def order(self, side: str, qty: int, price: int, account: str = "acct-clients") -> str:
        cl = f"{self.tag}-{next(self.ids)}"
        price -= price % tick_size(price)
        self.edge.send(self.edge.fix.new_order_single(time.time(), cl, SYMBOL, side, qty, price, account=account))
        return cl

    def reports(self, cl: str) -> list[simplefix.FixMessage]:
        return [m for m in self.edge.received if m.message_type == b"8" and m.get(11) == cl.encode()]

    async def first_status(self, cl: str, wanted: tuple[bytes, ...],
                           timeout_s: float = WAIT_S) -> simplefix.FixMessage | None:
        """The first ExecutionReport for ``cl`` whose OrdStatus (39) is one of ``wanted``; None after ``timeout_s``."""
        def match(m: simplefix.FixMessage) -> bool:
            return m.message_type == b"8" and m.get(11) == cl.encode() and m.get(39) in wanted

        seen = [m for m in self.reports(cl) if match(m)] or await self.edge.read_until(match, timeout_s)
        return seen[0] if seen else None

    async def status(self, cl: str, wanted: tuple[bytes, ...], timeout_s: float = WAIT_S) -> simplefix.FixMessage:
        """The first ExecutionReport for ``cl`` whose OrdStatus (39) is one of ``wanted`` (the test fails without)."""
        report = await self.first_status(cl, wanted, timeout_s)
        assert report is not None, \
            f"no 39 in {wanted} for {cl}: {[(m.get(39), m.get(58)) for m in self.reports(cl)]}"
        return report

    async def rejected_with(self, cl: str) -> str:
        report = await self.status(cl, (b"0", b"1", b"2", b"8"))
        assert report.get(39) == b"8", f"{cl} was not rejected: {report}"
        return (report.get(58) or b"").decode()


def resting_buy_price(market: int) -> int:
    """A buy 2.3% under the market: inside the 3% collar, far enough below to keep resting."""
    return market * 977 // 1000


def venue_resting(floor: Floor) -> float:
    return floor.total("venue_resting")


async def rest_one(floor: Floor, client: Client, market: int, account: str = "acct-clients") -> str:
    before = venue_resting(floor)
    cl = client.order("buy", 100, resting_buy_price(market), account)
    report = await client.status(cl, (b"0", b"8"))
    assert report.get(39) == b"0", f"{cl} refused: {report.get(58)}"
    assert await floor.wait_for(lambda: venue_resting(floor) >= before + 1, WAIT_S), "not resting at a venue"
    return cl


# ---------------------------------------------------------------------------- the floor
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def floor(tmp_path_factory):
    floor = Floor(tmp_path_factory.mktemp("killswitch-floor"), "zero-trust", services=FLOOR)
    await floor.start()
    try:
        assert await floor.wait_for(lambda: floor.stats().get("fix-gateway", {}).get("link_up") == 1.0, 20.0)
        yield floor
    finally:
        await floor.stop()


@pytest.fixture(scope="module")
def people(floor) -> People:
    return People(floor)


@pytest_asyncio.fixture(loop_scope="module")
async def market(floor) -> int:
    """The market price of SYMBOL now: the fill price of a marketable buy (risk has its references then)."""
    async with Client(floor, "client-b", "CLIENT-B") as client:
        for _ in range(20):
            cl = client.order("buy", 10, START_PRICES[SYMBOL] * 102 // 100)
            report = await client.first_status(cl, (b"2", b"4", b"8"), 3.0)
            if report is None:  # taken but resting (no offer at that price yet): cancel it, so nothing is left working
                client.edge.send(client.edge.fix.cancel(time.time(), f"{cl}-x", cl, SYMBOL, "buy"))
                ids = (cl.encode(), f"{cl}-x".encode())
                await client.edge.read_until(lambda m: m.message_type == b"9" or (
                    m.message_type == b"8" and m.get(11) in ids and m.get(39) in (b"2", b"4")), WAIT_S)
                report = next((m for m in client.reports(cl) if m.get(39) == b"2"), None)  # filled meanwhile
            if report is not None and report.get(39) == b"2":
                return codec.price_from_fix(report.get(31))
            if report is not None:  # refused by risk: only for want of a reference price yet
                assert report.get(58) in (b"risk.no_reference", b"risk.price_collar"), report
            await asyncio.sleep(0.3)  # market data has not reached risk yet: ask again
    pytest.fail("risk never took an order")


# ---------------------------------------------------------------------------- tests
async def test_halting_an_agent_cancels_its_resting_orders_and_only_its_own(floor, people, market):
    officer = people.enrol("risk_officer")
    async with Client(floor, "client-a", "CLIENT-A") as a, Client(floor, "client-b", "CLIENT-B") as b:
        a_resting = await rest_one(floor, a, market)
        b_resting = await rest_one(floor, b, market)
        halts_before = floor.total("halt_cancels")

        r = await officer.kill_switch("halt", "agent", "client-b")
        assert r["ok"] and r["state"] == "HALTED" and r["cancels"] == 1, r
        canceled = await b.status(b_resting, (b"4",))
        assert canceled.get(150) == b"4" and canceled.get(151) == b"0"
        assert canceled.get(58) == b"killswitch.halted"  # the client is told why (Text)
        assert await floor.wait_for(lambda: venue_resting(floor) == 1, WAIT_S)  # a's order still rests
        assert await floor.wait_for(lambda: floor.total("halt_cancels") == halts_before + 1, WAIT_S)
        assert all(m.get(39) != b"4" for m in a.reports(a_resting))

        assert await b.rejected_with(b.order("buy", 10, market)) == "risk.halted"
        assert (await a.status(a.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"

        await people.resume("agent", "client-b")
        assert (await b.status(b.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"
        a.edge.send(a.edge.fix.cancel(time.time(), f"{a_resting}-x", a_resting, SYMBOL, "buy"))
        confirmed = await a.status(f"{a_resting}-x", (b"4",))  # FIX 4.4: 11 the cancel's ClOrdID, 41 the order's
        assert confirmed.get(41) == a_resting.encode()
        assert await floor.wait_for(lambda: venue_resting(floor) == 0, WAIT_S)


async def test_halting_an_account_cancels_the_orders_of_that_account(floor, people, market):
    officer = people.enrol("security_officer")
    async with Client(floor, "client-a", "CLIENT-A") as a:
        other = await rest_one(floor, a, market, account="acct-other")
        halted = await rest_one(floor, a, market, account="acct-halted")
        r = await officer.kill_switch("halt", "account", "acct-halted")
        assert r["ok"] and r["state"] == "HALTED" and r["cancels"] == 1, r
        await a.status(halted, (b"4",))
        assert await floor.wait_for(lambda: venue_resting(floor) == 1, WAIT_S)
        assert await a.rejected_with(a.order("buy", 10, market, account="acct-halted")) == "risk.halted"
        await people.resume("account", "acct-halted")
        a.edge.send(a.edge.fix.cancel(time.time(), f"{other}-x", other, SYMBOL, "buy"))
        assert (await a.status(f"{other}-x", (b"4",))).get(41) == other.encode()
        assert await floor.wait_for(lambda: venue_resting(floor) == 0, WAIT_S)


async def test_reducing_takes_only_orders_that_shrink_the_position(floor, people, market):
    officer = people.enrol("risk_officer")
    async with Client(floor, "client-a", "CLIENT-A") as a, Client(floor, "client-b", "CLIENT-B") as b:
        fills_before = floor.total("risk_fills")
        bought = a.order("buy", 100, market * 101 // 100)
        assert (await a.status(bought, (b"2", b"8"))).get(39) == b"2"
        fills = sum(1 for m in a.reports(bought) if m.get(39) in (b"1", b"2"))
        assert await floor.wait_for(lambda: floor.total("risk_fills") >= fills_before + fills, WAIT_S)

        r = await officer.kill_switch("reduce", "agent", "client-a")
        assert r["ok"] and r["state"] == "REDUCING", r
        # risk-increasing: buying more, or selling more than the whole long (into a short)
        assert await a.rejected_with(a.order("buy", 10, market * 101 // 100)) == "risk.reducing_only"
        assert await a.rejected_with(a.order("sell", 1000, market * 99 // 100)) == "risk.reducing_only"
        # risk-reducing: selling part of the long trades
        sold = a.order("sell", 60, market * 99 // 100)
        assert (await a.status(sold, (b"2", b"8"))).get(39) == b"2"
        # another agent is not in the REDUCING scope
        assert (await b.status(b.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"

        await people.resume("agent", "client-a")
        assert (await a.status(a.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"


async def test_refused_halts_change_nothing_and_a_firm_halt_cancels_everything(floor, people, market):
    trader, officer = people.enrol("trader"), people.enrol("risk_officer")
    async with Client(floor, "client-a", "CLIENT-A") as a, Client(floor, "client-b", "CLIENT-B") as b:
        a_resting = await rest_one(floor, a, market)
        b_resting = await rest_one(floor, b, market)

        # refused: a person who is not privileged; an officer whose TOTP code is five minutes old
        r = await trader.kill_switch("halt", "firm")
        assert not r["ok"] and r["reason"] == "killswitch.not_privileged", r
        r = await officer.kill_switch("halt", "firm", code=officer.totp.at(time.time() - 300))
        assert not r["ok"] and r["reason"] == "user.bad_totp", r
        # nothing was halted: both orders still rest and new orders trade
        assert venue_resting(floor) == 2 and floor.total("kill_switch_not_active") == 0
        assert all(m.get(39) == b"0" for m in a.reports(a_resting) + b.reports(b_resting))
        fills = floor.total("risk_fills")
        assert (await a.status(a.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"
        # the client's fill report can arrive before pre-trade risk has booked the fill; until it has, risk
        # still counts the order as working (and a halt would cancel it too)
        assert await floor.wait_for(lambda: floor.total("risk_fills") > fills and floor.total("working") == 2, WAIT_S)

        # a privileged officer with fresh MFA halts the firm: every working order is cancelled
        code = officer.totp.at(time.time())
        r = await officer.kill_switch("halt", "firm", code=code)
        assert r["ok"] and r["state"] == "HALTED" and r["cancels"] == 2, r
        await a.status(a_resting, (b"4",))
        await b.status(b_resting, (b"4",))
        assert await floor.wait_for(lambda: venue_resting(floor) == 0 and floor.total("working") == 0, WAIT_S)
        assert await a.rejected_with(a.order("sell", 10, market)) == "risk.halted"
        assert await b.rejected_with(b.order("buy", 10, market)) == "risk.halted"

        await people.resume("firm")
        # the officer's code, seen once, does not halt again (replayed MFA is not fresh MFA)
        r = await officer.kill_switch("halt", "firm", code=code)
        assert not r["ok"] and r["reason"] == "user.totp_replay", r
        assert (await b.status(b.order("buy", 10, market * 101 // 100), (b"2", b"8"))).get(39) == b"2"
        assert await floor.wait_for(lambda: floor.total("kill_switch_not_active") == 0, WAIT_S)
