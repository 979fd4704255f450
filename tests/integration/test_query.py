"""Queries against a real redis-server and a real Drainer: each event exactly once, in the
order it was stored, whatever the drainer moves between Redis and the file meanwhile."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe_cli import daystream
from logpipe_cli.buffer import BeginItem, Buffer
from logpipe_cli.daystream import Anchor
from logpipe_cli.drainer import Drainer
from logpipe_cli.errors import FileBusyError
from logpipe_cli.keys import EventKey
from logpipe_cli.query import EventReader, InvalidQueryError, Query, encode_cursor
from logpipe_cli.settings import DrainerSettings, RedisSettings
from logpipe_cli.sink import LockedFile, encode_lines, path_for
from tests.conftest import MakeSettings
from tests.integration.conftest import DAY, Rig, line

pytestmark = pytest.mark.anyio

EK = EventKey("u", DAY)
#: "now" for the reader: a day after DAY, so DAY is in every default range
NOW = (DAY + 1) * 86400.0


def reader(rig: Rig, partition_by: str = "event") -> EventReader:
    return EventReader(
        rig.buffer, rig.logs, clock=lambda: NOW, lock_timeout_s=5.0, partition_by=partition_by
    )


async def read_all(r: EventReader, q: Query) -> list[bytes]:
    """Page through everything with the cursors, as a client does."""
    out: list[bytes] = []
    while True:
        page = await r.page(q)
        out += [f.raw for f in page.events]
        if page.next_cursor is None:
            return out
        q = Query.parse(q.user_id, limit=q.limit, cursor=page.next_cursor, order=q.order)


async def test_file_claim_and_live_list_merged_in_stored_order(rig: Rig) -> None:
    first = await rig.add("u", range(0, 5))
    await rig.drainer().drain_once()
    second = await rig.add("u", range(5, 8))
    await rig.buffer.claim([EK], "someone", 60_000)  # a claim not yet worked
    third = await rig.add("u", range(8, 10))
    got = await read_all(reader(rig), Query.parse("u", limit=3))
    assert got == first + second + third


async def test_a_crashed_append_beyond_the_pending_offset_is_read_once(rig: Rig) -> None:
    lines = await rig.add("u", range(6))
    (claim,) = await rig.buffer.claim([EK], "dead", 60_000)
    assert claim.status == "claimed"
    (began,) = await rig.buffer.begin([BeginItem(EK, 0)], "dead", 60_000, 4)
    rig.path("u").parent.mkdir(parents=True)
    rig.path("u").write_bytes(encode_lines(began.values)[:-7])  # torn, never acknowledged
    got = await read_all(reader(rig), Query.parse("u", limit=4))
    assert got == lines


async def test_quarantined_values_have_no_index_so_a_cursor_skips_nothing(rig: Rig) -> None:
    good = await rig.add("u", range(3))
    await rig.buffer.append([(EK.key, b"not json"), (EK.key, b"[1]")])
    good += await rig.add("u", range(3, 6))
    r = reader(rig)
    page = await r.page(Query.parse("u", limit=4))
    assert [f.raw for f in page.events] == good[:4]
    report = await rig.drainer(batch_events=2).drain_once()
    assert report.quarantined == 2
    rest = await read_all(r, Query.parse("u", limit=4, cursor=page.next_cursor))
    assert rest == good[4:]


async def test_descending_pages_newest_first(rig: Rig) -> None:
    lines = await rig.add("u", range(7))
    await rig.drainer(batch_events=3).drain_once()
    lines += await rig.add("u", range(7, 10))
    got = await read_all(reader(rig), Query.parse("u", limit=4, order="desc"))
    assert got == lines[::-1]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_page_stops_at_its_byte_budget_with_a_cursor(rig: Rig, order: str) -> None:
    # a JSON page is held whole: big events end it before its limit, and the cursor
    # takes the reader on from there, in files and in the buffer alike
    lines = [line("u", n, pad="x" * 900) for n in range(10)]
    await rig.buffer.append([(EK.key, x) for x in lines[:6]])
    await rig.drainer().drain_once()
    await rig.buffer.append([(EK.key, x) for x in lines[6:]])
    r = reader(rig)
    budget = 2 * (len(lines[0]) + 1) + 500  # two events and a half (each line + newline)
    q = Query.parse("u", limit=100, order=order)
    pages: list[list[bytes]] = []
    while True:
        page = await r.page(q, max_bytes=budget)
        pages.append([f.raw for f in page.events])
        if page.next_cursor is None:
            break
        q = Query.parse("u", limit=100, cursor=page.next_cursor, order=order)
    assert len({len(x) for x in lines}) == 1
    assert [len(p) for p in pages] == [2, 2, 2, 2, 2]
    want = lines if order == "asc" else lines[::-1]
    assert [x for p in pages for x in p] == want
    # one event larger than the budget still makes a page, never an empty one
    alone = await r.page(Query.parse("u", limit=100, order=order), max_bytes=10)
    assert [f.raw for f in alone.events] == want[:1]
    assert alone.next_cursor is not None


async def test_filters_by_name_and_time_over_several_days(rig: Rig) -> None:
    a = await rig.add("u", range(4), day=DAY - 1)
    b = await rig.add("u", range(4), day=DAY)
    await rig.drainer().drain_once()
    r = reader(rig)
    assert await read_all(r, Query.parse("u", limit=2)) == a + b
    assert await read_all(r, Query.parse("u", events=["e1", "e3"])) == [a[1], a[3], b[1], b[3]]
    since = str(DAY * 86400 + 2)
    assert await read_all(r, Query.parse("u", since=since)) == b[2:]
    until = f"{DAY * 86400 + 1}"
    assert await read_all(r, Query.parse("u", until=until)) == [*a, b[0]]


async def test_ingest_partitioning_reads_later_days_for_old_timestamps(rig: Rig) -> None:
    # partition_by=ingest: an event of DAY - 3 that arrived on DAY is in DAY's list
    old = line("u", 1, DAY - 3)
    await rig.buffer.append([(EK.key, old)])
    since = str((DAY - 3) * 86400)
    until = str((DAY - 2) * 86400)
    got = await read_all(
        reader(rig, partition_by="ingest"), Query.parse("u", since=since, until=until)
    )
    assert got == [old]
    assert await read_all(reader(rig), Query.parse("u", since=since, until=until)) == []


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_cursor_pointing_inside_a_line_is_refused(rig: Rig, order: str) -> None:
    await rig.add("u", range(4))
    await rig.drainer().drain_once()
    r = reader(rig)
    page = await r.page(Query.parse("u", limit=2, order=order))
    assert page.end is not None
    assert page.end.anchor.byte > 0  # the cursor carries where its line starts or ends
    bent = replace(page.end, anchor=Anchor(page.end.anchor.line, page.end.anchor.byte - 3))
    q = Query.parse("u", cursor=encode_cursor("u", order, bent), order=order)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError) as err:
        await r.page(q)
    assert err.value.field == "cursor"


async def test_a_drainer_holding_the_file_holds_the_query_off(rig: Rig) -> None:
    await rig.add("u", range(2))
    await rig.drainer().drain_once()
    fd = rig.path("u").open("rb")
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a drainer holds while it works the key
    try:
        r = EventReader(rig.buffer, rig.logs, clock=lambda: NOW, lock_timeout_s=0.05)
        with pytest.raises(FileBusyError):
            await r.page(Query.parse("u"))
    finally:
        fd.close()
    assert len((await reader(rig).page(Query.parse("u"))).events) == 2


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
async def test_block_boundaries_and_long_lines_in_both_directions(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(daystream, "CHUNK_BYTES", chunk)
    lines = [line("u", n, pad="x" * (n * 13 % 97)) for n in range(30)]
    await rig.buffer.append([(EK.key, x) for x in lines])
    await rig.drainer(batch_events=7).drain_once()
    lines += await rig.add("u", range(30, 33))
    r = reader(rig)
    for limit in (1, 4, 11):
        assert await read_all(r, Query.parse("u", limit=limit)) == lines
        assert await read_all(r, Query.parse("u", limit=limit, order="desc")) == lines[::-1]


# ---- the property: no skip, no repeat --------------------------------------------------

Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.integers(1, 6)),
        st.tuples(st.just("bad"), st.integers(1, 2)),
        st.tuples(st.just("drain"), st.integers(1, 4)),
        st.tuples(st.just("page"), st.integers(1, 5)),
        st.tuples(st.just("page+drain"), st.integers(1, 5)),
        st.tuples(st.just("crash"), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=ops, order=st.sampled_from(["asc", "desc"]))
def test_paged_queries_never_skip_or_repeat_an_event(
    plan: list[Op], order: str, make_settings: MakeSettings, redis_url: str, tmp_path: Path
) -> None:
    base = make_settings(redis_url)
    logs = tmp_path / uuid.uuid4().hex
    cfg = replace(base, drainer=replace(base.drainer, logs_dir=str(logs), lease_seconds=0.2))
    flush = redis.Redis.from_url(redis_url)
    flush.flushall()
    flush.close()
    # small blocks, so pages start and stop inside blocks and lines cross them
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daystream, "CHUNK_BYTES", 100)
        asyncio.run(_play(cfg.redis, cfg.drainer, logs, plan, order))


async def _play(
    redis_cfg: RedisSettings, drainer_cfg: DrainerSettings, logs: Path, plan: list[Op], order: str
) -> None:
    async with Buffer.connect(redis_cfg) as buffer:
        r = EventReader(buffer, logs, clock=lambda: NOW, lock_timeout_s=10.0)
        counter = itertools.count()
        accepted: list[bytes] = []
        seen: list[bytes] = []
        snapshot: list[bytes] | None = None  # desc: what existed when paging began
        cursor: str | None = None
        done = False  # desc: the pages reached the oldest event

        async def page(limit: int) -> None:
            nonlocal cursor, snapshot, done
            if done:
                return
            if snapshot is None:
                snapshot = list(accepted)
            q = Query.parse("u", limit=limit, cursor=cursor, order=order)
            got = await r.page(q)
            seen.extend(f.raw for f in got.events)
            if got.next_cursor is not None:
                cursor = got.next_cursor
            elif order == "desc":
                done = True
            elif got.end is not None:
                # asc: no more for now; resume from where reading ended when more arrive
                cursor = encode_cursor("u", "asc", got.end)

        def drainer(batch: int) -> Drainer:
            return Drainer(buffer, replace(drainer_cfg, batch_events=batch))

        for op, n in plan:
            if op == "ingest":
                values = [line("u", next(counter)) for _ in range(n)]
                await buffer.append([(EK.key, v) for v in values])
                accepted += values
            elif op == "bad":
                await buffer.append([(EK.key, b"not an object %d" % next(counter))] * n)
            elif op == "drain":
                await drainer(n).drain_once()
            elif op == "page":
                await page(n)
            elif op == "page+drain":
                await asyncio.gather(page(n), drainer(1).drain_once())
            elif op == "crash":
                await _crash(buffer, logs, n)
        while True:  # page to the end
            before = len(seen)
            await page(3)
            if len(seen) == before:
                break
        if order == "asc":
            assert seen == accepted
        else:
            assert snapshot is not None
            assert seen == snapshot[::-1]


#: the dead drainer's lease: every drain after a crash waits it out before taking the key
#: over, so it is most of this property's time; its claim and begin take a few ms (a
#: begin after it ran out is refused: that crash then leaves nothing, which is legal too)
CRASH_LEASE_MS = 100


async def _crash(buffer: Buffer, logs: Path, n: int) -> None:
    """A drainer that appends a batch and dies before its ACK (lease of 100 ms)."""
    (claim,) = await buffer.claim([EK], "dead", CRASH_LEASE_MS)
    if claim.status != "claimed":
        return
    f = LockedFile.open(path_for(logs, EK))
    try:
        (began,) = await buffer.begin([BeginItem(EK, f.size)], "dead", CRASH_LEASE_MS, n)
        if began.values:
            f.append(encode_lines([v for v in began.values if v.startswith(b"{")]))
    finally:
        f.close()


def test_line_helper_is_json() -> None:
    assert json.loads(line("u", 1))["event"] == "e1"


async def test_a_far_until_is_cut_at_the_last_day_that_can_hold_events(rig: Rig) -> None:
    # attack: until=99999999999 (year 5138) made GET /logs check ~1.1 million empty days,
    # a minute of work per request; no event can be on a day after today + max_future_s
    written = await rig.add("u", range(3))
    r = reader(rig)
    far = Query.parse("u", since="0", until="99999999999")
    assert r.day_range(far) == (0, DAY + 2)  # today is DAY + 1, max_future_s one day
    assert await read_all(r, far) == written
    newest_first = Query.parse("u", until="99999999999", order="desc")
    assert await read_all(r, newest_first) == written[::-1]


async def test_a_file_named_with_a_non_ascii_digit_is_not_a_day(rig: Rig) -> None:
    # "²".isdigit() is True and int("²") raises: such a file made every query a 500
    lines = await rig.add("u", range(2))
    await rig.drainer().drain_once()
    (rig.path("u").parent / "².jsonl").write_bytes(b"")
    assert await read_all(reader(rig), Query.parse("u", limit=10)) == lines


async def test_a_day_with_too_many_buffered_events_is_refused_not_read(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # read whole (claim and live list, one transaction), so bounded: past the bound a
    # query of that day is a 503 that says why, not a Redis stall and a bloated API
    from logpipe_cli import query

    monkeypatch.setattr(query, "MAX_BUFFERED_READ", 5)
    await rig.add("u", range(3))
    await rig.buffer.claim([EK], "someone", 60_000)  # 3 in the claim
    await rig.add("u", range(3, 5))  # 2 live: 5 in all, the bound itself
    assert len(await read_all(reader(rig), Query.parse("u", limit=10))) == 5
    await rig.add("u", range(5, 6))
    with pytest.raises(query.BufferedTooLargeError, match=r"6 events of day \d+ buffered"):
        await reader(rig).page(Query.parse("u", limit=10))
    assert query.BufferedTooLargeError.http_status == 503
    # the bound is met when that day is reached: a page filled on the days before it
    # is served (its cursor would then reach the day, and be refused there)
    earlier = await rig.add("u", range(2), day=DAY - 1)
    page = await reader(rig).page(Query.parse("u", since=str((DAY - 1) * 86400), limit=1))
    assert [f.raw for f in page.events] == earlier[:1]
