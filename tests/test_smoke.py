"""The real redis-server fixture works and the package imports without the CLI."""

from __future__ import annotations

import subprocess
import sys

from tests.redis_server import RedisServer


def test_fixture_redis_answers(redis_server: RedisServer) -> None:
    client = redis_server.client()
    try:
        assert client.ping() is True
        assert redis_server.port != 6379
    finally:
        client.close()


def test_library_never_imports_cli_or_typer() -> None:
    # rich is kept out of the library by ruff's banned-api rule; it cannot be checked
    # here because httpx imports it for its own command line.
    code = (
        "import sys, logpipe_cli, logpipe_cli.api, logpipe_cli.drainer, logpipe_cli.buffer, "
        "logpipe_cli.sink, logpipe_cli.settings, logpipe_cli.client, logpipe_cli.health; "
        "bad = [m for m in ('typer', 'logpipe_cli.cli') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
