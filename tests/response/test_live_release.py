"""``trustfabric response release`` against a running control plane: the live path, over real sockets.

A :class:`~trustfabric.control.server.ControlServer` runs on 127.0.0.1 in a thread of
its own; ``$TRUSTFABRIC_HOME/floor/runtime.json`` names its operator endpoint as
``trustfabric up`` does. The CLI must release through it (password + TOTP login at the
control plane, security_officer only) and refuse a wrong role, a wrong code or password,
and a replayed code; with the endpoint gone it refuses (``control.unreachable``), and only a
manifest marked stopped sends it to the offline path.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pyotp
import pytest
from typer.testing import CliRunner

from trustfabric.commands import response as cmd
from trustfabric.control.plane import ControlPlane
from trustfabric.control.server import ControlServer

pytestmark = pytest.mark.timeout(60)


class ServerThread:
    """A control server on its own event loop in a daemon thread (the CLI runs its own loop)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(ControlServer(plane).start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture()
def floor(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "cli-home"))
    plane = ControlPlane(tmp_path / "floor-home")  # system clock: real TLS handshakes check real validity
    now = plane.clock.now()
    users = plane.identity.users()
    codes = {name: pyotp.TOTP(users.enrol(name, role, f"pw-{name}-long-enough", now).totp_secret)
             for name, role in (("dave", "security_officer"), ("bob", "trader"), ("rita", "risk_officer"))}
    algo = plane.spiffe_id("algo-momentum")
    with pytest.raises(Exception):
        plane.token_for(algo, plane.credentials.cert_der, "venue-a")  # lateral attempt -> contained
    assert plane.is_quarantined(algo)
    running = ServerThread(plane)
    manifest = tmp_path / "cli-home" / "floor" / "runtime.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"mode": "zero-trust", "control": {
        "control_port": running.server.control_port, "bootstrap_port": running.server.bootstrap_port,
        "spiffe_id": plane.control_id, "bundle_pem": plane.credentials.bundle_pem.decode()}}))
    try:
        yield plane, algo, codes, running
    finally:
        running.stop()
        plane.close()


def _release(principal: str, officer: str, password: str, code: str):
    return CliRunner().invoke(cmd.app, ["release", principal, "--user", officer, "--totp", code],
                              env={"TRUSTFABRIC_PASSWORD": password})


def _refused(result) -> str:
    assert result.exit_code == 1, result.output
    return result.stderr if result.stderr_bytes else result.output


def test_release_goes_through_the_running_control_plane_and_refuses_without_role_or_mfa(floor):
    plane, algo, codes, _ = floor
    assert cmd.live_control_plane() is not None
    now = plane.clock.now()
    assert "operator.not_permitted" in _refused(_release(algo, "bob", "pw-bob-long-enough", codes["bob"].at(now)))
    assert "operator.not_permitted" in _refused(_release(algo, "rita", "pw-rita-long-enough", codes["rita"].at(now)))
    wrong = f"{(int(codes['dave'].at(now)) + 1) % 1_000_000:06d}"
    assert "user." in _refused(_release(algo, "dave", "pw-dave-long-enough", wrong))
    assert "user." in _refused(_release(algo, "dave", "not-the-password", codes["dave"].at(now)))
    assert plane.is_quarantined(algo)  # nothing above released anything

    ok = _release(algo, "dave", "pw-dave-long-enough", codes["dave"].at(now))
    assert ok.exit_code == 0, ok.output
    assert "on the running floor" in " ".join(ok.output.split())
    assert not plane.is_quarantined(algo)
    incident = [i for i in plane.incidents() if i["principal"] == algo][-1]
    assert incident["released"] and incident["released_by"] == "dave"

    # the same code again is a replay, and there is nothing left to release anyway
    again = _refused(_release(algo, "dave", "pw-dave-long-enough", codes["dave"].at(now)))
    assert "user.totp_replay" in again or "release.not_quarantined" in again


def test_an_unreachable_control_plane_is_a_refusal_and_a_stopped_floor_the_offline_path(floor, tmp_path):
    plane, algo, codes, running = floor
    running.stop()
    running.stop = lambda: None  # already stopped
    # the manifest still names a control plane (its launcher may be alive): never done offline behind its back
    assert cmd.live_control_plane() is not None
    unreachable = _release(algo, "dave", "pw-dave-long-enough", codes["dave"].at(plane.clock.now()))
    assert "control.unreachable" in _refused(unreachable)
    # the launcher marks its manifest stopped (Floor.stop): no floor, the store decides
    manifest = tmp_path / "cli-home" / "floor" / "runtime.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "stopped_at": 1.0}))
    assert cmd.live_control_plane() is None
    offline = _release(algo, "dave", "pw-dave-long-enough", "000000")
    assert offline.exit_code == 1  # offline: the CLI home has no such officer, nothing released


def test_an_unreadable_manifest_is_a_refusal_not_the_offline_path(floor, tmp_path):
    plane, algo, codes, _ = floor
    manifest = tmp_path / "cli-home" / "floor" / "runtime.json"
    manifest.write_text("{ not json")
    result = _release(algo, "dave", "pw-dave-long-enough", codes["dave"].at(plane.clock.now()))
    assert "control.manifest_unreadable" in _refused(result)
    assert plane.is_quarantined(algo)  # neither path released anything
