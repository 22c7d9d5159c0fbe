"""Host inspection: each check read from a (fake) host, each failing check a posture reason the policy denies
on; the development machine passes the reference floor's declared requirements."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.errors import SignalError
from trustfabric.policy.engine import PolicyEngine
from trustfabric.signals.host_agent import HostInspector, HostPostureAgent
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar
from trustfabric.signals.posture import (
    PROD_MINIMUM,
    HostKeyRegistry,
    PostureMinimum,
    evaluate_posture,
    requirements_for_domain,
    requirements_from_dict,
    verify_report,
)

from tests.floor_fixtures import POLICY_DIR
from tests.signals.fake_host import fake_host

NOW = 1_790_000_000.0
# a production host's requirement, with a minimum per distribution
STRICT = PostureMinimum(min_os_versions={"debian": "11", "ubuntu": "22.04"}, listen_ports=("floor", "22"))


def _agent(root, host="oms", **kw) -> HostPostureAgent:
    return HostPostureAgent(host, inspector=HostInspector(root, cache_s=0.0, **kw))


def test_a_healthy_host_is_read_as_it_is(tmp_path):
    agent = _agent(fake_host(tmp_path))
    registry = HostKeyRegistry()
    agent.register(registry)
    report = verify_report(agent.report(NOW), registry)
    assert (report.os, report.os_id, report.os_version, report.kernel) == ("Linux", "debian", "12", "6.1.0-18-amd64")
    assert report.encrypted_mounts == ("/",)  # LVM (dm-1) over LUKS (dm-0): CRYPT- found under the stack
    assert report.security_agents == ("falcon-sensor",)
    assert report.listening_ports == (20001, 24567)  # the ESTABLISHED connection is no listener
    assert report.time_synced and report.time_source == "timesyncd"
    assert evaluate_posture(agent.report(NOW), registry, STRICT, NOW).ok


FAILING = [
    ({"ostype": "FreeBSD"}, "posture.os"),
    ({"os_version": "10"}, "posture.os"),
    ({"os_id": "gentoo"}, "posture.os"),
    ({"kernel": "4.19.0-27-amd64"}, "posture.kernel"),
    ({"kernel": "garbage"}, "posture.kernel"),
    ({"crypt": False}, "posture.disk_encryption"),
    ({"root_device": "/dev/vda1"}, "posture.disk_encryption"),
    ({"processes": ("systemd", "sshd")}, "posture.security_agent"),
    ({"listening": (20001, 4444)}, "posture.listening_ports"),
    ({"timesync": False}, "posture.time_sync"),
]


@pytest.fixture
def strict_floor(topology):
    clock = FakeClock(NOW)
    sink = MemorySink()
    hub = SignalHub(topology, clock=clock, emitter=Emitter("signal-hub", sink, clock), posture_minimum=STRICT,
                    calendar=MarketCalendar.around_the_clock())
    engine = PolicyEngine(topology, hub, emitter=Emitter("policy-engine", sink, clock), clock=clock)
    engine.load_dir(POLICY_DIR)
    return hub, engine, clock


@pytest.mark.parametrize("fault, reason", FAILING)
def test_each_failing_check_is_a_posture_reason_and_the_policy_denies(tmp_path, strict_floor, fault, reason):
    hub, engine, clock = strict_floor
    healthy = fake_host(tmp_path / "good")
    for host in {s.host for s in hub.topology.services.values()}:
        agent = _agent(healthy, host)
        agent.register(hub.host_keys)
        assert hub.report_posture(agent.report(clock.now())).ok
    assert engine.decide("oms", "settle", "settlement/ledger").allowed
    broken = _agent(fake_host(tmp_path / "bad", **fault), "oms")
    broken.register(hub.host_keys)
    verdict = hub.report_posture(broken.report(clock.now()))
    assert not verdict.ok and verdict.reasons == (reason,)
    assert hub.signals_for(hub.topology.resolve("oms"), clock.now()).posture_reasons == (reason,)
    denied = engine.decide("oms", "settle", "settlement/ledger")
    assert not denied.allowed and denied.policy_ids == ("guard.posture",)
    assert engine.decide("venue-a", "report_fill", "oms/fills").allowed  # other hosts are not affected


def test_what_cannot_be_read_fails(tmp_path):
    agent = _agent(tmp_path / "empty")
    registry = HostKeyRegistry()
    agent.register(registry)
    verdict = evaluate_posture(agent.report(NOW), registry, PROD_MINIMUM, NOW)
    assert set(verdict.reasons) == {"posture.os", "posture.kernel", "posture.disk_encryption",
                                    "posture.security_agent", "posture.time_sync"}


def test_a_clock_the_kernel_calls_unsynchronised_fails_even_with_the_timesyncd_flag(tmp_path):
    agent = _agent(fake_host(tmp_path), clock_sync=lambda: False)
    registry = HostKeyRegistry()
    agent.register(registry)
    assert evaluate_posture(agent.report(NOW), registry, STRICT, NOW).reasons == ("posture.time_sync",)


def test_this_machine_passes_the_reference_floor_requirements():
    """The development machine (no disk encryption, no EDR, no NTP daemon) meets what policies/floor.toml
    declares - and the built-in production minimum refuses it for exactly those."""
    requirements = requirements_for_domain("prod.acme.example", POLICY_DIR / "floor.toml")
    assert requirements.for_host("oms").require_disk_encryption is False
    agent = HostPostureAgent("oms")
    registry = HostKeyRegistry()
    agent.register(registry)
    signed = agent.report(NOW)
    assert evaluate_posture(signed, registry, requirements, NOW).ok
    strict = evaluate_posture(signed, registry, PROD_MINIMUM, NOW)
    assert not strict.ok and "posture.disk_encryption" in strict.reasons


def test_the_control_plane_holds_the_hosts_posture_from_real_inspection(tmp_path):
    from trustfabric.control.plane import ControlPlane

    plane = ControlPlane(tmp_path, clock=FakeClock(NOW))
    try:
        assert plane.hub.posture_of("oms", NOW)[0]
        assert not plane.hub.posture_of("oms", NOW + plane.posture_minimum.max_age_s + 1)[0]  # stale later
    finally:
        plane.close()


@pytest.mark.parametrize("raw", [
    {"listen_ports": ["twenty"]},
    {"listen_ports": ["30-20"]},
    {"min_kernel": "latest"},
    {"require_disk_encryption": "yes"},
    {"no_such_requirement": True},
    {"hosts": {"oms": {"max_age_s": 5}}},
    {"hosts": ["oms"]},
])
def test_bad_requirements_are_refused(raw):
    with pytest.raises(SignalError) as info:
        requirements_from_dict(raw)
    assert info.value.reason == "posture.config"


def test_a_host_override_applies_to_that_host_only():
    requirements = requirements_from_dict({"require_disk_encryption": False,
                                           "hosts": {"oms": {"require_disk_encryption": True,
                                                             "data_mounts": ["/var/lib/oms"]}}})
    assert requirements.for_host("oms").require_disk_encryption
    assert requirements.for_host("oms").data_mounts == ("/var/lib/oms",)
    assert not requirements.for_host("venue-a").require_disk_encryption
    assert requirements.with_max_age(10).for_host("oms").max_age_s == 10.0
