"""Prometheus metrics for the API and the drainer (prometheus-client, own registries)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: the API's: seconds since the last drain pass of any outcome (from Redis)
LAST_PASS_AGE = "logpipe_last_drain_pass_age_seconds"
#: a drainer's: seconds since its last successful pass; the one to alert on
DRAIN_LAG = "logpipe_drain_lag_seconds"
REFUSAL_REASONS = (
    "invalid",
    "too_large",
    "media_type",
    "buffer_full",
    "redis_unavailable",
    "rate_limited",
)


class RequestTally:
    """One route, method and status's requests since the last scrape, as plain numbers:
    what the ``POST /log`` fast path counts per request (prometheus-client's ``inc`` and
    ``observe``, each behind a lock, cost ~1 us a request together). Folded into the
    ``logpipe_http_requests`` and ``logpipe_http_request_duration_seconds`` series by
    :meth:`ApiMetrics.render`, so a scrape reads the same values as if each request had
    been counted there."""

    __slots__ = ("_bounds", "buckets", "count", "counter", "histogram", "seconds")

    def __init__(self, counter: Any, histogram: Any, bounds: tuple[float, ...]) -> None:
        #: prometheus-client's children, made with the tally (their ``_created`` is then)
        self.counter = counter
        self.histogram = histogram
        self._bounds = bounds
        self.count = 0
        self.seconds = 0.0
        #: requests per latency bucket (the first whose upper bound is >= the latency)
        self.buckets = [0] * len(bounds)

    def add(self, seconds: float) -> None:
        """One request that took ``seconds``."""
        self.count += 1
        self.seconds += seconds
        self.buckets[bisect_left(self._bounds, seconds)] += 1

    def fold(self) -> None:
        """Move the counts into prometheus-client's series; start again from zero."""
        if not self.count:
            return
        self.counter.inc(self.count)
        hist = self.histogram
        # Histogram.observe adds to these: the sum, then the bucket of each observation
        hist._sum.inc(self.seconds)
        for i, n in enumerate(self.buckets):
            if n:
                hist._buckets[i].inc(n)
                self.buckets[i] = 0
        self.count = 0
        self.seconds = 0.0


class ApiMetrics(Collector):
    """The API's counters: plain ints on the hot path, turned into metrics on scrape.

    Per-route request counts and latencies use prometheus-client's own types. Values
    shared by all processes (buffered and drained events) are read from Redis by the
    ``/metrics`` handler and passed to :meth:`render`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "logpipe_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "logpipe_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        #: upper bounds as the histogram keeps them (+Inf last)
        self._bounds = (*_LATENCY_BUCKETS, float("inf"))
        self._tallies: dict[tuple[str, str, str], RequestTally] = {}
        self.accepted = 0
        #: events not stored because their id was stored before (answered 200, duplicate)
        self.duplicates = 0
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.redis_errors = 0
        self.started_at = time.time()
        self._shared: dict[str, Any] = {}
        self.registry.register(self)

    def tally(self, route: str, method: str, status: str) -> RequestTally:
        """The fast path's count of ``route``, ``method`` and ``status`` (see
        :class:`RequestTally`); keep it rather than asking per request."""
        key = (route, method, status)
        found = self._tallies.get(key)
        if found is None:
            found = self._tallies[key] = RequestTally(
                self.requests.labels(route, method, status),
                self.latency.labels(route),
                self._bounds,
            )
        return found

    def refuse(self, reason: str, events: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + events
        if reason == "redis_unavailable":
            self.redis_errors += 1

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily(
            "logpipe_events_accepted", "Events this process stored in Redis", value=self.accepted
        )
        yield CounterMetricFamily(
            "logpipe_events_duplicate",
            "Events this process answered as duplicates (their event_id was stored before)",
            value=self.duplicates,
        )
        refused = CounterMetricFamily(
            "logpipe_events_refused", "Events this process refused, by reason", labels=["reason"]
        )
        for reason, n in self.refused.items():
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily(
            "logpipe_redis_errors",
            "Redis calls that failed in this process",
            value=self.redis_errors,
        )
        shared = self._shared
        if "buffered" in shared:
            yield GaugeMetricFamily(
                "logpipe_buffered_events",
                "Events waiting in Redis (all API processes)",
                value=shared["buffered"],
            )
        if "buffered_bytes" in shared:
            yield GaugeMetricFamily(
                "logpipe_buffered_bytes",
                "Bytes of the events waiting in Redis (all API processes); the API answers "
                "503 at redis.max_buffered_bytes",
                value=shared["buffered_bytes"],
            )
        if "drained_events" in shared:
            yield CounterMetricFamily(
                "logpipe_drained_events",
                "Events written to files by all drainers",
                value=shared["drained_events"],
            )
        if "last_drain_at" in shared:
            # Not logpipe_drain_lag_seconds (a drainer's, since its last *successful*
            # pass): this one stays low while every pass fails, so it only says that
            # some drainer still runs.
            yield GaugeMetricFamily(
                LAST_PASS_AGE,
                "Seconds since any drainer last finished a pass, whatever its outcome; "
                "to alert on drains falling behind, use each drainer's "
                "logpipe_drain_lag_seconds",
                value=max(0.0, time.time() - shared["last_drain_at"]),
            )

    def render(self, shared: dict[str, Any]) -> bytes:
        """The Prometheus text exposition, with the Redis-wide values in ``shared``."""
        for tally in self._tallies.values():
            tally.fold()
        self._shared = shared
        return generate_latest(self.registry)


class DrainerMetrics:
    """What ``logpipe drain --metrics-port`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter(
            "logpipe_drain_passes", "Drain passes by outcome", ["outcome"], registry=self.registry
        )
        self.events = Counter(
            "logpipe_drain_events", "Events this drainer wrote to files", registry=self.registry
        )
        self.bytes = Counter(
            "logpipe_drain_bytes", "Bytes this drainer wrote to files", registry=self.registry
        )
        self.duration = Histogram(
            "logpipe_drain_duration_seconds",
            "Duration of drain passes",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.last_success = Gauge(
            "logpipe_drain_last_success_timestamp_seconds",
            "Unix time the last successful pass finished",
            registry=self.registry,
        )
        self.lag = Gauge(
            DRAIN_LAG,
            "Seconds since this drainer's last successful pass finished (0 before the "
            "first pass); alert on this one: it grows while passes fail or stop",
            registry=self.registry,
        )
        self.lag.set_function(self._lag)
        self._last_ok: float | None = None

    def _lag(self) -> float:
        return 0.0 if self._last_ok is None else time.time() - self._last_ok

    def observe(self, ok: bool, events: int, nbytes: int, seconds: float) -> None:
        self.passes.labels("ok" if ok else "error").inc()
        self.events.inc(events)
        self.bytes.inc(nbytes)
        self.duration.observe(seconds)
        if ok:
            self._last_ok = time.time()
            self.last_success.set(self._last_ok)
