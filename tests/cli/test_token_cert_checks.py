"""``token issue/verify --cert`` on certificates the TLS layer refuses: one refusal line, never a traceback."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from tests.cert_factory import (
    CertSpec,
    build,
    duplicate_extension_certificate,
    key_for,
    malformed_name_constraint_certificate,
    name,
)
from tests.people import PASSWORD, Pool
from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.cli import app
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.store import open_default_store
from trustfabric.identity.users import UserDirectory

runner = CliRunner()
ALGO = "spiffe://prod.acme.example/algo/momentum"
OMS = "spiffe://prod.acme.example/trading/oms"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    result = runner.invoke(app, ["ca", "init"])
    assert result.exit_code == 0, result.output
    return tmp_path / "home"


def refusal(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0].split(":", 1)[0]


def _token(tmp_path) -> str:
    officer = Pool(UserDirectory(open_default_store(), Emitter("test", MemorySink()))).args()  # --no-attest: a person's
    issued = runner.invoke(app, ["ca", "issue", ALGO, "--out", str(tmp_path / "algo"), "--no-attest", *officer])
    assert issued.exit_code == 0, issued.output
    issued = runner.invoke(app, ["token", "issue", "--sub", ALGO, "--aud", OMS,
                                 "--cert", str(tmp_path / "algo" / "cert.pem")])
    assert issued.exit_code == 0, issued.output
    return issued.stdout.strip()


@pytest.mark.parametrize("make", [duplicate_extension_certificate, malformed_name_constraint_certificate])
def test_an_unparseable_certificate_is_one_refusal_line(tmp_path, make) -> None:
    token = _token(tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_bytes(make(time.time(), ALGO).public_bytes(serialization.Encoding.PEM))
    assert refusal(runner.invoke(app, ["token", "verify", token, "--aud", OMS, "--cert", str(bad)])) \
        == "cert.malformed"
    assert refusal(runner.invoke(app, ["token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", str(bad)])) \
        == "cert.malformed"


def test_a_key_encipherment_only_leaf_of_our_own_ca_is_refused(tmp_path, home) -> None:
    token = _token(tmp_path)
    ca = CertificateAuthority.load(home / "ca" / "prod.acme.example")
    gen = ca.current
    key = key_for("ec256", 9)
    leaf = build(CertSpec(uris=(ALGO,), key_usage=("key_encipherment",)), name("weak leaf"),
                 key.public_key(), gen.issuing_cert.subject, gen.issuing_key, gen.issuing_key.public_key(),
                 time.time())
    path = tmp_path / "weak.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    assert refusal(runner.invoke(app, ["token", "verify", token, "--aud", OMS, "--cert", str(path)])) \
        == "cert.key_usage"
    assert refusal(runner.invoke(app, ["token", "issue", "--sub", ALGO, "--aud", OMS, "--cert", str(path)])) \
        == "cert.key_usage"
