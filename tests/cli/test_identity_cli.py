"""``trustfabric ca`` / ``user`` / ``token`` through the real CLI app, on a temporary home."""

from __future__ import annotations

import base64
import dataclasses
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
from trustfabric.home import home_dir
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.store import SqliteIdentityStore
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
    for group, commands in {"ca": ["init", "issue", "revoke", "promote", "rotate", "bundle", "register-host", "certs"],
                            "user": ["add", "login", "list"],
                            "token": ["issue", "verify", "jwks", "rotate-key", "revoke-key"]}.items():
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
    # the issued certificate is in the store's inventory (public facts only), marked as the operator's bypass
    listed = [json.loads(line) for line in run("ca", "certs", "--json", "--spiffe-id", ALGO).stdout.splitlines()]
    assert [(c["spiffe_id"], c["attested"]) for c in listed] == [(ALGO, False)]
    assert listed[0]["serial"] == format(creds.certificate.serial_number, "x")
    assert run("ca", "certs", "--spiffe-id", OMS, "--json").stdout == ""
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
    # registering a host's key changes what attestation trusts: a person's operator action, refused without one
    assert refusal(run("ca", "register-host", "host-1", "--public-key", str(tmp_path / "agent.pub"))).startswith(
        "operator.")
    assert op("ca", "register-host", "host-1", "--public-key", str(tmp_path / "agent.pub")).exit_code == 0
    digest = code_digest(b"momentum build 7")
    (tmp_path / "posture.json").write_bytes(encode_signed(agent.report(time.time())))
    (tmp_path / "stale.json").write_bytes(encode_signed(agent.report(time.time() - 3600)))
    args = ["ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--digest", digest]
    assert refusal(run(*args, "--posture", str(tmp_path / "posture.json"))) == "attest.unpromoted_digest"
    assert refusal(op("ca", "promote", digest, "--domain", "prod.acme.example")) == "release.gateway_required"
    assert op("ca", "promote", digest, "--domain", "dev.acme.example").exit_code == 0
    with IdentityPlane(home_dir()) as plane:  # prod only through the gateway (tests/cli/test_release_cli.py)
        plane.releases.promote("prod.acme.example", digest, time.time(), "momentum build 7")
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


DESK = "spiffe://prod.acme.example/desk/desk-1"


def test_user_add_login_and_person_token(tmp_path) -> None:
    for name in ("desk-1", "desk-2"):
        assert op("ca", "issue", f"spiffe://prod.acme.example/desk/{name}", "--out", str(tmp_path / name),
                  "--no-attest").exit_code == 0
    desk, desk2 = str(tmp_path / "desk-1" / "cert.pem"), str(tmp_path / "desk-2" / "cert.pem")
    added = op("user", "add", "alice", "--role", "trader", "--password", "correct horse battery")
    assert added.exit_code == 0, added.output
    uri = next(line for line in added.stdout.splitlines() if line.startswith("otpauth://"))
    totp = pyotp.parse_uri(uri)
    assert refusal(op("user", "add", "bob", "--role", "ceo", "--password", "correct horse battery")) \
        == "user.bad_role"
    assert refusal(run("user", "login", "alice", "--code", "000000" if totp.now() != "000000" else "111111",
                       "--password", "correct horse battery")) == "user.bad_totp"
    code = totp.now()
    assert refusal(run("token", "issue", "--sub", "alice", "--aud", "console", "--code", code,
                       "--password", "correct horse battery")) == "token.unbound"
    issued = run("token", "issue", "--sub", "alice", "--aud", "console", "--code", code,
                 "--password", "correct horse battery", "--cert", desk)
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    claims = json.loads(run("token", "verify", token, "--aud", "console", "--cert", desk).stdout)
    assert claims["amr"] == ["pwd", "otp"] and "auth_time" in claims and "x5t#S256" in claims["cnf"]
    # the person's token is the desk device's: --cert is checked, another desk is refused
    assert refusal(run("token", "verify", token, "--aud", "console", "--cert", desk2)) == "token.cnf_mismatch"
    assert refusal(run("token", "verify", token, "--aud", "console")) == "token.cert_required"
    # the same TOTP code again, same step: replay
    assert refusal(run("user", "login", "alice", "--code", code, "--password", "correct horse battery")) \
        == "user.totp_replay"


def _kids() -> list[str]:
    return [k["kid"] for k in json.loads(run("token", "jwks").stdout)["keys"]]


def test_jwks_and_key_rotation() -> None:
    first = json.loads(run("token", "jwks").stdout)
    assert len(first["keys"]) == 1 and first["keys"][0]["alg"] == "EdDSA"
    assert op("token", "rotate-key").exit_code == 0
    second = json.loads(run("token", "jwks").stdout)
    assert len(second["keys"]) == 2


