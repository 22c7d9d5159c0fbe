"""``trustfabric ca`` / ``user`` / ``token`` through the real CLI app, on a temporary home."""

from __future__ import annotations

import json
import os
import stat
import time

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.cli import app
from trustfabric.identity.attestation import code_digest
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import encode_signed

runner = CliRunner()
ALGO = "spiffe://prod.acme.example/algo/momentum"
OMS = "spiffe://prod.acme.example/trading/oms"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    result = runner.invoke(app, ["ca", "init"])
    assert result.exit_code == 0, result.output
    _officers.clear()
    return tmp_path / "home"


_officers: list[Pool] = []


def run(*args: str):
    return runner.invoke(app, list(args))


def op(*args: str):
    """A state-changing command, run by a security officer of the store (password + TOTP)."""
    if not _officers:
        from trustfabric.audit.events import Emitter, MemorySink
        from trustfabric.identity.store import open_default_store
        from trustfabric.identity.users import UserDirectory

        _officers.append(Pool(UserDirectory(open_default_store(), Emitter("test", MemorySink()))))
    return runner.invoke(app, [*args, *_officers[0].args()])


def refusal(result) -> str:
    """The one refusal line (stderr), checked to be exactly one line with a dotted reason."""
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0].split(":", 1)[0]


def test_help_on_every_command() -> None:
    for group, commands in {"ca": ["init", "issue", "revoke", "promote", "rotate", "bundle", "register-host"],
                            "user": ["add", "login", "list"],
                            "token": ["issue", "verify", "jwks", "rotate-key"]}.items():
        for command in commands:
            result = run(group, command, "--help")
            assert result.exit_code == 0 and "Usage" in result.output, (group, command)


def test_init_creates_three_domains_with_private_keys(home) -> None:
    for env in ("prod", "test", "dev"):
        keys = list((home / "ca" / f"{env}.acme.example").glob("*.key"))
        assert keys and all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    assert (home / "identity.db").exists()
    assert run("ca", "init", "--firm", "acme.example").exit_code == 0  # idempotent


def test_issue_no_attest_writes_credentials(tmp_path) -> None:
    result = op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--ttl", "900", "--no-attest")
    assert result.exit_code == 0, result.output
    creds = WorkloadCredentials.load(tmp_path / "algo")
    assert str(creds.spiffe_id) == ALGO
    assert stat.S_IMODE(os.stat(tmp_path / "algo" / "key.pem").st_mode) == 0o600
    assert abs(creds.not_after - (time.time() + 900)) < 60


def test_issue_without_evidence_is_refused(tmp_path) -> None:
    assert refusal(run("ca", "issue", ALGO, "--out", str(tmp_path / "x"))) == "attest.missing_evidence"
    assert refusal(op("ca", "issue", "spiffe://PROD/x", "--out", str(tmp_path / "x"), "--no-attest")) \
        == "spiffe.invalid"
    assert refusal(op("ca", "issue", ALGO, "--out", str(tmp_path / "x"), "--no-attest", "--ttl", "7200")) \
        == "cert.ttl"


def test_attested_issue_and_its_refusals(tmp_path) -> None:
    agent_key = Ed25519PrivateKey.generate()
    agent = HostPostureAgent("host-1", agent_key)
    raw = agent_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "agent.pub").write_bytes(raw)
    assert run("ca", "register-host", "host-1", "--public-key", str(tmp_path / "agent.pub")).exit_code == 0
    digest = code_digest(b"momentum build 7")
    (tmp_path / "posture.json").write_bytes(encode_signed(agent.report(time.time())))
    (tmp_path / "stale.json").write_bytes(encode_signed(agent.report(time.time() - 3600)))
    args = ["ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--digest", digest]
    assert refusal(run(*args, "--posture", str(tmp_path / "posture.json"))) == "attest.unpromoted_digest"
    assert op("ca", "promote", digest, "--domain", "prod.acme.example").exit_code == 0
    assert refusal(run(*args, "--posture", str(tmp_path / "stale.json"))) == "posture.stale"
    (tmp_path / "garbage.json").write_text("{}")
    assert refusal(run(*args, "--posture", str(tmp_path / "garbage.json"))).startswith("posture.")
    ok = run(*args, "--posture", str(tmp_path / "posture.json"))
    assert ok.exit_code == 0, ok.output
    assert str(WorkloadCredentials.load(tmp_path / "algo").spiffe_id) == ALGO


