"""``logpipe drain``: quiet output off a terminal, and ``--metrics-port``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from logpipe_cli import metrics
from logpipe_cli.settings import Settings
from tests.cli.ops_support import DEADLINE_S, RunCli, one_error_line, seed
from tests.processes import VERIFY
from tests.redis_server import free_port

DAY = 19723


def buffer_events(settings: Settings, users: int, per_user: int) -> None:
    seed(
        settings.redis.url,
        [
            (f"logs:user_u{u}:{DAY}", {"user_id": f"u{u}", "event": "e", "timestamp": DAY * 86400})
            for u in range(users)
            for _ in range(per_user)
        ],
    )


def test_once_json_is_only_json_even_for_many_keys(logpipe: RunCli, settings: Settings) -> None:
    buffer_events(settings, users=300, per_user=2)  # more keys than one progress step
    result = logpipe("drain", "--once", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["keys"], report["events"], report["files"]) == (300, 600, 300)
    assert result.stderr == ""
    assert len(list(Path(settings.drainer.logs_dir).glob("user_*/*.jsonl"))) == 300


def test_once_table_off_a_terminal_has_no_progress_bar(logpipe: RunCli, settings: Settings) -> None:
    buffer_events(settings, users=200, per_user=1)
    result = logpipe("drain", "--once")
    assert result.exit_code == 0, result.stderr
    assert "draining" not in result.stdout
    assert result.stdout.lstrip().startswith("drain")  # the summary table and nothing before
    assert "200" in result.stdout


class Captured:
    """Keeps each DrainerMetrics the command makes, to read its samples afterwards."""

    def __init__(self) -> None:
        self.real = metrics.DrainerMetrics
        self.instances: list[metrics.DrainerMetrics] = []

    def make(self) -> metrics.DrainerMetrics:
        m = self.real()
        self.instances.append(m)
        return m


def test_once_feeds_the_metrics(
    logpipe: RunCli, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer_events(settings, users=3, per_user=4)
    captured = Captured()
    monkeypatch.setattr(metrics, "DrainerMetrics", captured.make)
    result = logpipe("drain", "--once", "--metrics-port", str(free_port()), "--json")
    assert result.exit_code == 0, result.stderr
    [m] = captured.instances
    assert m.registry.get_sample_value("logpipe_drain_events_total") == 12
    assert m.registry.get_sample_value("logpipe_drain_passes_total", {"outcome": "ok"}) == 1
    assert (
        m.registry.get_sample_value("logpipe_drain_bytes_total")
        == json.loads(result.stdout)["bytes"]
    )


def test_metrics_port_taken_is_a_usage_error(logpipe: RunCli) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = logpipe("drain", "--once", "--metrics-port", str(port))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: --metrics-port {port}: ")


@pytest.fixture
def drainer_process(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``logpipe drain --interval 0.1 --metrics-port P`` as a process."""
    port = free_port()
    env: dict[str, Any] = {
        **os.environ,
        "LOGPIPE_REDIS_URL": settings.redis.url,
        "LOGPIPE_DRAINER_LOGS_DIR": settings.drainer.logs_dir,
    }
    env.pop("LOGPIPE_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logpipe_cli",
            "drain",
            "--interval",
            "0.1",
            "--metrics-port",
            str(port),
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def scrape(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2, verify=VERIFY).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_loop_serves_metrics_fed_by_every_pass(
    drainer_process: tuple[subprocess.Popen[str], int], settings: Settings
) -> None:
    proc, port = drainer_process
    buffer_events(settings, users=2, per_user=5)
    deadline = time.monotonic() + DEADLINE_S
    while scrape(port).get("logpipe_drain_events_total", 0) < 10:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"metrics never showed the events: {scrape(port)}"
        time.sleep(0.05)
    seen = scrape(port)
    assert seen['logpipe_drain_passes_total{outcome="ok"}'] >= 1
    assert seen["logpipe_drain_last_success_timestamp_seconds"] > 0
    assert "logpipe_drain_lag_seconds" in seen  # since the last *successful* pass
    assert "logpipe_last_drain_pass_age_seconds" not in seen  # the API's, another meaning
    assert seen["logpipe_drain_bytes_total"] > 0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, err
    assert sum(doc["events"] for doc in json_documents(out)) == 10


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (one per pass in loop mode)."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    while (pos := len(text) - len(text[pos:].lstrip())) < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
    return docs


def test_the_api_names_its_lag_apart_from_the_drainers() -> None:
    """The API's age of the last pass (any outcome) is not the drainer's lag (success)."""
    text = metrics.ApiMetrics().render({"last_drain_at": time.time() - 5}).decode()
    assert "logpipe_last_drain_pass_age_seconds " in text
    assert "logpipe_drain_lag_seconds" in text  # named in the help: which one to alert on
    assert "\nlogpipe_drain_lag_seconds " not in text
