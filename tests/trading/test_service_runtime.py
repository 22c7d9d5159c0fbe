"""A floor service's runtime, without sockets: revocation pushes are mirrored, a malformed one is audited."""

import pytest

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.protocol import PushRevocation
from trustfabric.trading.services.base import FloorService, ServiceRuntime

from tests.floor_fixtures import POLICY_DIR


@pytest.fixture()
def runtime(tmp_path):
    clock = FakeClock(1_790_000_000.0)
    rt = ServiceRuntime("venue-a", "zero-trust", {"home": str(tmp_path), "topology": str(POLICY_DIR / "floor.toml"),
                                                   "ports": {}}, clock=clock)
    rt.sink = MemorySink()
    rt.events = Emitter("venue-a", rt.sink, clock)
    yield rt
    rt.spool.close()


def test_a_quarantine_push_revokes_the_identity(runtime):
    victim = runtime.topology.spiffe_id("algo-momentum")
    runtime._on_revocation(PushRevocation(kind="spiffe_id", value=victim, reason="quarantine.lateral"))
    assert runtime.revocations.is_revoked(0, victim)


def test_a_malformed_revocation_push_is_audited_not_dropped_silently(runtime):
    runtime._on_revocation(PushRevocation(kind="serial", value="not-a-serial", reason="revoked"))
    alerts = runtime.sink.of_kind(Kind.ALERT)
    assert len(alerts) == 1 and alerts[0].action == "revocation.mirror" and alerts[0].decision == "deny"


def test_a_floor_service_must_register_its_handlers(runtime):
    class Incomplete(FloorService):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete(runtime)  # abstract: no register()
