"""`logpipe run` (what `make run` runs): Redis started for us, API and drainer, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from logpipe_cli import redis_binary
from tests.processes import VERIFY, Launcher, LogpipeProcess, healthy, wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.e2e


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_starts_redis_api_and_drainer_and_stops_them(tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "LOGPIPE_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "LOGPIPE_SERVER_PORT": str(api_port),
        "LOGPIPE_DRAINER_INTERVAL_SECONDS": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "logpipe_cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{api_port}"
        _wait(lambda: httpx.get(f"{base}/readyz", verify=VERIFY).status_code == 200, 30, "the API")
        resp = httpx.post(
            f"{base}/log", json={"user_id": "123", "event": "clicked", "timestamp": 1712345678}
        )
        assert resp.status_code == 200
        target = tmp_path / "logs" / "user_123" / "19818.jsonl"
        line = '{"user_id":"123","event":"clicked","timestamp":1712345678}\n'
        # the file exists a moment before the drainer has written its line: wait for the line
        _wait(lambda: target.exists() and target.read_text() == line, 30, "the drained line")
        # Redis 7 keeps its AOF in appendonlydir/, 6.2 (the bundled one) in appendonly.aof
        data = tmp_path / ".logpipe" / "redis"
        assert (data / "appendonlydir").is_dir() or (data / "appendonly.aof").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "starting redis-server" in out
    assert not (tmp_path / ".logpipe" / "run.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz")
    # the Redis it started is gone too
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", redis_port))


# ---- a sturdy `logpipe run` / `make stop` (issue 11) ----------------------------------

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (one whose parent died may stay unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _said(proc: LogpipeProcess, text: str) -> bool:
    """``text`` is in the output, however the console wrapped it (whitespace ignored)."""
    return "".join(text.split()) in "".join(proc.stdout().split())


@dataclass
class Run:
    proc: LogpipeProcess
    redis_port: int
    api_port: int

    def redis_pid(self) -> int:
        client = redis.Redis(port=self.redis_port)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()


def _start_run(launcher: Launcher, tmp_path: Path, *args: str, path: str | None = None) -> Run:
    """``logpipe run`` with a Redis it must start itself; waits until the API is ready."""
    redis_port, api_port = free_port(), free_port()
    env = launcher.env(
        f"redis://127.0.0.1:{redis_port}",
        tmp_path / "logs",
        server_port=api_port,
        drainer_interval_seconds=0.2,
    )
    if path is not None:
        env["PATH"] = path
    proc = launcher.start(["run", *args], env, name="run")
    wait_until(
        lambda: (
            healthy(f"http://127.0.0.1:{api_port}")
            and (launcher.workdir / ".logpipe" / "run.pid").exists()
        ),
        "logpipe run to serve",
        procs=[proc],
    )
    return Run(proc, redis_port, api_port)


def test_kill_9_of_run_takes_its_redis_api_and_drainer_along(
    launcher: Launcher, tmp_path: Path
) -> None:
    # no redis-server on the PATH: the one bundled with logpipe is started
    empty = tmp_path / "empty-path"
    empty.mkdir()
    run = _start_run(launcher, tmp_path, path=str(empty))
    bundled = redis_binary.bundled()
    assert bundled is not None
    assert _said(run.proc, f"starting redis-server {bundled}"), run.proc.output()
    redis_pid = run.redis_pid()
    assert _alive(redis_pid)
    run.proc.kill()
    wait_until(lambda: not _alive(redis_pid), f"Redis (pid {redis_pid}) to exit")
    wait_until(lambda: _refuses(run.api_port), "the API to stop")
    assert _refuses(run.redis_port)


def test_sighup_stops_run_like_sigterm(launcher: Launcher, tmp_path: Path) -> None:
    bundled = redis_binary.bundled()
    assert bundled is not None
    run = _start_run(launcher, tmp_path, "--redis-server", str(bundled))
    assert _said(run.proc, f"starting redis-server {bundled}"), run.proc.output()
    redis_pid = run.redis_pid()
    run.proc.signal(signal.SIGHUP)
    assert run.proc.wait() == 0, run.proc.output()
    assert "stopped" in run.proc.stdout()
    assert not _alive(redis_pid)
    assert _refuses(run.api_port)
    assert not (launcher.workdir / ".logpipe" / "run.pid").exists()


def test_redis_server_flag_that_is_no_binary_is_a_usage_error(
    launcher: Launcher, tmp_path: Path
) -> None:
    env = launcher.env(f"redis://127.0.0.1:{free_port()}", tmp_path / "logs")
    result = launcher.run(["run", "--redis-server", str(tmp_path / "nope")], env)
    assert result.returncode == 2, result
    assert result.stderr.strip().endswith(
        f"error: --redis-server {tmp_path / 'nope'}: not an executable file"
    ), result.stderr


def test_a_taken_api_port_stops_run_before_it_starts_anything(
    launcher: Launcher, tmp_path: Path
) -> None:
    redis_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = launcher.env(f"redis://127.0.0.1:{redis_port}", tmp_path / "logs", server_port=port)
        result = launcher.run(["run"], env)
    assert result.returncode == 3, result
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert "API on" not in result.stderr + result.stdout
    assert "starting redis-server" not in result.stderr + result.stdout  # none was started
    assert _refuses(redis_port)


def test_a_redis_that_wants_a_password_is_reported_as_refusing(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", extra_args=("--requirepass", "s3cret"))
    server.start()
    try:
        env = launcher.env(server.url, tmp_path / "logs")
        result = launcher.run(["run"], env)
        wrong = launcher.run(
            ["run"], {**env, "LOGPIPE_REDIS_URL": f"redis://:wrong@127.0.0.1:{server.port}"}
        )
    finally:
        server.kill()
    assert result.returncode == 1, result
    assert f"error: Redis at {server.url} refused us: " in result.stderr, result.stderr
    assert "did not start" not in result.stdout + result.stderr
    assert "no Redis" not in result.stdout + result.stderr
    assert wrong.returncode == 1, wrong
    assert f"error: Redis at redis://:***@127.0.0.1:{server.port} refused us: " in wrong.stderr
    assert "wrong" not in wrong.stderr.replace("refused", "")


def _make_stop(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "stop"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_stop_removes_a_stale_pid_file_and_signals_nothing(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (tmp_path / ".logpipe").mkdir()
        pid_file = tmp_path / ".logpipe" / "run.pid"
        pid_file.write_text(str(bystander.pid))
        result = _make_stop(tmp_path)
        assert result.returncode == 0, result
        assert "stale" in result.stdout, result
        assert not pid_file.exists()
        assert bystander.poll() is None, "make stop signalled a process that is not logpipe"
        again = _make_stop(tmp_path)
        assert again.returncode == 0, again
        assert again.stdout.strip() == "nothing to stop"
    finally:
        bystander.kill()
        bystander.wait()


def test_make_stop_on_a_dead_pid_says_one_line(tmp_path: Path) -> None:
    """After a crash or a reboot the pid is gone: the stale message, no shell noise."""
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    (tmp_path / ".logpipe").mkdir()
    (tmp_path / ".logpipe" / "run.pid").write_text(str(dead.pid))
    result = _make_stop(tmp_path)
    assert result.returncode == 0, result
    assert "stale" in result.stdout, result
    assert result.stderr == "", result.stderr


def test_make_stop_stops_a_running_logpipe_run(launcher: Launcher, tmp_path: Path) -> None:
    run = _start_run(launcher, tmp_path)
    result = _make_stop(launcher.workdir)
    assert result.returncode == 0, result
    assert f"stopping logpipe run (pid {run.proc.pid})" in result.stdout
    assert run.proc.wait() == 0, run.proc.output()
    assert not (launcher.workdir / ".logpipe" / "run.pid").exists()


@pytest.mark.parametrize("userinfo", [':s3 cret"x', "bob:pa%40ss"])
def test_run_gives_the_redis_it_starts_the_password_in_the_url(
    launcher: Launcher, tmp_path: Path, userinfo: str
) -> None:
    redis_port = free_port()
    env = launcher.env(
        f"redis://{userinfo}@127.0.0.1:{redis_port}",
        tmp_path / "logs",
        server_port=free_port(),
    )
    proc = launcher.start(["run"], env, name="run")
    url = f"http://127.0.0.1:{env['LOGPIPE_SERVER_PORT']}"
    wait_until(
        lambda: healthy(url) and httpx.get(url + "/readyz", verify=VERIFY).status_code == 200,
        "the API to be ready",
        procs=[proc],
    )
    user, _, password = userinfo.partition(":")
    client = redis.Redis(port=redis_port, username=user or None, password=unquote(password))
    # no retry: redis-py retries an AuthenticationError with backoff (about 4 s)
    anonymous = redis.Redis(port=redis_port, retry=Retry(NoBackoff(), 0))
    try:
        assert client.ping()
        redis_pid = int(client.info("server")["process_id"])
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        client.close()
        anonymous.close()
    # given on stdin, not as an argument every local user can read
    assert unquote(password) not in Path(f"/proc/{redis_pid}/cmdline").read_text()
    assert proc.terminate() == 0, proc.output()
