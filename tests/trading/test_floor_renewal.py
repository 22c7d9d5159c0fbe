"""A floor with short certificates and a short posture window renews many times under traffic: every
renewal attested on a fresh report from the host's agent, every connection moved before a certificate
expires, no expired certificate used anywhere, orders still filling."""

import pytest

from trustfabric.trading.launcher import Floor, floor_summary
from trustfabric.trading.demo import denied_by_reason

from tests.trading.processes import alive

pytestmark = pytest.mark.timeout(150)

SERVICES = ("settlement", "oms", "venue-a", "venue-b", "order-router", "market-data", "pre-trade-risk",
            "algo-momentum", "algo-meanrev")
CERT_TTL_S = 20
POSTURE_WINDOW_S = 10.0
RENEWALS_EACH = 3  # 3 renewals of a 20 s certificate: 30 s, three posture windows


@pytest.mark.slow
async def test_short_certificates_renew_under_traffic_with_no_expired_certificate_used(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=SERVICES, cert_ttl_s=CERT_TTL_S,
                  posture_max_age_s=POSTURE_WINDOW_S)
    await floor.start()
    try:
        def renewed(n: int) -> bool:
            stats = floor.stats()
            return len(stats) == len(SERVICES) and all(s.get("renewals", 0) >= n for s in stats.values())

        assert await floor.wait_for(lambda: renewed(1), 40.0, 0.25)
        filled_after_first = floor_summary(floor)["orders_filled"]
        assert await floor.wait_for(lambda: renewed(RENEWALS_EACH), 70.0, 0.25)
        assert await floor.wait_for(lambda: floor_summary(floor)["orders_filled"] > filled_after_first + 10, 20.0)
        served = floor.posture_agents.served
        control_rotations = floor.plane.counters["own_rotations"]
    finally:
        await floor.stop()
    summary = floor_summary(floor)
    assert summary["cert_ttl_s"] == CERT_TTL_S
    assert summary["renewals"] >= RENEWALS_EACH * len(SERVICES)
    assert summary["expired_cert_uses"] == 0, summary
    assert summary["renewal_failures"] == 0 and summary["fail_open"] == 0
    assert summary["denied_hops"] == 0, denied_by_reason(tmp_path)  # no session lost to a renewal
    assert summary["connection_moves"] > 0 and control_rotations >= 2
    assert served >= summary["renewals"] + len(SERVICES)  # a fresh report for every join and every renewal
    assert all(s["pep_allowed"] > 0 for n, s in floor.stats().items() if n in ("oms", "pre-trade-risk"))
    assert not [p for p in floor.pids() if alive(p)]
