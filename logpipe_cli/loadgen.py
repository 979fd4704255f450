"""The load generator behind ``logpipe send --count`` and ``logpipe send --file``.

Events go out as ``POST /log`` (one per request) or ``POST /logs`` (NDJSON batches)
from ``concurrency`` workers sharing one ``httpx.AsyncClient``. Each event ends up
counted exactly once: accepted (the API stored it), refused (the API answered with
an error) or failed (no answer: the event may or may not be stored).
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

from logpipe_cli import client
from logpipe_cli.errors import ClientError, ConfigError

#: called with (events done, events in all) after each request
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Request:
    """One HTTP request's worth of events: a single event or an NDJSON batch."""

    body: bytes
    events: int


@dataclass(frozen=True)
class LoadPlan:
    """Where and how hard to send."""

    url: str
    batch: bool = False
    concurrency: int = 8
    retries: int = 0
    timeout_s: float = 10.0
    backoff_s: float = 0.2
    #: the bearer token, if the API wants one (kept out of the repr)
    token: str | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return self.url.rstrip("/") + ("/logs" if self.batch else "/log")

    @property
    def content_type(self) -> str:
        return client.NDJSON if self.batch else client.JSON


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

    def record(self, req: Request, result: client.SendResult, seconds: float) -> None:
        self.sent += req.events
        self.requests += 1
        self.latencies_s.append(seconds)
        self.statuses[result.status] += 1
        stored = _stored(req, result)
        self.accepted += stored
        if stored < req.events:
            self.refused += req.events - stored
            if self.first_refusal is None:
                self.first_refusal = f"{result.status}: {_detail(result.body)}"

    def record_failure(self, req: Request, error: ClientError) -> None:
        self.sent += req.events
        self.requests += 1
        self.failed += req.events
        if self.first_failure is None:
            self.first_failure = error.detail


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _stored(req: Request, result: client.SendResult) -> int:
    if result.status != 200:
        return 0
    body = result.body
    if isinstance(body, dict) and isinstance(body.get("accepted"), int):
        return min(req.events, int(body["accepted"]))
    return req.events


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        detail = str(body.get("detail", body))
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            detail += f" (first: event {first.get('index')}: {first.get('detail')})"
        return detail
    return str(body)[:200]


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
    and duplicates afterwards.
    """
    encode = msgspec.json.encode
    for seq in range(count):
        yield encode(
            {
                "user_id": user if user is not None else f"u{seq % users}",
                "event": event,
                "timestamp": int(time.time()) if timestamp is None else timestamp,
                "seq": seq,
            }
        )


def file_events(path: Path) -> Iterator[bytes]:
    """The non-blank lines of an events file, as they are (the API judges them)."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for raw in fh:
            line = raw.strip()
            if line:
                yield line


def count_file_events(path: Path) -> int:
    """How many events :func:`file_events` will yield (one quick pass)."""
    return sum(1 for _ in file_events(path))


def requests(lines: Iterable[bytes], batch: int | None) -> Iterator[Request]:
    """One request per line, or NDJSON bodies of ``batch`` lines."""
    if batch is None:
        for line in lines:
            yield Request(line, 1)
        return
    it = iter(lines)
    while chunk := list(itertools.islice(it, batch)):
        yield Request(b"\n".join(chunk) + b"\n", len(chunk))


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
        async with httpx.AsyncClient(timeout=plan.timeout_s, limits=limits) as http:
            for req in shared:
                await _send(http, plan, req, summary)
                if progress is not None:
                    progress(summary.sent, total)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    summary.seconds = time.perf_counter() - start
    return summary


async def _send(
    http: httpx.AsyncClient, plan: LoadPlan, req: Request, summary: LoadSummary
) -> None:
    start = time.perf_counter()
    try:
        result = await client.post(
            http,
            plan.target,
            req.body,
            plan.content_type,
            token=plan.token,
            retries=plan.retries,
            backoff_s=plan.backoff_s,
        )
    except ClientError as exc:
        summary.record_failure(req, exc)
    else:
        summary.record(req, result, time.perf_counter() - start)


def run(
    plan: LoadPlan, reqs: Iterable[Request], total: int, progress: Progress | None = None
) -> LoadSummary:
    """:func:`send_all` from synchronous code."""
    return asyncio.run(send_all(plan, reqs, total, progress))
