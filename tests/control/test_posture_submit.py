"""A host's own agent reports its posture to the lease holder (``PostureSubmit``), and a host key is registered
through the running plane (``ca.register_host``): what is forged, stale, garbled, or sent to a follower is
refused and changes nothing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.control import client as control_client
from trustfabric.control.errors import NOT_LEADER, ControlRefused
from trustfabric.control.plane import ControlPlane
from trustfabric.control.protocol import PostureReply, PostureSubmit
from trustfabric.control.server import ControlServer
from trustfabric.identity.operators import Operator
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import encode_signed

HOST = "venue-a"


@pytest.fixture
def plane(tmp_path):
    cp = ControlPlane(tmp_path)
    yield cp
    cp.close()


def _verdict(plane: ControlPlane) -> object:
    return plane.hub.posture_verdicts()[HOST]


def test_a_fresh_report_from_the_enrolled_key_is_taken_and_anything_else_changes_nothing(plane):
    enrolled = plane.agents[HOST]
    now = plane.clock.now()
    assert plane.hub_posture(encode_signed(enrolled.report(now))) == HOST
    before = _verdict(plane)
    stranger = HostPostureAgent(HOST, Ed25519PrivateKey.generate())  # a key nobody enrolled
    for raw, reason in ((encode_signed(stranger.report(now)), "posture."),
                        (encode_signed(enrolled.report(now - 3600)), "posture.stale"),  # a replayed old report
                        (b"{not a report", "posture.")):
        with pytest.raises(ControlRefused) as refused:
            plane.hub_posture(raw)
        assert refused.value.reason.startswith(reason), refused.value.reason
        assert _verdict(plane) == before  # the host's posture is not turned bad by someone else's report
    plane.writer, plane.follower = False, object()  # a follower: posture goes to the lease holder
    with pytest.raises(ControlRefused) as refused:
        plane.hub_posture(encode_signed(enrolled.report(now)))
    assert refused.value.reason == NOT_LEADER


async def test_posture_over_the_bootstrap_port_is_refused_with_its_reason(plane):
    server = await ControlServer(plane).start("127.0.0.1")
    try:
        async def submit(raw: bytes):
            return await control_client.operator_request("127.0.0.1", server.bootstrap_port,
                                                         bundle_pem=plane.credentials.bundle_pem,
                                                         control_id=plane.control_id,
                                                         request=PostureSubmit(report=raw), timeout_s=5.0)

        reply = await submit(encode_signed(plane.agents[HOST].report(plane.clock.now())))
        assert isinstance(reply, PostureReply) and reply.ok
        with pytest.raises(ControlRefused) as refused:
            await submit(encode_signed(plane.agents[HOST].report(plane.clock.now() - 3600)))
        assert refused.value.reason == "posture.stale"
    finally:
        await server.close()


def test_registering_a_host_key_on_the_running_plane_refuses_a_bad_key_and_takes_a_good_one(plane):
    officer = Operator("dora", "security_officer", plane.clock.now())
    for args, target, reason in (({"public_key": "zz"}, "new-host", "posture.bad_key"),
                                 ({"public_key": "00" * 31}, "new-host", "posture.bad_key"),
                                 ({"public_key": "11" * 32}, "", "control.bad_request")):
        with pytest.raises(ControlRefused) as refused:
            plane.register_host_by(officer, "ca.register_host", target, args, plane.clock.now())
        assert refused.value.reason == reason
    agent = HostPostureAgent("new-host", Ed25519PrivateKey.generate())
    raw = agent.public_key.public_bytes_raw().hex()
    plane.register_host_by(officer, "ca.register_host", "new-host", {"public_key": raw}, plane.clock.now())
    # attestation and the hub check the new host's reports against it at once (no restart)
    assert plane.hub_posture(encode_signed(agent.report(plane.clock.now()))) == "new-host"


def test_a_malformed_host_enrolment_on_the_running_plane_is_a_typed_refusal(plane):
    from trustfabric.errors import ConfigError
    from trustfabric.trading import hosts
    from trustfabric.trading.deployment import load
    from pathlib import Path

    machines = load(Path(__file__).parents[2] / "deploy" / "machines.toml", plane.topology)
    hosts.register(plane, machines)
    action = plane._added_actions[hosts.ACTION]
    officer = Operator("dora", "security_officer", plane.clock.now())
    for args, reason in (({"keys": "not json"}, "host.enrol_keys"), ({"keys": "[1]"}, "host.enrol_keys"),
                         ({"keys": '{"venue-a": "zz", "venue-b": "zz"}'}, "host.enrol_keys"),
                         ({"keys": '{"venue-a": "' + "11" * 32 + '"}'}, "host.enrol_keys"),  # venue-b's key missing
                         ({"keys": "{}", "ttl_s": "soon"}, "host.enrol_keys")):
        with pytest.raises(ConfigError) as refused:
            action(plane, officer, hosts.ACTION, "venues", args, plane.clock.now())
        assert refused.value.reason == reason
    assert plane.identity.store.get_meta("host_runner:venue-a") is None  # nothing was registered
