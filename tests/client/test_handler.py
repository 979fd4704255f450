"""``LogpipeHandler``: log records become events, off the logging thread, none lost at exit."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator

import pytest

from logpipe_cli.appclient import Client, RetryPolicy
from logpipe_cli.client import LogpipeHandler
from tests.client.conftest import POLICY, FakeClock, FakeServer, stored


@pytest.fixture
def httpx_logs_info() -> Iterator[None]:
    """httpx logs each request at INFO, as it does by default (the CLI's tests quieten it)."""
    log = logging.getLogger("httpx")
    old = (log.level, log.propagate, log.disabled)
    log.setLevel(logging.INFO)
    log.propagate, log.disabled = True, False
    yield
    log.setLevel(old[0])
    log.propagate, log.disabled = old[1], old[2]


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of this test's own that does not pass records on to pytest's root."""
    log = logging.getLogger(f"app.{threading.get_ident()}.{id(object())}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)


def fake_handler(server: FakeServer, **kw: object) -> LogpipeHandler:
    c = Client("http://t", transport=server.transport(), retry=POLICY, sleep=FakeClock().sleep)
    return LogpipeHandler("http://t", client=c, **kw)  # type: ignore[arg-type]


def test_records_become_events(logger: logging.Logger) -> None:
    server = FakeServer()
    handler = fake_handler(server, user_id="default-user", flush_seconds=3600)
    logger.addHandler(handler)
    logger.info("paid %d euros", 12, extra={"user_id": "u42"})
    logger.warning("x" * 300)
    record_time: list[float] = []

    def note_time(record: logging.LogRecord) -> bool:
        record_time.append(record.created)
        return True

    logger.addFilter(note_time)
    logger.error("boom")
    handler.close()
    events = server.events()
    assert [(e["user_id"], e["event"][:10], e["level"], e["logger"]) for e in events] == [
        ("u42", "paid 12 eu", "INFO", logger.name),
        ("default-user", "x" * 10, "WARNING", logger.name),
        ("default-user", "boom", "ERROR", logger.name),
    ]
    assert len(events[1]["event"]) == 256
    assert events[2]["timestamp"] == int(record_time[0])
    assert len({e["event_id"] for e in events}) == 3
    assert handler.dropped == 0


def test_records_without_a_user_or_with_a_bad_one_are_dropped_and_counted(
    logger: logging.Logger,
) -> None:
    server = FakeServer()
    handler = fake_handler(server)
    logger.addHandler(handler)
    logger.info("nobody")
    logger.info("bad", extra={"user_id": "has spaces"})
    logger.info("fine", extra={"user_id": "u1"})
    handler.close()
    assert [e["event"] for e in server.events()] == ["fine"]
    assert handler.dropped == 2


def test_the_formatter_is_used(logger: logging.Logger) -> None:
    server = FakeServer()
    handler = fake_handler(server, user_id="u1")
    handler.setFormatter(logging.Formatter("%(levelname)s:%(message)s"))
    logger.addHandler(handler)
    logger.info("hello")
    handler.close()
    assert server.events()[0]["event"] == "INFO:hello"


def test_logging_shutdown_flushes_every_record(logger: logging.Logger) -> None:
    server = FakeServer()
    handler = fake_handler(server, user_id="u1", batch_size=500, flush_seconds=3600)
    logger.addHandler(handler)
    for i in range(1200):
        logger.info("event %d", i)
    # what atexit does, for this handler alone (the real list holds pytest's handlers too)
    logging.shutdown([weakref.ref(handler)])
    assert [e["event"] for e in server.events()] == [f"event {i}" for i in range(1200)]
    logger.info("after shutdown")  # a closed handler ignores records, it does not raise
    assert len(server.events()) == 1200


def test_a_server_that_hangs_never_blocks_the_logging_thread(logger: logging.Logger) -> None:
    server = FakeServer()
    server.gate = threading.Event()  # every request hangs until the gate opens
    handler = fake_handler(server, user_id="u1", batch_size=1, max_queue=50)
    logger.addHandler(handler)
    try:
        logger.info("first")
        assert server.entered.wait(30)  # the sender's thread is stuck in its POST
        for i in range(200):
            logger.info("while hung %d", i)
        # every call above returned while the server still held the first request;
        # what did not fit in the queue was dropped, not waited for
        assert not server.gate.is_set()
        assert handler.dropped == 200 - 50
    finally:
        server.gate.set()
        handler.close()
    assert len(server.events()) == 1 + 50


def test_a_dead_server_costs_records_but_never_blocks(logger: logging.Logger) -> None:
    from tests.redis_server import free_port

    clock = FakeClock()
    c = Client(
        f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(max_total_s=1.0, jitter=0.0),
        sleep=clock.sleep,
    )
    handler = LogpipeHandler("unused", user_id="u1", client=c, batch_size=10)
    logger.addHandler(handler)
    for i in range(25):
        logger.info("into the void %d", i)
    handler.close()  # gives up on each batch after the policy's time; never raises
    assert handler.failed == 25
    assert handler.dropped == 0


@pytest.mark.usefixtures("httpx_logs_info")
def test_the_senders_own_log_records_are_ignored() -> None:
    # httpx logs each request at INFO on the sender's thread; with the handler on the root
    # logger, each post would otherwise log a record that causes another post
    server = FakeServer()
    handler = fake_handler(server, user_id="u1", flush_seconds=0.01)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("app").info("one")
        assert handler._sender.flush(timeout=30)
        logging.getLogger("httpx").info("from the app's own thread: kept")
        handler.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert [e["event"] for e in server.events()] == ["one", "from the app's own thread: kept"]


@pytest.mark.e2e
@pytest.mark.redis
def test_records_reach_the_real_api(live: str, redis_url: str, logger: logging.Logger) -> None:
    handler = LogpipeHandler(live, user_id="service", token="t0k3n")
    logger.addHandler(handler)
    logger.info("started")
    logger.warning("slow request", extra={"user_id": "u7"})
    logging.shutdown([weakref.ref(handler)])
    events = sorted(stored(redis_url), key=lambda e: e["event"])
    assert [(e["user_id"], e["event"], e["level"]) for e in events] == [
        ("u7", "slow request", "WARNING"),
        ("service", "started", "INFO"),
    ]


@pytest.mark.usefixtures("httpx_logs_info")
def test_shutdown_on_a_root_handler_does_not_deadlock_on_httpx_records() -> None:
    # logging.shutdown() holds the handler's lock while it flushes and closes; the sender's
    # thread logs httpx's request line meanwhile, and must not wait for that lock
    server = FakeServer()
    handler = fake_handler(server, user_id="u1", flush_seconds=3600)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("app").info("one")
        done = threading.Thread(target=logging.shutdown, args=([weakref.ref(handler)],))
        done.start()
        done.join(30)
        assert not done.is_alive(), "logging.shutdown() deadlocked"
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert [e["event"] for e in server.events()] == ["one"]
