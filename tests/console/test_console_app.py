"""The console's gatekeeping, in process (Starlette's TestClient): login with TOTP, cookies, CSRF, Cedar per page,
idle expiry, login rate limit. The browser tests (test_console_browser.py) drive a live floor."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from starlette.testclient import TestClient

from tests.people import PASSWORD
from trustfabric.console.app import COOKIE, ConsoleConfig, create_app
from trustfabric.identity.plane import IdentityPlane


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    with IdentityPlane(tmp_path) as plane:
        plane.init("acme.example")
        users = plane.users()
        secrets = {name: users.enrol(name, role, PASSWORD, time.time()).totp_secret
                   for name, role in (("olga", "security_officer"), ("tess", "trader"))}
    return tmp_path, {n: pyotp.TOTP(s) for n, s in secrets.items()}


def _client(home, **config) -> TestClient:
    return TestClient(create_app(ConsoleConfig(home=home, **config)), base_url="https://testserver")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client: TestClient, user: str, code: str):
    page = client.get("/login")
    return client.post("/login", data={"user": user, "password": PASSWORD, "totp": code, "csrf": _csrf(page.text)},
                       follow_redirects=False)


def test_login_needs_the_right_totp_and_sets_a_strict_cookie(home):
    path, totp = home
    with _client(path) as client:
        wrong = login(client, "olga", "000000" if totp["olga"].now() != "000000" else "111111")
        assert wrong.status_code == 401 and "user.bad_totp" in wrong.text
        ok = login(client, "olga", totp["olga"].now())
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = [h for h in ok.headers.get_list("set-cookie") if h.startswith(COOKIE + "=")][0].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        page = client.get("/")
        assert page.status_code == 200 and "user:olga" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_login_without_its_csrf_token_is_refused(home):
    path, totp = home
    with _client(path) as client:
        r = client.post("/login", data={"user": "olga", "password": PASSWORD, "totp": totp["olga"].now()},
                        follow_redirects=False)
        assert r.status_code == 403 and r.json()["reason"] == "console.csrf"


def test_pages_are_cedar_decisions_on_the_role(home):
    path, totp = home
    with _client(path) as client:
        assert login(client, "tess", totp["tess"].now()).status_code == 303
        assert client.get("/").status_code == 200
        assert client.get("/decisions").status_code == 200
        audit = client.get("/audit")
        assert audit.status_code == 403 and "operator.not_permitted" in audit.text
        assert client.get("/identities").status_code == 403
        incidents = client.get("/incidents")
        assert incidents.status_code == 200 and 'action="/incidents/quarantine"' not in incidents.text  # no button


def test_state_changes_need_the_csrf_token(home):
    path, totp = home
    with _client(path) as client:
        login(client, "olga", totp["olga"].now())
        page = client.get("/incidents")
        assert 'action="/incidents/quarantine"' in page.text  # a security officer sees the button
        forged = client.post("/incidents/quarantine", data={"principal": "algo-momentum"}, follow_redirects=False)
        assert forged.status_code == 403 and forged.json()["reason"] == "console.csrf"
        wrong = client.post("/incidents/quarantine", data={"principal": "algo-momentum", "csrf": "x" * 43},
                            follow_redirects=False)
        assert wrong.status_code == 403
        real = client.post("/incidents/quarantine", data={"principal": "algo-momentum", "csrf": _csrf(page.text)},
                           follow_redirects=False)
        assert real.status_code == 303 and "console.no_floor" in real.headers["location"]  # no floor: nothing done


def test_a_session_ends_when_idle_and_logins_are_rate_limited(home):
    path, totp = home
    with _client(path, idle_s=0.2) as client:
        login(client, "olga", totp["olga"].now())
        assert client.get("/", follow_redirects=False).status_code == 200
        time.sleep(0.4)
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    with _client(path) as client:
        codes = [login(client, "tess", "123456").status_code for _ in range(11)]
        assert codes[-1] == 429 and 401 in codes


def test_identities_show_people_and_workloads_to_a_security_officer(home):
    path, totp = home
    with _client(path) as client:
        login(client, "olga", totp["olga"].now())
        page = client.get("/identities")
        assert page.status_code == 200
        assert "<td>olga</td><td>security_officer</td><td>enrolled</td>" in page.text.replace("\n", "")
        assert "<td>tess</td><td>trader</td>" in page.text


def test_reports_are_listed_and_served_but_no_other_file(home):
    path, totp = home
    report = path / "reports" / "demo-1" / "simulate" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>simulator report</body></html>")
    (path / "identity.key").write_text("secret")
    with _client(path) as client:
        login(client, "tess", totp["tess"].now())
        listing = client.get("/reports")
        assert "reports/demo-1/simulate/report.html" in listing.text
        served = client.get("/reports/file", params={"path": "reports/demo-1/simulate/report.html"})
        assert served.status_code == 200 and "simulator report" in served.text
        for other in ("identity.key", "../../etc/passwd", str(path / "identity.key")):
            assert client.get("/reports/file", params={"path": other}).status_code == 404
