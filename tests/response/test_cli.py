"""``trustfabric response`` with no floor running: a person quarantines and releases (password + TOTP, role), bench."""

from __future__ import annotations

import json

import pyotp
import pytest
from typer.testing import CliRunner

from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.commands import response as cmd

ALGO = "spiffe://prod.acme.example/algo/algo-meanrev"


PASSWORD = "correct horse battery staple"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    monkeypatch.delenv("TRUSTFABRIC_TOTP", raising=False)
    return tmp_path


@pytest.fixture()
def people(home):
    """dave the security officer and erin the developer, in the store (no floor running)."""
    from trustfabric.audit.events import Emitter, MemorySink
    from trustfabric.identity.store import open_default_store
    from trustfabric.identity.users import UserDirectory

    users = UserDirectory(open_default_store(), Emitter("test", MemorySink(), SYSTEM_CLOCK))
    now = SYSTEM_CLOCK.now()
    return {name: Codes(pyotp.TOTP(users.enrol(name, role, PASSWORD, now).totp_secret))
            for name, role in (("dave", "security_officer"), ("erin", "developer"))}


class Codes:
    """A person's TOTP codes, one fresh time step per call (a code is accepted once)."""

    def __init__(self, totp: pyotp.TOTP) -> None:
        self.totp, self.step = totp, -1

    def next(self) -> str:
        code = self.totp.at(SYSTEM_CLOCK.now() + 30 * self.step)
        self.step += 1
        return code


def _run(*args, input=None):
    return CliRunner().invoke(cmd.app, list(args), input=input)


def _err(result) -> str:
    return result.stderr if result.stderr_bytes else result.output


def test_quarantine_lists_and_revokes_in_the_identity_store(home, people):
    r = _run("quarantine", ALGO, "--user", "dave", "--totp", people["dave"].next(), "--reason", "beaconing")
    assert r.exit_code == 0, r.output
    assert "in the store" in " ".join(r.output.split())
    from trustfabric.identity.revocation import RevocationSet
    from trustfabric.identity.store import open_default_store

    assert RevocationSet(open_default_store()).is_quarantined(ALGO)
    incidents = json.loads(_run("incidents", "--json").output)
    assert [i["principal"] for i in incidents["incidents"]] == [ALGO]
    assert incidents["incidents"][0]["trigger"] == "manual:user:dave"
    alerts = json.loads(_run("alerts", "--json").output)
    assert alerts[0]["category"] == "manual.operator" and alerts[0]["response"] == "quarantine"
    assert (home / "spool" / "response-cli").is_dir()
    assert "alerts (1)" in _run("alerts").output


def test_quarantine_refused_without_a_person_a_role_or_the_right_code(home, people):
    from trustfabric.identity.revocation import RevocationSet
    from trustfabric.identity.store import open_default_store

    assert "operator.unauthenticated" in _err(_run("quarantine", ALGO, "--totp", "123456"))
    r = _run("quarantine", ALGO, "--user", "erin", "--totp", people["erin"].next())
    assert r.exit_code == 1 and "operator.not_permitted" in _err(r)
    wrong = "000000" if people["dave"].totp.now() != "000000" else "111111"
    r = _run("quarantine", ALGO, "--user", "dave", "--totp", wrong)
    assert r.exit_code == 1 and "user.bad_totp" in _err(r)
    assert not RevocationSet(open_default_store()).is_quarantined(ALGO)
    assert json.loads(_run("incidents", "--json").output)["incidents"] == []


def test_release_refused_for_non_officer_and_wrong_code_then_accepted(home, people):
    assert _run("quarantine", ALGO, "--user", "dave", "--totp", people["dave"].next()).exit_code == 0
    r = _run("release", ALGO, "--user", "erin", "--totp", people["erin"].next())
    assert r.exit_code == 1 and "operator.not_permitted" in _err(r)
    wrong = "000000" if people["dave"].totp.now() != "000000" else "111111"
    r = _run("release", ALGO, "--officer", "dave", "--totp", wrong)
    assert r.exit_code == 1 and "user.bad_totp" in _err(r)
    r = _run("release", ALGO, "--officer", "dave", input=people["dave"].next() + "\n")
    assert r.exit_code == 0, r.output
    from trustfabric.identity.revocation import RevocationSet
    from trustfabric.identity.store import open_default_store

    assert not RevocationSet(open_default_store()).is_quarantined(ALGO)
    assert json.loads(_run("incidents", "--open", "--json").output)["incidents"] == []
    r = _run("release", ALGO, "--user", "dave", "--totp", people["dave"].next())
    assert r.exit_code == 1 and "release.not_quarantined" in _err(r)


def test_bench_prints_json_and_quarantines_only_attackers(home):
    r = _run("bench", "--seconds", "20", "--attacks", "5")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["attackers_quarantined"] == 5 and out["normal_principals_quarantined"] == 0
    assert out["events"] > 1000 and out["events_per_s"] > 0
    assert out["live_ttc_ms_max"] is not None and out["live_ttd_ms_max"] is not None


def test_an_offline_quarantine_is_where_the_next_control_plane_starts(home, people):
    from trustfabric.control.plane import ControlPlane

    r = _run("quarantine", ALGO, "--user", "dave", "--totp", people["dave"].next(), "--reason", "offline")
    assert r.exit_code == 0, r.output
    plane = ControlPlane(home)
    try:
        assert plane.hub.quarantined().get(ALGO)  # the policy flag, from the signal store
        assert plane.containment.open_incident(ALGO) is not None  # the incident, from response.db
        assert plane.is_quarantined(ALGO)
    finally:
        plane.close()
