"""A floor service's runtime, without sockets: revocation pushes are mirrored, a malformed one is audited."""

import pytest

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.protocol import PushRevocation
from trustfabric.trading.services.base import FloorService, ServiceRuntime, ServiceSink

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


class _Control:
    def __init__(self) -> None:
        self.reports: list = []
        self.conn = None

    def report(self, report) -> None:
        self.reports.append(report)


def test_a_non_numeric_stat_is_dropped_and_counted_and_the_report_still_leaves(runtime):
    import msgspec

    from trustfabric.control.protocol import CONTROL_CODEC, Report

    runtime.control = _Control()
    runtime.sink = ServiceSink(runtime.spool)
    runtime.stats = lambda: {"orders": 3, "tag": "r1", "flag": True, "rate": 2.5}  # type: ignore[method-assign]
    runtime.report_now()
    report = runtime.control.reports[0]
    assert report.stats == {"orders": 3.0, "rate": 2.5, "report_stats_dropped": 2.0}
    decoded = CONTROL_CODEC.decode(CONTROL_CODEC.encode(report))  # the control plane's decoder takes it
    assert isinstance(decoded, Report) and decoded.stats == report.stats
    with pytest.raises(msgspec.ValidationError):  # what an unfiltered report would have met
        msgspec.convert({"service": "x", "stats": {"tag": "r1"}}, Report)


def test_stats_that_raise_still_send_the_report(runtime):
    runtime.control = _Control()
    runtime.sink = ServiceSink(runtime.spool)

    def broken():
        raise RuntimeError("bug")

    runtime.stats = broken  # type: ignore[method-assign]
    runtime.report_now()
    assert runtime.control.reports[0].stats == {"report_stats_failed": 1.0}


def test_floor_ports_are_free_distinct_and_below_the_ephemeral_range():
    import socket

    from trustfabric.trading.runtime import _ephemeral_low, free_port

    taken: set[int] = set()
    ports = [free_port(taken) for _ in range(20)]
    assert len(set(ports)) == 20 and set(ports) == taken
    assert all(20000 <= p < _ephemeral_low() for p in ports)  # no outgoing connection's source port
    for port in ports[:3]:  # each is bindable now
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
