"""``trustfabric response``: quarantine, list, release refused without a fresh officer step-up, bench."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from trustfabric.commands import response as cmd
from trustfabric.errors import IdentityError
from trustfabric.response.containment import OfficerFacts

ALGO = "spiffe://prod.acme.example/algo/algo-meanrev"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    return tmp_path


def _run(*args, input=None):
    return CliRunner().invoke(cmd.app, list(args), input=input)


def test_quarantine_lists_and_revokes_in_the_identity_store(home):
    r = _run("quarantine", ALGO, "--operator", "dave", "--reason", "beaconing")
    assert r.exit_code == 0, r.output
    assert "certificates revoked" in r.output
    from trustfabric.identity.revocation import RevocationSet
    from trustfabric.identity.store import open_default_store

    assert RevocationSet(open_default_store()).is_quarantined(ALGO)
    incidents = json.loads(_run("incidents", "--json").output)
    assert [i["principal"] for i in incidents["incidents"]] == [ALGO]
    assert incidents["incidents"][0]["trigger"] == "manual:dave"
    alerts = json.loads(_run("alerts", "--json").output)
    assert alerts[0]["category"] == "manual.operator" and alerts[0]["response"] == "quarantine"
    assert (home / "spool" / "response-cli").is_dir()
    assert "alerts (1)" in _run("alerts").output


def test_release_refused_without_the_users_module(home, monkeypatch):
    _run("quarantine", ALGO, "--operator", "dave")
    monkeypatch.setitem(sys.modules, "trustfabric.identity.users", None)  # import fails
    r = _run("release", ALGO, "--officer", "dave", "--totp", "123456")
    assert r.exit_code == 1 and "response.step_up_unavailable" in (r.stderr if r.stderr_bytes else r.output)
    assert json.loads(_run("incidents", "--open", "--json").output)["incidents"]


def test_release_refused_for_non_officer_and_wrong_code_then_accepted(home, monkeypatch):
    _run("quarantine", ALGO, "--operator", "dave")
    now_box = {}

    def facts(name, code, now, emitter=None):
        now_box["now"] = now
        if code != "111111":
            raise IdentityError("wrong TOTP code", reason="user.mfa_failed")
        roles = ("security_officer",) if name == "dave" else ("trader",)
        return OfficerFacts(name=name, roles=roles, step_up_at=now)

    monkeypatch.setattr(cmd, "officer_facts", facts)
    r = _run("release", ALGO, "--officer", "alice", "--totp", "111111")
    assert r.exit_code == 1 and "release.not_officer" in r.output
    r = _run("release", ALGO, "--officer", "dave", "--totp", "999999")
    assert r.exit_code == 1 and "user.mfa_failed" in r.output
    r = _run("release", ALGO, "--officer", "dave", input="111111\n")
    assert r.exit_code == 0, r.output
    from trustfabric.identity.revocation import RevocationSet
    from trustfabric.identity.store import open_default_store

    assert not RevocationSet(open_default_store()).is_quarantined(ALGO)
    assert json.loads(_run("incidents", "--open", "--json").output)["incidents"] == []
    r = _run("release", ALGO, "--officer", "dave", "--totp", "111111")
    assert r.exit_code == 1 and "release.not_quarantined" in r.output


def test_bench_prints_json_and_quarantines_only_attackers(home):
    r = _run("bench", "--seconds", "20", "--attacks", "5")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["attackers_quarantined"] == 5 and out["normal_principals_quarantined"] == 0
    assert out["events"] > 1000 and out["events_per_s"] > 0
    assert out["live_ttc_ms_max"] is not None and out["live_ttd_ms_max"] is not None


def test_release_with_the_identity_planes_totp_step_up(home):
    import pyotp

    from trustfabric.audit.events import Emitter, MemorySink
    from trustfabric.clock import SYSTEM_CLOCK
    from trustfabric.identity.store import open_default_store
    from trustfabric.identity.users import UserDirectory

    users = UserDirectory(open_default_store(), Emitter("test", MemorySink(), SYSTEM_CLOCK))
    now = SYSTEM_CLOCK.now()
    dave = users.enrol("dave", "security_officer", "correct horse battery staple", now)
    erin = users.enrol("erin", "developer", "correct horse battery staple", now)
    _run("quarantine", ALGO, "--operator", "dave")
    r = _run("release", ALGO, "--officer", "erin", "--totp", pyotp.TOTP(erin.totp_secret).now())
    assert r.exit_code == 1 and "release.not_officer" in r.output
    r = _run("release", ALGO, "--officer", "dave", "--totp", "000000" if pyotp.TOTP(dave.totp_secret).now() != "000000"
             else "111111")
    assert r.exit_code == 1 and "user.bad_totp" in r.output
    r = _run("release", ALGO, "--officer", "dave", "--totp", pyotp.TOTP(dave.totp_secret).now())
    assert r.exit_code == 0, r.output
    assert json.loads(_run("incidents", "--open", "--json").output)["incidents"] == []
