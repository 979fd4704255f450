"""The client library's public names, and what importing it drags in."""

from __future__ import annotations

import subprocess
import sys

from logpipe_cli.errors import LogpipeError


def test_the_issue_names_import_from_logpipe_cli_client() -> None:
    from logpipe_cli import appclient, client, loghandler

    assert client.Client is appclient.Client
    assert client.AsyncClient is appclient.AsyncClient
    assert client.LogpipeHandler is loghandler.LogpipeHandler
    assert issubclass(client.RefusedError, LogpipeError)
    for name in client.__all__:
        assert hasattr(client, name), name


def test_the_client_library_never_imports_the_cli_or_server_stack() -> None:
    # rich is not checked: httpx itself imports it (httpx/__init__ loads its own CLI,
    # httpx._main, whenever rich and click are installed, as they are here)
    code = (
        "import sys\n"
        "from logpipe_cli.client import Client, AsyncClient, LogpipeHandler\n"
        "banned = ('typer', 'litestar', 'uvicorn', 'redis', 'logpipe_cli.cli')\n"
        "print(sorted(m for m in banned if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
