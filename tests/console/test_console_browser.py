"""The console in a real browser (Playwright driving Debian's Chromium) against a live zero-trust floor.

One floor, one console, several people: a wrong TOTP refused and the right one let in; a
decision made on the floor appearing on the live page; a quarantine from the page
contained at every enforcement point and the map drawing the algo cut off; a trader's
forged POST refused by the control plane; a kill-switch resume that needs a second
person; a POST without the CSRF token refused. Every page is screenshotted into the
test's directory (and the overview into docs/console.png for the README).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pyotp
import pytest

from tests.people import PASSWORD
from trustfabric.console.server import start_console
from trustfabric.trading.launcher import Floor

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                 "(.ci/run installs it)")]

SERVICES = ("market-data", "algo-momentum", "pre-trade-risk", "order-router", "venue-a", "venue-b", "oms",
            "settlement")
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def _login(page, base: str, user: str, code: str) -> None:
    await page.goto(base + "login")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=totp]", code)
    await page.click("button[type=submit]")


async def _csrf(page) -> str:
    return await page.get_attribute("form[action='/logout'] input[name=csrf]", "value")


async def test_the_console_on_a_live_floor_in_a_real_browser(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    floor = Floor(home, "zero-trust", services=SERVICES, collect_interval_s=0.25)
    await floor.start()
    web = None
    try:
        users = floor.plane.identity.users()
        totp = {name: pyotp.TOTP(users.enrol(name, role, PASSWORD, time.time()).totp_secret)
                for name, role in (("olga", "security_officer"), ("sam", "security_officer"), ("tess", "trader"),
                                   ("rita", "risk_officer"), ("ruth", "risk_officer"))}
        code = lambda who, ahead=0: totp[who].at(time.time() + 30 * ahead)  # noqa: E731
        web = await start_console(home, port=0, https=True)
        base = web.url
        assert base.startswith("https://127.0.0.1:")
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            officer = await browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
            page = await officer.new_page()

            # login: a wrong code is refused, the right one lets the person in
            await _login(page, base, "olga", "000000" if code("olga") != "000000" else "111111")
            assert "user.bad_totp" in await page.inner_text("#login-error")
            await page.screenshot(path=str(shots / "login.png"))
            await _login(page, base, "olga", code("olga"))
            await page.wait_for_selector("#services")
            assert "user:olga" in await page.inner_text("header")
            assert await floor.wait_for(lambda: floor.total("pep_allowed") > 20, 30.0)
            await page.reload()
            assert "algo-momentum" in await page.inner_text("#services")
            await page.screenshot(path=str(shots / "overview.png"), full_page=True)

            # live decisions: the floor's decisions stream in (the delay is printed, not asserted)
            await page.goto(base + "decisions")
            await page.wait_for_selector("#decisions tbody tr", timeout=15_000)
            stamps = await page.eval_on_selector_all("#decisions tbody tr td:first-child",
                                                     "cells => cells.map(c => c.textContent)")
            print(f"live decisions: {len(stamps)} rows within the first seconds; first at {stamps[-1]} UTC")
            await page.click("#pause")
            assert await page.inner_text("#status") == "paused"
            await page.screenshot(path=str(shots / "decisions.png"))

            # a quarantine from the page: contained everywhere, the map cuts the algo off
            await page.goto(base + "incidents")
            await page.select_option("#quarantine select[name=principal]", "algo-momentum")
            await page.fill("#quarantine input[name=reason]", "console test")
            await page.click("#quarantine button")
            message = await page.inner_text("#message")
            assert message.startswith("ok:") and "confirmed by" in message, message
            assert floor.plane.is_quarantined(floor.plane.spiffe_id("algo-momentum"))
            await page.screenshot(path=str(shots / "incidents.png"), full_page=True)
            await page.goto(base + "map")
            await page.wait_for_function("document.getElementById('cut-off').textContent.includes('algo-momentum')",
                                         timeout=10_000)
            assert "(cut off)" in await page.text_content("g[data-node='algo-momentum']")
            await page.screenshot(path=str(shots / "map.png"))
            for name in ("identities", "audit", "reports", "killswitch"):
                await page.goto(base + name)
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

            # CSRF: a state change without the token is refused before anything happens
            no_token = await page.request.post(base + "incidents/release", form={"principal": "algo-momentum"},
                                               max_redirects=0)
            assert no_token.status == 403 and (await no_token.json())["reason"] == "console.csrf"

            # a trader: no quarantine button, and a hand-made POST refused by the control plane
            trader_ctx = await browser.new_context(ignore_https_errors=True)
            trader = await trader_ctx.new_page()
            await _login(trader, base, "tess", code("tess"))
            await trader.goto(base + "incidents")
            assert await trader.query_selector("#quarantine") is None
            forged = await trader.request.post(base + "incidents/quarantine",
                                               form={"principal": "venue-a", "csrf": await _csrf(trader)},
                                               max_redirects=0)
            assert forged.status == 303 and "operator.not_permitted" in forged.headers["location"].replace("%20", " ")
            assert not floor.plane.is_quarantined(floor.plane.spiffe_id("venue-a"))

            # kill switch: a risk officer halts; resume needs a second, different person
            risk_ctx = await browser.new_context(ignore_https_errors=True)
            risk = await risk_ctx.new_page()
            await _login(risk, base, "rita", code("rita"))

            async def kill_switch(p, command: str, totp_code: str) -> str:
                await p.goto(base + "killswitch")
                await p.select_option("#killswitch select[name=command]", command)
                await p.select_option("#killswitch select[name=scope]", "firm")
                await p.fill("#killswitch input[name=totp]", totp_code)
                await p.click("#killswitch button")
                return await p.inner_text("#message")

            halted = await kill_switch(risk, "halt", code("rita", 1))
            assert halted.startswith("ok:"), halted
            # (a TOTP code is good once and only after the last one used: another risk officer asks to resume)
            ruth_ctx = await browser.new_context(ignore_https_errors=True)
            ruth = await ruth_ctx.new_page()
            await _login(ruth, base, "ruth", code("ruth"))
            first = await kill_switch(ruth, "resume", code("ruth", 1))
            assert first.startswith("ok:") and "pending=1" in first, first  # a request, not yet applied
            await page.goto(base + "killswitch")
            second = await kill_switch(page, "resume", code("olga", 1))
            assert second.startswith("ok:") and "pending=0" in second, second  # the second person approved
            await page.screenshot(path=str(shots / "killswitch.png"))
            await browser.close()
    finally:
        if web is not None:
            await web.stop()
        await floor.stop()
    print(f"screenshots: {shots}")
    DOCS.mkdir(exist_ok=True)
    shutil.copy(shots / "map.png", DOCS / "console.png")
    assert all((shots / f"{n}.png").stat().st_size > 1000 for n in
               ("login", "overview", "decisions", "incidents", "map", "identities", "audit", "reports", "killswitch"))
    assert re.match(r"https://127\.0\.0\.1:\d+/", base)