def test_bound_token_issue_verify_and_refusals(tmp_path) -> None:
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo2"), "--no-attest").exit_code == 0
    dev_id = "spiffe://dev.acme.example/algo/momentum"
    assert op("ca", "issue", dev_id, "--out", str(tmp_path / "dev"), "--no-attest").exit_code == 0
    cert = str(tmp_path / "algo" / "cert.pem")
    issued = run("token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", cert)
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    verified = run("token", "verify", token, "--aud", OMS, "--cert", cert)
    assert verified.exit_code == 0, verified.output
    claims = json.loads(verified.stdout)
    assert claims["sub"] == ALGO and claims["aud"] == [OMS] and "x5t#S256" in claims["cnf"]

    assert refusal(run("token", "verify", token, "--aud", "spiffe://prod.acme.example/x/y", "--cert", cert)) \
        == "token.wrong_aud"
    assert refusal(run("token", "verify", token, "--aud", OMS)) == "token.cert_required"
    assert refusal(run("token", "verify", token, "--aud", OMS, "--cert", str(tmp_path / "algo2" / "cert.pem"))) \
        == "token.cnf_mismatch"
    assert refusal(run("token", "verify", token, "--aud", OMS, "--cert", str(tmp_path / "dev" / "cert.pem"))) \
        == "cert.wrong_trust_domain"
    head, body, _ = token.split(".")
    assert refusal(run("token", "verify", f"{head}.{body}.", "--aud", OMS, "--cert", cert)) == "token.bad_signature"
    assert refusal(run("token", "verify", "not-a-token", "--aud", OMS)) == "token.malformed"
    assert refusal(run("token", "issue", "--sub", ALGO, "--aud", OMS)) == "token.unbound"


def test_revoke_by_serial_and_by_id(tmp_path) -> None:
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    cert = str(tmp_path / "algo" / "cert.pem")
    serial = WorkloadCredentials.load(tmp_path / "algo").serial
    token = run("token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", cert).stdout.strip()
    assert run("token", "verify", token, "--aud", OMS, "--cert", cert).exit_code == 0
    result = op("ca", "revoke", str(serial))
    assert result.exit_code == 0 and "version 1" in result.output
    assert refusal(run("token", "verify", token, "--aud", OMS, "--cert", cert)) == "cert.revoked"
    assert refusal(run("token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", cert)) == "cert.revoked"
    assert op("ca", "revoke", "spiffe://prod.acme.example/trading/sor").exit_code == 0
    assert refusal(op("ca", "revoke", "not-a-serial")) == "revocation.bad_target"


def test_user_add_login_and_person_token() -> None:
    added = run("user", "add", "alice", "--role", "trader", "--password", "correct horse battery")
    assert added.exit_code == 0, added.output
    uri = next(line for line in added.stdout.splitlines() if line.startswith("otpauth://"))
    totp = pyotp.parse_uri(uri)
    assert refusal(run("user", "add", "bob", "--role", "ceo", "--password", "correct horse battery")) \
        == "user.bad_role"
    assert refusal(run("user", "login", "alice", "--code", "000000" if totp.now() != "000000" else "111111",
                       "--password", "correct horse battery")) == "user.bad_totp"
    code = totp.now()
    issued = run("token", "issue", "--sub", "alice", "--aud", "console", "--code", code,
                 "--password", "correct horse battery")
    assert issued.exit_code == 0, issued.output
    claims = json.loads(run("token", "verify", issued.stdout.strip(), "--aud", "console").stdout)
    assert claims["amr"] == ["pwd", "otp"] and "auth_time" in claims
    # the same TOTP code again, same step: replay
    assert refusal(run("user", "login", "alice", "--code", code, "--password", "correct horse battery")) \
        == "user.totp_replay"


