"""``trustfabric login | logout | whoami`` and ``user add`` through the real CLI app, on temporary homes.

The person enrolled first is the bootstrap; after that a logged-in security officer enrols
people without any prompt, the session is useless on another machine (no machine key, or
another one), a trader is refused by Cedar, and logout ends every copy of the session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time

import pyotp
import pytest
from typer.testing import CliRunner

from trustfabric.audit.events import decode_event
from trustfabric.audit.spool import Ack, read_spool_records
from trustfabric.cli import app
from trustfabric.commands.common import offline_operator_authority, operator_credential, operator_plane
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import OperatorCache, OperatorCredential, make_proof
from trustfabric.identity.plane import IdentityPlane

runner = CliRunner()
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    for var in ("TRUSTFABRIC_USER", "TRUSTFABRIC_PASSWORD", "TRUSTFABRIC_TOTP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input="", env=env)


def refusal(result) -> str:
    """The last refusal line (stderr): ``reason: detail``."""
    assert result.exit_code != 0, result.output
    reasons = [m.group(1) for m in re.finditer(r"^([a-z_]+\.[a-z_.]+)(?::|$)", result.stderr, re.M)]
    assert reasons, result.stderr
    return reasons[-1]


def enrol(name: str, role: str, env: dict[str, str] | None = None) -> pyotp.TOTP:
    added = run("user", "add", name, "--role", role, "--password", PASSWORD, env=env)
    assert added.exit_code == 0, added.output + added.stderr
    return pyotp.parse_uri(next(line for line in added.stdout.splitlines() if line.startswith("otpauth://")))


def login(name: str, totp: pyotp.TOTP):
    return run("login", name, "--totp", totp.now(), env={"TRUSTFABRIC_PASSWORD": PASSWORD})


def events(home, action: str) -> list:
    out = []
    for _, _, payload in read_spool_records(home / "spool" / "operator-cli", Ack(0, 0)):
        event = decode_event(payload)
        if event.action == action:
            out.append(event)
    return out


def test_bootstrap_then_only_a_logged_in_security_officer_enrols(home) -> None:
    dave = enrol("dave", "security_officer")
    assert [(e.principal, e.detail["bootstrap"]) for e in events(home, "user.enrol")] == [("bootstrap", True)]
    assert refusal(run("user", "add", "alice", "--role", "trader", "--password", PASSWORD)) \
        == "operator.unauthenticated"
    logged = login("dave", dave)
    assert logged.exit_code == 0, logged.output + logged.stderr
    assert "dave" in logged.stdout and "security_officer" in logged.stdout
    for name in (OperatorCache.KEY_FILE, OperatorCache.SESSION_FILE):
        assert stat.S_IMODE(os.stat(home / "operator" / name).st_mode) == 0o600
    who = run("whoami")
    assert who.exit_code == 0 and "dave" in who.stdout, who.output
    enrol("alice", "trader")  # no --user, no password, no TOTP, no input: the session and the machine key
    assert [(e.principal, e.detail["bootstrap"]) for e in events(home, "user.enrol")] \
        == [("bootstrap", True), ("user:dave", False)]
    allowed = [e for e in events(home, "operator.user.add") if e.decision == "allow"]
    assert [(e.principal, e.detail["via"]) for e in allowed] == [("user:dave", "session")]
    assert [e.principal for e in events(home, "operator.login")] == ["user:dave"]


def test_a_wrong_totp_at_login_is_refused_and_counted(home) -> None:
    dave = enrol("dave", "security_officer")
    wrong = "000000" if dave.now() != "000000" else "111111"
    assert refusal(run("login", "dave", "--totp", wrong, env={"TRUSTFABRIC_PASSWORD": PASSWORD})) == "user.bad_totp"
    assert not (home / "operator" / OperatorCache.SESSION_FILE).exists()
    with IdentityPlane(home) as plane:
        assert plane.store.get_user("dave").failed_attempts == 1


def test_a_trader_may_not_enrol(home) -> None:
    dave = enrol("dave", "security_officer")
    assert login("dave", dave).exit_code == 0
    alice = enrol("alice", "trader")
    assert login("alice", alice).exit_code == 0
    assert refusal(run("user", "add", "bob", "--role", "trader", "--password", PASSWORD)) == "operator.not_permitted"
    denied = [e for e in events(home, "operator.user.add") if e.decision == "deny"]
    assert [(e.principal, e.reason) for e in denied] == [("user:alice", "operator.not_permitted")]


def test_a_session_copied_to_another_home_is_useless(home, tmp_path, monkeypatch) -> None:
    dave = enrol("dave", "security_officer")
    assert login("dave", dave).exit_code == 0
    other = tmp_path / "elsewhere"
    (other / "operator").mkdir(parents=True)
    shutil.copy(home / "identity.db", other / "identity.db")  # the same store (a shared one, say)
    shutil.copy(home / "operator" / OperatorCache.SESSION_FILE, other / "operator" / OperatorCache.SESSION_FILE)
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(other))
    # without the machine key the session is not used: a password would be needed, and none is given
    result = run("user", "add", "eve", "--role", "trader", "--password", PASSWORD)
    assert result.exit_code != 0 and "operator.session_unusable" in result.stderr
    assert refusal(run("whoami")) == "operator.session_unusable"
    # with another machine key, the proof is refused by the identity plane
    OperatorCache(other / "operator").machine_key(create=True)
    assert refusal(run("user", "add", "eve", "--role", "trader", "--password", PASSWORD)) == "operator.proof_invalid"


def test_logout_ends_every_copy_and_tampering_is_refused(home, tmp_path) -> None:
    dave = enrol("dave", "security_officer")
    assert login("dave", dave).exit_code == 0
    session_file = home / "operator" / OperatorCache.SESSION_FILE
    copy = session_file.read_bytes()
    cached = json.loads(copy)
    header, payload, signature = cached["token"].split(".")
    session_file.write_text(json.dumps(dict(cached, token=f"{header}.{payload}x.{signature}")))
    assert refusal(run("whoami")) == "operator.session_invalid"
    session_file.write_bytes(copy)
    out = run("logout")
    assert out.exit_code == 0 and "logged out dave" in out.stdout
    assert not session_file.exists() and (home / "operator" / OperatorCache.KEY_FILE).exists()
    assert refusal(run("whoami")) == "operator.no_session"
    session_file.write_bytes(copy)  # the copy kept before logout: ended in the store
    os.chmod(session_file, 0o600)
    assert refusal(run("whoami")) == "operator.session_ended"
    assert [e.principal for e in events(home, "operator.logout") if e.decision == "allow"] == ["user:dave"]


def test_offline_step_up_through_the_cached_session(home) -> None:
    """No floor runs: the command's own authority (Cedar from policies/, the stored signals) takes the session;
    a release needs a TOTP code with the request, a quarantine does not."""
    dave = enrol("dave", "security_officer")
    assert login("dave", dave).exit_code == 0
    quarantine = operator_credential(None, action="quarantine", target="algo-meanrev")
    assert quarantine.session and quarantine.proof and not quarantine.password
    cache = OperatorCache(home / "operator")
    token = cache.session().token
    bare_release = OperatorCredential(user="dave", session=token, proof=make_proof(
        cache.machine_key(), token, "release", "algo-meanrev", time.time()))
    release = operator_credential(None, step_up=dave.at(time.time() + 30), action="release", target="algo-meanrev")
    with operator_plane() as plane:
        authority = offline_operator_authority(plane)
        assert authority.authorize(quarantine, "quarantine", "algo-meanrev", time.time()).session_id
        with pytest.raises(TrustFabricError) as info:
            authority.authorize(bare_release, "release", "algo-meanrev", time.time())
        assert info.value.reason == "user.step_up_required"
        assert authority.authorize(release, "release", "algo-meanrev", time.time()).step_up_at > 0
