"""``trustfabric data ...`` through the real CLI app on a temporary home: the workload's own credentials, Cedar."""

from __future__ import annotations

import time

import pyotp
import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.cli import app
from trustfabric.home import home_dir
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.store import open_default_store
from trustfabric.identity.users import UserDirectory

runner = CliRunner()
OMS = "spiffe://prod.acme.example/oms/oms"
SETTLEMENT = "spiffe://prod.acme.example/settlement/settlement"
DEV_OMS = "spiffe://dev.acme.example/oms/oms"
RECORD = b'{"client_id":"CL-42","client_name":"Acme Pension","symbol":"AAPL","qty":100}'


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    assert runner.invoke(app, ["ca", "init"]).exit_code == 0
    # security officers issue the certificates and record the hosts' posture
    officers = Pool(UserDirectory(open_default_store(), Emitter("test", MemorySink())))
    for sid, out in ((OMS, "oms"), (SETTLEMENT, "settlement"), (DEV_OMS, "dev-oms")):
        result = runner.invoke(app, ["ca", "issue", sid, "--no-attest", "--out", str(tmp_path / out),
                                     *officers.args()])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["signal", "posture", "attest-local", "oms", "settlement", "analytics",
                                 *officers.args()])
    assert result.exit_code == 0, result.output
    (tmp_path / "order.json").write_bytes(RECORD)
    return tmp_path


def _reason(result) -> str:
    assert result.exit_code != 0, result.output
    return result.stderr.strip().splitlines()[-1].split(":", 1)[0]


def test_put_get_ls_and_refusals(home):
    put = ["data", "put", "order-1", "--file", str(home / "order.json"), "--classification", "client-confidential",
           "--segment", "oms"]
    result = runner.invoke(app, put + ["--as", str(home / "oms")])
    assert result.exit_code == 0, result.output
    sealed = next((home / "home" / "vault").rglob("order-1.sealed")).read_bytes()
    assert b"Acme Pension" not in sealed
    get = ["data", "get", "order-1", "--classification", "client-confidential", "--segment", "oms"]
    result = runner.invoke(app, get + ["--as", str(home / "oms")])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == RECORD
    assert _reason(runner.invoke(app, get + ["--as", str(home / "settlement")])) == "policy.no_permit"
    assert _reason(runner.invoke(app, get + ["--as", str(home / "dev-oms")])) == "token.wrong_trust_domain"
    listing = runner.invoke(app, ["data", "ls"])
    assert listing.exit_code == 0 and "order-1" in listing.stdout and "Acme" not in listing.stdout
    grants = runner.invoke(app, ["data", "grant", "data/oms/trade-history"])
    assert grants.exit_code == 0, grants.output
    assert "analytics/analytics  analyse" in grants.stdout and "settlement/settlement  read" in grants.stdout


def test_rotate_and_shred_need_two_people_with_fresh_totp(home, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_SECOND_PASSWORD", PASSWORD)
    with IdentityPlane(home_dir()) as plane:
        totp = {n: pyotp.TOTP(plane.users().enrol(n, "security_officer", PASSWORD, time.time()).totp_secret) for n in ("dave", "sam")}
    put = ["data", "put", "order-1", "--file", str(home / "order.json"), "--classification", "client-confidential",
           "--segment", "oms", "--as", str(home / "oms")]
    assert runner.invoke(app, put).exit_code == 0
    get = ["data", "get", "order-1", "--classification", "client-confidential", "--segment", "oms",
           "--as", str(home / "oms")]

    def code(name, ahead=0):
        return totp[name].at(time.time() + 30 * ahead)

    same = runner.invoke(app, ["data", "rotate", "oms", "--user", "dave", "--totp", code("dave"),
                               "--second-user", "dave", "--second-totp", code("dave", 1)])
    assert _reason(same) == "data.four_eyes_same_person"
    rotated = runner.invoke(app, ["data", "rotate", "oms", "--user", "dave", "--totp", code("dave", 1),
                                  "--second-user", "sam", "--second-totp", code("sam")])
    assert rotated.exit_code == 0, rotated.output
    assert runner.invoke(app, get).stdout_bytes == RECORD  # still readable after re-wrapping
    stale = runner.invoke(app, ["data", "shred", "oms", "--yes", "--user", "sam", "--totp", code("sam", 1),
                                "--second-user", "dave", "--second-totp", code("dave", -8)])
    assert _reason(stale) == "user.bad_totp"
    assert runner.invoke(app, get).stdout_bytes == RECORD
