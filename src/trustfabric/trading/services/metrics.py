"""A floor service's Prometheus metrics: what its runtime already counts, read at scrape time.

Served by :class:`~trustfabric.metrics.MetricsEndpoint` on the loopback port the
launcher chose (``boot["metrics_port"]``, written in ``floor/runtime.json``): the
enforcement point's decisions (:func:`~trustfabric.enforcement.metrics.pep_families`),
handshake refusals of the service's listener (TLS, identity, admission), the round
trips each outgoing link sampled (a cumulative histogram folded from the link's
latency ring at scrape time), the bytes of the audit spool the collector has not
shipped yet, the time left on the service's certificate, and every number the
service reports to the control plane as ``trustfabric_service_stat{stat}``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily

from trustfabric.audit.spool import unshipped_bytes
from trustfabric.enforcement.metrics import OPEN_BUCKETS, pep_families
from trustfabric.metrics import (
    CumulativeHistogram,
    Families,
    MetricsEndpoint,
    counter,
    gauge,
    histograms,
    refusals,
)


class ServiceMetrics:
    """The collector of one :class:`~trustfabric.trading.services.base.ServiceRuntime`."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self._rtt: dict[str, CumulativeHistogram] = {}
        self._opens = CumulativeHistogram(OPEN_BUCKETS)

    def collect(self) -> Families:
        rt = self.rt
        labels = {"service": rt.name}
        if rt.pep is not None:
            yield from pep_families(rt.pep, self._opens)
        if rt.server is not None:
            listeners = {rt.name: dict(rt.server.refusals)}
            yield refusals(listeners)
            admission = rt.server.admission
            yield gauge("handshakes_in_flight", "Connections admitted and still in their handshake.",
                        admission.handshaking, labels=labels)
            yield gauge("connections_open", "Connections of the listener (handshaking or established).",
                        admission.connections, labels=labels)
        for target, link in list(rt.links.items()):
            ring = getattr(link, "latency", None)
            if ring is None:
                continue
            hist = self._rtt.setdefault(f"{rt.name}->{target}", CumulativeHistogram())
            hist.fold(list(ring.samples), ring.count)
        if self._rtt:
            yield histograms("link_rtt_seconds", "Round trips of the service's outgoing links (sampled by the "
                             "link's latency ring; overwritten samples counted as unsampled).", "link", self._rtt)
            yield counter("link_rtt_unsampled", "Round trips the ring overwrote before a scrape.",
                          label="link", by={k: h.unsampled for k, h in self._rtt.items()})
        yield gauge("audit_unshipped_bytes", "Bytes of the audit spool not yet in the central log.",
                    unshipped_bytes(rt.spool.directory), labels=labels)
        if rt.tls is not None:
            yield gauge("certificate_expiry_seconds", "Seconds left on the service's certificate.",
                        rt.credentials.current().not_after - rt.clock.now(), labels=labels)
        stats = GaugeMetricFamily("trustfabric_service_stat", "The numbers the service reports to the control "
                                  "plane (one per stat).", labels=["service", "stat"])
        for key, value in sorted(rt.report_stats().items()):
            stats.add_metric([rt.name, key], value)
        yield stats


def serve_metrics(runtime: Any, port: int) -> MetricsEndpoint:
    return MetricsEndpoint(ServiceMetrics(runtime).collect).start("127.0.0.1", port)