def test_a_key_retired_beyond_its_window_leaves_the_jwks_and_the_store(home, tmp_path) -> None:
    """The report: `token jwks` still published a key retired 11 minutes earlier, and tokens it signed verified."""
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    cert = str(tmp_path / "algo" / "cert.pem")
    token = run("token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", cert).stdout.strip()
    [old] = _kids()
    assert op("token", "rotate-key").exit_code == 0
    store = SqliteIdentityStore(home / "identity.db")
    row = next(r for r in store.list_signing_keys() if r.kid == old)
    store.put_signing_key(dataclasses.replace(row, retired_at=time.time() - 660))  # retired 11 minutes ago
    assert old not in _kids() and len(_kids()) == 1
    assert old not in {r.kid for r in store.list_signing_keys()}  # its private half destroyed
    assert [r.kid for r in store.list_removed_signing_keys()] == [old]
    store.close()
    assert refusal(run("token", "verify", token, "--aud", OMS, "--cert", cert)) == "token.unknown_kid"


def test_revoke_key_is_a_security_officers_step_up_action(home, tmp_path, monkeypatch) -> None:
    totps = {}
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", "correct horse battery")
    for name, role in (("dave", "security_officer"), ("tina", "trader")):  # dave, the first, enrols tina
        officer = ("--user", "dave", "--totp", totps["dave"].at(time.time() - 30)) if totps else ()
        added = run("user", "add", name, "--role", role, "--password", "correct horse battery", *officer)
        totps[name] = pyotp.parse_uri(next(line for line in added.stdout.splitlines()
                                           if line.startswith("otpauth://")))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)  # the pool's officers (op) from here on
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    cert = str(tmp_path / "algo" / "cert.pem")
    token = run("token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", cert).stdout.strip()
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", "correct horse battery")
    [old] = _kids()

    def revoke(user: str, step: int):
        return run("token", "revoke-key", old, "--user", user, "--totp", totps[user].at(time.time() + 30 * step))

    nobody = run("token", "revoke-key", old, "--totp", "123456")
    assert nobody.exit_code != 0 and nobody.stderr.startswith("operator.unauthenticated")
    assert refusal(revoke("tina", 0)) == "operator.not_permitted"
    assert refusal(revoke("dave", 0)) == "token.key_active"  # the signing key: rotate first
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    assert op("token", "rotate-key").exit_code == 0
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", "correct horse battery")
    assert run("token", "verify", token, "--aud", OMS, "--cert", cert).exit_code == 0  # within the window
    revoked = revoke("dave", 1)
    assert revoked.exit_code == 0, revoked.output
    assert "user:dave" in revoked.stdout and old not in _kids()
    assert refusal(run("token", "verify", token, "--aud", OMS, "--cert", cert)) == "token.unknown_kid"
    store = SqliteIdentityStore(home / "identity.db")
    assert [(r.kid, r.reason) for r in store.list_removed_signing_keys()] == [(old, "key.revoked")]
    assert [(r.kind, r.value) for r in store.list_revocations()[1]] == [("token_key", old)]
    store.close()


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


def test_token_verify_refuses_overflowing_and_surrogate_claims_in_one_line(home, tmp_path) -> None:
    """The report: an exp of 10**400 made `token verify` print a traceback (OverflowError)."""
    assert op("ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest").exit_code == 0
    cert = str(tmp_path / "algo" / "cert.pem")
    creds = WorkloadCredentials.load(tmp_path / "algo")
    with IdentityPlane(home) as plane:
        key, issuer = plane.keys.active, plane.issuer_name

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    good = {"iss": issuer, "sub": ALGO, "aud": OMS, "iat": now, "nbf": now, "exp": now + 60, "jti": "j",
            "cnf": {"x5t#S256": creds.x5t_s256}}
    for changes, why in (({"exp": 10**400}, "token.missing_claim"), ({"iat": 10**400}, "token.missing_claim"),
                         ({"iss": issuer + "\ud800"}, "token.malformed"),
                         ({"cnf": {"x5t#S256": creds.x5t_s256[:-1] + "\ud800"}}, "token.malformed")):
        signing_input = f"{b64(json.dumps({'alg': 'EdDSA', 'kid': key.kid}).encode())}." \
                        f"{b64(json.dumps({**good, **changes}).encode())}".encode()
        token = signing_input.decode() + "." + b64(key.private_key.sign(signing_input))
        result = run("token", "verify", token, "--aud", OMS, "--cert", cert)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert refusal(result) == why


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
