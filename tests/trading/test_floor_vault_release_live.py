"""Data key lifecycle and the promotion gateway on a running floor: through its control plane, live.

``data rotate | shred`` and ``release submit | approve | promote`` go to the running control
plane (the only writer while it runs), which authorizes both people of the four eyes, and
the change is live at once: a KEK a floor process held in memory stops opening anything
after a shred; a promoted digest is a release of the running identity plane.
"""

from __future__ import annotations

import asyncio
import time

import pyotp
import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.cli import app
from trustfabric.data.errors import OpenRefused
from trustfabric.data.keystore import KekStore
from trustfabric.identity.attestation import code_digest
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def cli(*args: str):
    return asyncio.to_thread(CliRunner().invoke, app, list(args))


def live(result) -> bool:
    return result.exit_code == 0 and "on the running floor" in " ".join(result.output.split())


async def test_vault_key_lifecycle_and_promotion_act_on_the_running_floor(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(home))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.setenv("TRUSTFABRIC_SECOND_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_USER", raising=False)
    floor = Floor(home, "zero-trust", services=("oms", "settlement"))
    await floor.start()
    try:
        users = floor.plane.identity.users()
        totp = {name: pyotp.TOTP(users.enrol(name, role, PASSWORD, time.time()).totp_secret)
                for name, role in (("erin", "developer"), ("fred", "developer"), ("dave", "security_officer"),
                                   ("sam", "security_officer"), ("tina", "security_officer"),
                                   ("uma", "security_officer"))}
        # a TOTP code is good once, within a step of now: each person signs at most two requests here
        code = lambda who, ahead=0: totp[who].at(time.time() + 30 * ahead)  # noqa: E731
        officers = Pool(users)

        # -- the vault: a KEK a floor process holds in memory -------------------------------
        keys = KekStore(home / "vault-keys")
        held = keys.current("oms", "prod", create=True)
        assert keys.get("oms", "prod", held.version).key == held.key
        single = await cli("data", "rotate", "oms", "--env", "prod", "--user", "dave", "--totp", code("dave"),
                           "--second-user", "dave", "--second-totp", code("dave", 1))
        assert single.exit_code == 1 and "data.four_eyes_same_person" in single.output
        rotated = await cli("data", "rotate", "oms", "--env", "prod", "--user", "sam", "--totp", code("sam"),
                            "--second-user", "tina", "--second-totp", code("tina"))
        assert live(rotated), rotated.output
        current = keys.current("oms", "prod")  # the new KEK, now held in memory too
        assert current.version == held.version + 1
        with pytest.raises(OpenRefused):  # the rotated-out version was destroyed after the re-wrap
            keys.get("oms", "prod", held.version)
        shred = await cli("data", "shred", "oms", "--env", "prod", "--yes", "--user", "uma", "--totp",
                          code("uma"), "--second-user", "dave", "--second-totp", code("dave", 1))
        assert live(shred), shred.output
        with pytest.raises(OpenRefused) as refused:  # the copy in memory opens nothing any more
            keys.get("oms", "prod", current.version)
        assert refused.value.reason == "data.kek_shredded"

        # -- the promotion gateway ----------------------------------------------------------
        build = await cli("ca", "issue", "spiffe://dev.acme.example/build/builder", "--no-attest", "--out",
                          str(tmp_path / "build"), *officers.args())
        assert build.exit_code == 0, build.output
        artefact = tmp_path / "algo.whl"
        artefact.write_bytes(b"momentum-algo 2.5.0")
        digest = code_digest(artefact)
        prov = await cli("release", "provenance", str(artefact), "--out", str(tmp_path / "prov.json"), "--as",
                         str(tmp_path / "build"))
        assert prov.exit_code == 0, prov.output
        submitted = await cli("release", "submit", str(artefact), "--user", "erin", "--totp", code("erin"),
                              "--provenance", str(tmp_path / "prov.json"), "--build-cert",
                              str(tmp_path / "build" / "cert.pem"))
        assert live(submitted), submitted.output
        by_author = await cli("release", "approve", digest, "--env", "dev", "--user", "erin", "--totp",
                              code("erin", 1))
        assert by_author.exit_code == 1
        for who in ("fred", "sam"):
            ok = await cli("release", "approve", digest, "--env", "dev", "--user", who, "--totp",
                           code(who, 0 if who == "fred" else 1))
            assert live(ok), ok.output
        promoted = await cli("release", "promote", digest, "--env", "dev", "--user", "tina", "--totp",
                             code("tina", 1))
        assert live(promoted), promoted.output
        assert floor.plane.identity.releases.is_promoted("dev.acme.example", digest)  # the running plane's store
    finally:
        await floor.stop()
