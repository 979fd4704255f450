"""The ``POST /log`` fast path counts its requests in plain numbers (RequestTally) that a
scrape folds into prometheus-client's series: a scrape must read exactly what counting
each request there would have given (the latency sums within float rounding: adding
the same seconds in another grouping may differ in the last bit)."""

from __future__ import annotations

import math

from logpipe_cli.metrics import ApiMetrics

#: latencies on, between and beyond the bucket bounds (0.001 and 2.5 are bounds)
SECONDS = [0.0001, 0.001, 0.0011, 0.003, 0.02, 0.3, 2.5, 2.6, 40.0, 0.0]


def _exposition(metrics: ApiMetrics) -> list[str]:
    """The scrape's lines, but the ``_created`` timestamps (when each series was made)."""
    text = metrics.render({}).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_a_scrape_reads_what_per_request_counting_gives() -> None:
    tallied, direct = ApiMetrics(), ApiMetrics()
    for scrape in range(3):
        for i, seconds in enumerate(SECONDS * (scrape + 1)):
            status = "200" if i % 3 else "400"
            tallied.tally("/log", "POST", status).add(seconds)
            direct.requests.labels("/log", "POST", status).inc()
            direct.latency.labels("/log").observe(seconds)
        # a route counted the usual way too (a refusal by the gate, the middleware)
        for metrics in (tallied, direct):
            metrics.requests.labels("/log", "POST", "401").inc()
            metrics.latency.labels("/log").observe(0.002)
        got, want = _exposition(tallied), _exposition(direct)
        assert len(got) == len(want)
        for line, expected in zip(got, want, strict=True):
            if "_sum{" in line:
                name, value = line.rsplit(" ", 1)
                assert name == expected.rsplit(" ", 1)[0]
                assert math.isclose(float(value), float(expected.rsplit(" ", 1)[1]))
            else:
                assert line == expected
        assert 'logpipe_http_requests_total{method="POST",route="/log",status="200"}' in "\n".join(
            got
        )


def test_a_series_is_exposed_from_its_first_request_on() -> None:
    metrics = ApiMetrics()
    metrics.tally("/logs", "POST", "200")  # made: exposed at zero, as labels() would
    text = metrics.render({}).decode()
    assert 'logpipe_http_requests_total{method="POST",route="/logs",status="200"} 0.0' in text
    assert 'logpipe_http_requests_created{method="POST",route="/logs",status="200"}' in text
