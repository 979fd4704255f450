"""`logpipe --help` and the commands that need no server start without importing one.

Every invocation imports every command module to build the command tree; each command
imports its library (the API server, the drainer, the HTTP client, Redis) when it runs.
Importing litestar and uvicorn alone took ~0.4 s of a ~1.5 s start on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: what only the commands that serve, drain, send or talk to Redis may import
HEAVY = ("litestar", "uvicorn", "httpx", "redis", "prometheus_client")


def run_then_list(packages: tuple[str, ...] = HEAVY, first: str = "") -> str:
    """Code that runs the app as the console script does (after ``first``), then prints
    the modules of ``packages`` it imported."""
    return f"""
{first}
import json, sys
from logpipe_cli.cli.app import app
try:
    app(sys.argv[1:], prog_name="logpipe")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {packages!r})))
"""


def imported(code: str, *args: str, cwd: Path) -> list[str]:
    """The modules ``code``, run in a fresh interpreter, says it has imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def test_importing_the_app_imports_no_server(workdir: Path) -> None:
    code = (
        "import logpipe_cli.cli.app, sys, json; print(json.dumps(sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {set(HEAVY)!r})))"
    )
    assert imported(code, cwd=workdir) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["send", "--help"],
        ["config", "show"],
        ["config", "init", "sample.toml"],
        ["token", "new"],
    ],
    ids=" ".join,
)
def test_commands_without_a_server_import_none(workdir: Path, args: list[str]) -> None:
    assert imported(run_then_list(), *args, cwd=workdir) == []


def test_the_check_sees_a_server_import(workdir: Path) -> None:
    """The guard above is blind if the package names are wrong: serving imports both."""
    code = run_then_list(HEAVY, first="import logpipe_cli.server")
    heavy = {m.split(".")[0] for m in imported(code, "--version", cwd=workdir)}
    assert {"litestar", "uvicorn"} <= heavy


def test_reading_the_config_imports_no_tomlkit(workdir: Path) -> None:
    """Every command reads its config (tomllib); only `config init` writes TOML (tomlkit)."""
    (workdir / "config.toml").write_text("[server]\nport = 8123\n", encoding="utf-8")
    assert imported(run_then_list(("tomlkit",)), "config", "show", cwd=workdir) == []
    # and the check sees tomlkit where it is used
    assert imported(run_then_list(("tomlkit",)), "config", "init", "x.toml", cwd=workdir) != []
