"""``trustfabric release ...`` through the real CLI: provenance by the build identity, approvals, promotion."""

from __future__ import annotations

import time

import pyotp
import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.cli import app
from trustfabric.home import home_dir
from trustfabric.identity.attestation import code_digest
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.store import open_default_store
from trustfabric.identity.users import UserDirectory

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    assert runner.invoke(app, ["ca", "init"]).exit_code == 0
    totp = {}
    with IdentityPlane(home_dir()) as plane:
        users = plane.users()
        for name, role in (("erin", "developer"), ("fred", "developer"), ("dave", "security_officer"),
                           ("sam", "security_officer")):
            totp[name] = pyotp.TOTP(users.enrol(name, role, PASSWORD, time.time()).totp_secret)
    officers = Pool(UserDirectory(open_default_store(), Emitter("test", MemorySink())))
    for sid, out in (("spiffe://dev.acme.example/build/builder", "build"), ("spiffe://dev.acme.example/oms/oms", "oms")):
        result = runner.invoke(app, ["ca", "issue", sid, "--no-attest", "--out", str(tmp_path / out),
                                     *officers.args()])
        assert result.exit_code == 0, result.output
    (tmp_path / "algo.whl").write_bytes(b"momentum-algo 2.4.0")
    return tmp_path, totp


def _reason(result) -> str:
    assert result.exit_code != 0, result.output
    return result.stderr.strip().splitlines()[-1].split(":", 1)[0]


def _code(totp, name: str, ahead: int = 0) -> str:
    return totp[name].at(time.time() + 30 * ahead)


def test_release_through_the_gateway(home):
    tmp, totp = home
    artefact = str(tmp / "algo.whl")
    digest = code_digest(tmp / "algo.whl")
    prov = ["release", "provenance", artefact, "--out"]
    assert runner.invoke(app, prov + [str(tmp / "prov.json"), "--as", str(tmp / "build")]).exit_code == 0
    assert runner.invoke(app, prov + [str(tmp / "bad.json"), "--as", str(tmp / "oms")]).exit_code == 0
    submit = ["release", "submit", artefact]
    assert _reason(runner.invoke(app, submit + ["--user", "fred", "--totp", _code(totp, "fred")])) \
        == "release.no_provenance"
    assert _reason(runner.invoke(app, submit + ["--user", "sam", "--totp", _code(totp, "sam"),
                                                "--provenance", str(tmp / "bad.json"),
                                                "--build-cert", str(tmp / "oms" / "cert.pem")])) \
        == "release.provenance_not_build"
    result = runner.invoke(app, submit + ["--user", "erin", "--totp", _code(totp, "erin"),
                                          "--provenance", str(tmp / "prov.json"),
                                          "--build-cert", str(tmp / "build" / "cert.pem")])
    assert result.exit_code == 0, result.output
    assert _reason(runner.invoke(app, ["ca", "promote", digest, "--domain", "prod.acme.example"])) \
        == "release.gateway_required"
    for who in ("fred", "sam"):  # their next TOTP step: a code is good once
        ok = runner.invoke(app, ["release", "approve", digest, "--env", "dev", "--user", who,
                                 "--totp", _code(totp, who, 1)])
        assert ok.exit_code == 0, ok.output
    ok = runner.invoke(app, ["release", "promote", digest, "--env", "dev", "--user", "dave",
                             "--totp", _code(totp, "dave")])
    assert ok.exit_code == 0, ok.output
    with IdentityPlane(home_dir()) as plane:
        assert plane.releases.is_promoted("dev.acme.example", digest)
        assert not plane.releases.is_promoted("test.acme.example", digest)
    assert _reason(runner.invoke(app, ["release", "approve", digest, "--env", "test", "--user", "erin",
                                       "--totp", _code(totp, "erin", 1)])) == "release.author_approval"
    assert _reason(runner.invoke(app, ["release", "promote", digest, "--env", "prod", "--user", "dave",
                                       "--totp", _code(totp, "dave", 1)])) == "release.out_of_order"
    listing = runner.invoke(app, ["release", "ls"])
    assert listing.exit_code == 0 and digest[:16] in listing.stdout
