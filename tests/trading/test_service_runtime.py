"""A floor service's runtime, without sockets: revocation pushes are mirrored, a malformed one is audited."""

import pytest

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.control.protocol import PushRevocation
from trustfabric.trading.services.base import FloorService, ServiceRuntime
from trustfabric.trading.services.sink import ServiceSink

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

    from trustfabric.trading.launcher import _ephemeral_low, free_port

    taken: set[int] = set()
    ports = [free_port(taken) for _ in range(20)]
    assert len(set(ports)) == 20 and set(ports) == taken
    assert all(20000 <= p < _ephemeral_low() for p in ports)  # no outgoing connection's source port
    for port in ports[:3]:  # each is bindable now
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


class _RenewingControl:
    """The control plane's side of a renewal, in memory: records what the workload presented."""

    def __init__(self, ca, spiffe_id: str, clock) -> None:
        self.ca, self.spiffe_id, self.clock = ca, spiffe_id, clock
        self.postures: list[bytes] = []
        self.conn = None

    async def renew(self, spiffe_id: str, posture: bytes):
        from trustfabric.identity.workload import issue_for_test

        self.postures.append(posture)
        return issue_for_test(self.ca, spiffe_id, self.clock.now(), 20)


@pytest.fixture()
def renewing(runtime):
    from trustfabric.identity.ca import CertificateAuthority
    from trustfabric.identity.workload import issue_for_test
    from trustfabric.transport.tls import RotatingCredentials

    ca = CertificateAuthority.create(runtime.topology.trust_domain, runtime.clock.now())
    runtime.credentials = RotatingCredentials(issue_for_test(ca, runtime.spiffe_id, runtime.clock.now(), 20))
    runtime.control = _RenewingControl(ca, runtime.spiffe_id, runtime.clock)
    return runtime


async def test_renewal_without_a_posture_agent_is_no_renewal(renewing):
    from trustfabric.errors import SignalError

    before = renewing.credentials.current()
    with pytest.raises(SignalError) as info:
        await renewing.renew_now()
    assert info.value.reason == "posture.agent_unreachable"
    assert renewing.control.postures == [] and renewing.credentials.current() is before  # never asked the CA


async def test_renewal_presents_a_report_the_host_agent_made_now(renewing, tmp_path):
    import time

    from trustfabric.signals.agent_socket import PostureAgentServer
    from trustfabric.signals.host_agent import HostPostureAgent
    from trustfabric.signals.posture import HostKeyRegistry, decode_signed, verify_report

    host = renewing.topology.services["venue-a"].host
    agent = HostPostureAgent(host)
    registry = HostKeyRegistry()
    agent.register(registry)
    server = await PostureAgentServer({host: agent}, tmp_path / "posture").start()
    try:
        renewing.boot["posture_socket"] = str(server.paths[host])
        before = renewing.credentials.current()
        started = time.time()
        await renewing.renew_now()
        await renewing.renew_now()
    finally:
        await server.close()
    reports = [verify_report(decode_signed(p), registry) for p in renewing.control.postures]
    assert [r.host for r in reports] == [host, host] and all(r.issued_at >= started - 1 for r in reports)
    assert reports[1].issued_at >= reports[0].issued_at and renewing.control.postures[0] != renewing.control.postures[1]
    assert renewing.renewals == 2 and renewing.credentials.current() is not before


def test_renewal_schedule_backs_off_and_keeps_several_attempts_before_expiry():
    from trustfabric.identity.rotation import renewal_delay

    assert renewal_delay(0.0, 60.0, 10.0, 0) == 20.0  # half-life
    assert renewal_delay(0.0, 60.0, 40.0, 0) == 0.0  # overdue: now
    assert [renewal_delay(0.0, 600.0, 300.0, n, retry_s=1.0, max_retry_s=30.0) for n in (1, 2, 3, 6, 10)] == [
        1.0, 2.0, 4.0, 30.0, 30.0]
    assert renewal_delay(0.0, 60.0, 56.0, 8, retry_s=1.0, max_retry_s=30.0) == 1.0  # a quarter of what is left
    assert renewal_delay(0.0, 60.0, 61.0, 8, retry_s=1.0, max_retry_s=30.0, min_s=0.2) == 30.0  # expired: keep trying


def test_a_connection_moves_for_our_new_certificate_or_the_peers_last_quarter(renewing):
    from types import SimpleNamespace

    now = renewing.clock.now()
    ours = renewing.credentials.current().fingerprint_sha256
    peer = SimpleNamespace(not_before=now, not_after=now + 20.0)
    conn = SimpleNamespace(closed=False, peer=peer)
    assert not renewing._needs_move("oms", conn, ours)
    assert renewing._needs_move("oms", conn, "fingerprint-of-our-previous-certificate")
    renewing.clock.advance(15.5)  # the peer's certificate is in its last quarter
    assert renewing._needs_move("oms", conn, ours)
    renewing._moved_away("oms", peer)  # moved, but the peer still showed that certificate
    assert not renewing._needs_move("oms", conn, ours)
    renewing.clock.advance(1.0)  # it may have renewed since: try again
    assert renewing._needs_move("oms", conn, ours)
    assert not renewing._needs_move("oms", SimpleNamespace(closed=True, peer=peer), ours)