def test_jwks_and_key_rotation() -> None:
    first = json.loads(run("token", "jwks").stdout)
    assert len(first["keys"]) == 1 and first["keys"][0]["alg"] == "EdDSA"
    assert op("token", "rotate-key").exit_code == 0
    second = json.loads(run("token", "jwks").stdout)
    assert len(second["keys"]) == 2


def test_ca_rotation_keeps_old_in_bundle() -> None:
    before = run("ca", "bundle", "--domain", "prod.acme.example").stdout.count("BEGIN CERTIFICATE")
    assert op("ca", "rotate", "--domain", "prod.acme.example", "--overlap", "600").exit_code == 0
    after = run("ca", "bundle", "--domain", "prod.acme.example").stdout.count("BEGIN CERTIFICATE")
    assert (before, after) == (2, 4)


def test_demo_walkthrough_refuses_every_forgery() -> None:
    import io

    from rich.console import Console

    from trustfabric.commands.demo import identity_walkthrough

    out = io.StringIO()
    summary = identity_walkthrough(Console(file=out, width=120))
    assert summary["all_refused"] is True
    assert summary["refusals"]["alg none"] == "token.alg_none"
    assert summary["refusals"]["tampered_build"] == "attest.unpromoted_digest"
    assert summary["refusals"]["dev certificate at a prod peer"] == "cert.wrong_trust_domain"
    assert summary["workload"]["spiffe_id"] == ALGO
    assert "token.cnf_mismatch" in out.getvalue()


def test_no_attest_bypass_lands_in_the_audit_spool(home, tmp_path) -> None:
    from trustfabric.audit.events import Kind, decode_event
    from trustfabric.audit.spool import Ack, read_spool_records

    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    refusal(run("ca", "issue", ALGO, "--out", str(tmp_path / "x"), "--digest", "ab" * 32,
                "--posture", str(tmp_path / "missing.json")))
    events = [decode_event(p) for _, _, p in read_spool_records(home / "spool" / "identity", Ack())]
    kinds = [e.kind for e in events]
    assert Kind.ADMIN_ACTION in kinds and Kind.CERT_ISSUED in kinds
    bypass = next(e for e in events if e.action == "cert.issue_unattested")
    assert bypass.resource == ALGO and bypass.reason == "attest.bypassed"
    refused = [e for e in events if e.kind == Kind.CERT_REFUSED]
    assert refused and refused[0].reason == "posture.unsigned" and refused[0].decision == "deny"
    assert [e.seq for e in events] == sorted({e.seq for e in events})


def test_state_changing_commands_need_an_authorized_person(tmp_path, monkeypatch) -> None:
    from trustfabric.audit.events import Emitter, MemorySink
    from trustfabric.identity.store import open_default_store
    from trustfabric.identity.users import UserDirectory
    from tests.people import enrol

    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    issue = ("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest")
    assert refusal(run(*issue, "--totp", "123456")) == "operator.unauthenticated"
    trader = enrol(UserDirectory(open_default_store(), Emitter("test", MemorySink())), "tess", "trader")
    assert refusal(run(*issue, "--user", "tess", "--totp", trader.code())) == "operator.not_permitted"
    assert refusal(run("token", "rotate-key", "--user", "tess", "--totp", trader.code())) == "operator.not_permitted"
    assert refusal(run("ca", "revoke", ALGO, "--user", "tess", "--totp", trader.wrong_code())) == "user.bad_totp"
    assert not (tmp_path / "algo").exists()
