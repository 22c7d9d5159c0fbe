"""A certificate of the firm's dev trust domain presented to a running prod floor service: refused at the
identity step by name, and the control plane's response engine raises a cross-trust-domain alert naming the
presented SPIFFE ID and the source address."""

import asyncio
import ssl
import time

import pytest

from trustfabric.identity.workload import issue_for_test
from trustfabric.response.alerts import Category
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

VENUE = "venue-a"


async def test_a_dev_certificate_at_a_prod_service_is_refused_by_name_and_alerted(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=(VENUE,), collect_audit=False)
    await floor.start()
    try:
        plane = floor.plane
        dev_domain = "dev." + plane.topology.firm
        dev_id = f"spiffe://{dev_domain}/algo/algo-momentum"
        creds = issue_for_test(plane.identity.ca(dev_domain), dev_id, time.time(), 600)
        creds.write(tmp_path / "dev-creds")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # an intruder's client: it checks no server
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(tmp_path / "dev-creds" / "cert.pem", tmp_path / "dev-creds" / "key.pem")
        reader, writer = await asyncio.open_connection("127.0.0.1", floor.ports[VENUE], ssl=ctx)
        try:  # refused at the identity step: an error frame naming the reason, then the close
            answer = await asyncio.wait_for(reader.read(65536), 10)
            assert answer == b"" or b"cert.wrong_trust_domain" in answer, answer
            assert await asyncio.wait_for(reader.read(65536), 10) == b""
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

        def alerted():
            return [a for a in plane.alerts if a.category == Category.CROSS_TRUST_DOMAIN]

        assert await floor.wait_for(lambda: bool(alerted()), 20.0, 0.1), plane.alerts
        alert = alerted()[0]
        assert alert.principal == dev_id
        assert any("127.0.0.1" in str(e) for e in alert.evidence) or "127.0.0.1" in alert.summary \
            or "127.0.0.1" in alert.resource, alert
    finally:
        await floor.stop()
