"""Prometheus metrics of a running floor: every service and the control plane, scraped and parsed.

The scrape is parsed with prometheus-client's own parser; the values must move with
the floor (decisions grow while it trades, a refused handshake is counted under its
reason) and fail_open stays 0.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SERVICES = ("market-data", "algo-momentum", "pre-trade-risk", "order-router", "venue-a", "venue-b", "oms",
            "settlement")


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} of every sample at ``http://127.0.0.1:port/metrics``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(metrics, name: str, **labels: str) -> float:
    return sum(v for k, v in metrics.get(name, {}).items() if all((lk, lv) in k for lk, lv in labels.items()))


def _no_cert_handshake(port: int, bundle_pem: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle_pem)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            tls.recv(1)
    except (ssl.SSLError, OSError):
        pass


async def test_every_service_and_the_control_plane_expose_metrics_that_move(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=SERVICES)
    await floor.start()
    try:
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 20, 30.0)
        manifest = json.loads(floor.manifest_path.read_text())
        ports = manifest["metrics"]
        assert set(ports) == {"control-plane", *SERVICES}
        first = {name: await asyncio.to_thread(scrape, port) for name, port in ports.items()}
        for name in SERVICES:
            m = first[name]
            assert total(m, "trustfabric_fail_open_total") == 0, name
            assert total(m, "trustfabric_certificate_expiry_seconds") > 0, name
            assert "trustfabric_sessions_open" in m and "trustfabric_audit_unshipped_bytes" in m, name
        allowed = sum(total(first[n], "trustfabric_decisions_total", outcome="allow") for n in SERVICES)
        assert allowed > 0
        assert any(k.startswith("trustfabric_link_rtt_seconds") for k in first["algo-momentum"])
        assert sum(total(first[n], "trustfabric_session_open_seconds_count") for n in SERVICES) > 0
        # a certificate-less client at venue-a: refused in the handshake, counted under its reason
        _no_cert_handshake(floor.ports["venue-a"], manifest["control"]["bundle_pem"])
        await asyncio.sleep(2.0)
        later = {name: await asyncio.to_thread(scrape, ports[name]) for name in SERVICES}
        assert sum(total(later[n], "trustfabric_decisions_total", outcome="allow") for n in SERVICES) > allowed
        venue = await asyncio.to_thread(scrape, ports["venue-a"])
        assert total(venue, "trustfabric_handshake_refusals_total", listener="venue-a", reason="cert.missing") >= 1
        plane = await asyncio.to_thread(scrape, ports["control-plane"])
        assert total(plane, "trustfabric_control_subscribers") >= len(SERVICES)
        assert total(plane, "trustfabric_floor_stat", service="oms", stat="fail_open") == 0
        assert total(plane, "trustfabric_certificate_expiry_seconds", service="control-plane") > 0
        # the endpoints for a person and for Prometheus
        from typer.testing import CliRunner

        from trustfabric.cli import app

        listed = CliRunner().invoke(app, ["floor", "metrics"], env={"TRUSTFABRIC_HOME": str(tmp_path)})
        assert listed.exit_code == 0 and f"http://127.0.0.1:{ports['oms']}/metrics" in listed.output
        config = CliRunner().invoke(app, ["floor", "metrics", "--prometheus"], env={"TRUSTFABRIC_HOME": str(tmp_path)})
        assert config.exit_code == 0 and f"127.0.0.1:{ports['control-plane']}" in config.output
    finally:
        await floor.stop()
