"""The load generator behind ``logpipe send --count`` and ``logpipe send --file``.

Events go out as ``POST /log`` (one per request) or ``POST /logs`` (NDJSON batches)
from ``concurrency`` workers, each with its own :class:`~logpipe_cli.appclient.AsyncClient`
(the client library, with its retries). Each event carries an ``event_id``, so a retry
never stores it twice. Each event ends up counted exactly once: accepted (the API stored
it), refused (the API answered with an error) or failed (no answer: the event may or may
not be stored).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from logpipe_cli.appclient import AsyncClient, RefusedError, RetryPolicy, UnavailableError
from logpipe_cli.client import failure
from logpipe_cli.clientcore import JSON, NDJSON, new_event_id
from logpipe_cli.errors import ClientError, ConfigError

#: called with (events done, events in all) after each request
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Request:
    """One HTTP request's worth of events: a single event or an NDJSON batch; from a
    file, ``lines`` are its events' line numbers there (1-based), for the messages."""

    body: bytes
    events: int
    lines: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadPlan:
    """Where and how hard to send."""

    url: str
    batch: bool = False
    concurrency: int = 8
    #: retries of a request after a timeout, a dropped connection, 429, 502, 503 or 504
    retries: int = 0
    timeout_s: float = 10.0
    #: the bearer token, if the API wants one (kept out of the repr)
    token: str | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return "/logs" if self.batch else "/log"

    @property
    def target(self) -> str:
        return self.url.rstrip("/") + self.path

    @property
    def content_type(self) -> str:
        return NDJSON if self.batch else JSON

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.retries)


@dataclass
class LoadSummary:
    """What a run did; ``sent == accepted + refused + failed``."""

    sent: int = 0
    accepted: int = 0
    refused: int = 0
    failed: int = 0
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    first_refusal: str | None = None
    first_failure: str | None = None
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.refused == 0 and self.failed == 0

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0-1) of request latency, nearest rank, in milliseconds."""
        return percentile(self.latencies_s, q) * 1000 if self.latencies_s else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
            "failed": self.failed,
            "requests": self.requests,
            "seconds": round(self.seconds, 6),
            "events_per_s": round(self.events_per_s, 1),
            "p50_ms": _round(self.latency_ms(0.50)),
            "p99_ms": _round(self.latency_ms(0.99)),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_refusal": self.first_refusal,
            "first_failure": self.first_failure,
            "ok": self.ok,
        }

    def record(
        self, req: Request, seconds: float, status: int, stored: int, refusal: str = ""
    ) -> None:
        """An answer: ``stored`` of the request's events were stored, and the rest refused
        (the first refusal said ``refusal``)."""
        self.sent += req.events
        self.requests += 1
        self.latencies_s.append(seconds)
        self.statuses[status] += 1
        self.accepted += stored
        if stored < req.events:
            self.refused += req.events - stored
            if self.first_refusal is None:
                self.first_refusal = f"{status}: {refusal}"

    def record_failure(self, req: Request, reason: str) -> None:
        self.sent += req.events
        self.requests += 1
        self.failed += req.events
        if self.first_failure is None:
            self.first_failure = reason


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _stored(req: Request, body: Any) -> int:
    if isinstance(body, dict) and isinstance(body.get("accepted"), int):
        return min(req.events, int(body["accepted"]))
    return req.events


def _refusal(exc: RefusedError | UnavailableError, req: Request) -> str:
    if isinstance(exc, UnavailableError):
        return exc.reason
    if exc.errors:
        index, detail = exc.errors[0]
        where = f"event {index}"
        if 0 <= index < len(req.lines):
            where += f", line {req.lines[index]} of the file"
        return f"{exc.detail} (first: {where}: {detail})"
    return exc.detail


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of ``values`` (not empty), ``q`` in 0-1."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# ---- what to send --------------------------------------------------------------------


def generated(
    count: int,
    *,
    users: int = 1,
    user: str | None = None,
    event: str = "load",
    timestamp: int | None = None,
) -> Iterator[bytes]:
    """``count`` events as JSON lines: users ``u0..u{users-1}`` in turn, or ``user``.

    Each carries a ``seq`` field (0, 1, ...) so the files can be checked for loss
    and duplicates afterwards, and an ``event_id`` so a retry cannot duplicate it.
    """
    encode = msgspec.json.encode
    for seq in range(count):
        yield encode(
            {
                "user_id": user if user is not None else f"u{seq % users}",
                "event": event,
                "timestamp": int(time.time()) if timestamp is None else timestamp,
                "seq": seq,
                "event_id": new_event_id(),
            }
        )


def numbered_file_events(path: Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of an events file, as they are (the API judges them), each
    with its number in the file (1-based)."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if line:
                yield number, line


def count_file_events(path: Path) -> int:
    """How many events :func:`numbered_file_events` will yield (one quick pass)."""
    return sum(1 for _ in numbered_file_events(path))


def requests(
    lines: Iterable[bytes], batch: int | None, numbers: Iterable[int] = ()
) -> Iterator[Request]:
    """One request per line, or NDJSON bodies of ``batch`` lines; ``numbers``, if given,
    are the lines' numbers in their file (see :attr:`Request.lines`)."""
    nums = iter(numbers)
    if batch is None:
        for line in lines:
            yield Request(line, 1, tuple(itertools.islice(nums, 1)))
        return
    it = iter(lines)
    while chunk := list(itertools.islice(it, batch)):
        yield Request(
            b"\n".join(chunk) + b"\n", len(chunk), tuple(itertools.islice(nums, len(chunk)))
        )


# ---- sending -------------------------------------------------------------------------


async def send_all(
    plan: LoadPlan, reqs: Iterable[Request], total: int, progress: Progress | None = None
) -> LoadSummary:
    """Send ``reqs`` with ``plan.concurrency`` workers; ``total`` events in all."""
    summary = LoadSummary()
    shared = iter(reqs)  # workers take turns; next() never awaits, so no lock is needed

    async def worker() -> None:
        # A client (one connection) per worker: httpx's pool scans every connection for
        # every request, which costs more CPU than the request itself when it is shared.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        transport = httpx.AsyncHTTPTransport(limits=limits)
        async with AsyncClient(
            plan.url, plan.token or None, plan.timeout_s, retry=plan.retry, transport=transport
        ) as client:
            for req in shared:
                await _send(client, plan, req, summary)
                if progress is not None:
                    progress(summary.sent, total)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    summary.seconds = time.perf_counter() - start
    return summary


async def _send(client: AsyncClient, plan: LoadPlan, req: Request, summary: LoadSummary) -> None:
    start = time.perf_counter()
    try:
        answer = await client.post_body(plan.path, req.body, plan.content_type)
    except (RefusedError, UnavailableError) as exc:
        if exc.status is None:  # no answer
            summary.record_failure(req, failure(exc, plan.target))
        else:
            summary.record(req, time.perf_counter() - start, exc.status, 0, _refusal(exc, req))
    except ClientError as exc:
        summary.record_failure(req, exc.detail)
    else:
        seconds = time.perf_counter() - start
        summary.record(req, seconds, answer.status, _stored(req, answer.body))


def run(
    plan: LoadPlan, reqs: Iterable[Request], total: int, progress: Progress | None = None
) -> LoadSummary:
    """:func:`send_all` from synchronous code."""
    return asyncio.run(send_all(plan, reqs, total, progress))
