"""Prometheus metrics of a fabric process, read at scrape time from the counters it already keeps.

Nothing on the hot path knows about Prometheus. Each process that exposes metrics (a
floor service, the control plane, the sidecar) registers one *collector*: a callable
that, when Prometheus scrapes, reads the plain counters its enforcement point,
listeners, links, spool and certificates keep anyway and yields metric families
(``prometheus_client.core.CounterMetricFamily`` and friends). The families are built
with the helpers below so that every process names things the same way:

=======================================  =========  ==========================================
name                                     type       labels
=======================================  =========  ==========================================
``trustfabric_decisions_total``          counter    ``outcome`` (allow, deny, refused)
``trustfabric_denials_total``            counter    ``reason``
``trustfabric_fail_open_total``          counter    (must stay 0)
``trustfabric_sessions_open``            gauge
``trustfabric_handshake_refusals_total`` counter    ``listener``, ``reason`` (``admission.*`` too)
``trustfabric_link_rtt_seconds``         histogram  ``link`` (round trips sampled by the link)
``trustfabric_audit_unshipped_bytes``    gauge      (spool bytes not yet in the central log)
``trustfabric_certificate_expiry_seconds`` gauge    (time left on the process's certificate)
=======================================  =========  ==========================================

plus process-specific ones. :class:`MetricsEndpoint` serves a collector over HTTP on
loopback (``prometheus_client``'s exposition server, in its own thread): a scrape reads
plain integers and dictionaries (copied under the GIL) and never waits on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "trustfabric_"
# Round-trip buckets, seconds: 10 us to 1 s.
RTT_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)

Families = Iterable[Metric]


def counter(name: str, doc: str, value: float | None = None, *, labels: Mapping[str, str] | None = None,
            by: Mapping[str, float] | None = None, label: str = "") -> CounterMetricFamily:
    """A counter: one value, or one sample per key of ``by`` under the label ``label``."""
    fixed = dict(labels or {})
    family = CounterMetricFamily(PREFIX + name, doc, labels=[*fixed, *([label] if by is not None else [])])
    if by is not None:
        for key, n in sorted(dict(by).items()):
            family.add_metric([*fixed.values(), str(key)], float(n))
    else:
        family.add_metric(list(fixed.values()), float(value or 0))
    return family


def gauge(name: str, doc: str, value: float, *, labels: Mapping[str, str] | None = None) -> GaugeMetricFamily:
    fixed = dict(labels or {})
    family = GaugeMetricFamily(PREFIX + name, doc, labels=list(fixed))
    family.add_metric(list(fixed.values()), float(value))
    return family


def refusals(listeners: Mapping[str, Mapping[str, int]]) -> CounterMetricFamily:
    """``trustfabric_handshake_refusals_total{listener, reason}`` from each listener's refusal counts."""
    family = CounterMetricFamily(PREFIX + "handshake_refusals", "Connections refused before or during the "
                                 "handshake (TLS, identity, admission control, deadline).",
                                 labels=["listener", "reason"])
    for listener, counts in sorted(listeners.items()):
        for reason, n in sorted(dict(counts).items()):
            family.add_metric([listener, reason], float(n))
    return family


class CumulativeHistogram:
    """A cumulative histogram folded, at scrape time, from a ring of recent samples (nanoseconds).

    ``fold(samples, total)``: ``samples`` the ring's current contents (newest last), ``total``
    how many samples the ring has ever taken. The samples not seen at the last scrape are
    added; if the ring overwrote some before a scrape they are counted in ``unsampled``
    (never in a bucket), so the histogram only ever grows, as Prometheus requires.
    """

    def __init__(self, buckets: tuple[float, ...] = RTT_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum_s = 0.0
        self.seen = 0
        self.unsampled = 0

    def fold(self, samples: list[int], total: int) -> None:
        new = total - self.seen
        if new <= 0:
            return
        fresh = samples[-new:] if new <= len(samples) else samples
        self.unsampled += new - len(fresh)
        buckets, counts = self.buckets, self.counts
        for ns in fresh:
            s = ns / 1e9
            self.sum_s += s
            for i, bound in enumerate(buckets):
                if s <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
        self.seen = total

    def buckets_cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


def histograms(name: str, doc: str, label: str, series: Mapping[str, CumulativeHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=[label])
    for key, hist in sorted(series.items()):
        family.add_metric([key], hist.buckets_cumulative(), hist.sum_s)
    return family


class _FunctionCollector(Collector):
    def __init__(self, collect: Callable[[], Families]) -> None:
        self._collect = collect

    def collect(self) -> Families:
        try:
            yield from self._collect()
        except Exception as exc:  # noqa: BLE001 - a failing reader is a metric, never a broken scrape
            yield gauge("metrics_collect_failed", f"The collector raised {type(exc).__name__}.", 1.0)


class MetricsEndpoint:
    """``collect()`` served as Prometheus text on ``http://host:port/metrics`` (loopback only)."""

    def __init__(self, collect: Callable[[], Families]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_FunctionCollector(collect))
        self._server: Any = None
        self._thread: Any = None
        self.host = ""
        self.port = 0

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "MetricsEndpoint":
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("metrics are served on loopback only")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host, self.port = host, int(self._server.server_port)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
