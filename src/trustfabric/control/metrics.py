"""The control plane's Prometheus metrics, read at scrape time (see :mod:`trustfabric.metrics`).

Its own listeners' refusals (bootstrap and control ports: TLS, identity, admission),
the enforcement points subscribed to its push, the time left on its certificate, the
bytes of its audit spool not yet shipped, and the floor as the services last reported
it (``trustfabric_floor_stat{service, stat}``: the same numbers ``trustfabric up``'s
live view shows, fail_open among them).
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily

from trustfabric.audit.spool import unshipped_bytes
from trustfabric.metrics import Families, gauge, refusals


class ControlMetrics:
    def __init__(self, plane: Any, server: Any) -> None:
        self.plane = plane
        self.server = server

    def collect(self) -> Families:
        server, plane = self.server, self.plane
        yield refusals(server.refusals())
        yield gauge("control_subscribers", "Enforcement points subscribed to the control plane's push.",
                    sum(len(conns) for conns in list(server.subscribers.values())))
        if plane is not None:
            yield gauge("certificate_expiry_seconds", "Seconds left on the control plane's certificate.",
                        plane.credentials.not_after - plane.clock.now(), labels={"service": "control-plane"})
            yield gauge("audit_unshipped_bytes", "Bytes of the audit spool not yet in the central log.",
                        unshipped_bytes(plane.spool.directory), labels={"service": "control-plane"})
        floor = GaugeMetricFamily("trustfabric_floor_stat", "Each service's numbers as it last reported them.",
                                  labels=["service", "stat"])
        for service, stats in sorted(dict(server.stats).items()):
            for key, value in sorted(dict(stats).items()):
                floor.add_metric([service, key], float(value))
        yield floor
