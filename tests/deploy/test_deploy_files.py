"""Dockerfile, compose.yaml and deploy/: what can be checked without containers or a cluster.

Every file parses; every command, flag, ``LOGPIPE_*`` variable, port and probe path they
name exists in logpipe; the systemd units pass ``systemd-analyze verify``; every metric the
dashboard and the alert rules use is in the ``/metrics`` output of a real app or drainer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from litestar.testing import TestClient
from prometheus_client import generate_latest

from logpipe_cli.api import create_app
from logpipe_cli.cli.app import app
from logpipe_cli.metrics import DrainerMetrics
from logpipe_cli.server import GRACEFUL_SHUTDOWN_S
from logpipe_cli.settings import CONFIG_ENV, SETTINGS
from tests.conftest import MakeSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
K8S = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
RULES = sorted((DEPLOY / "prometheus").glob("*.yaml"))
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
YAML_FILES = [COMPOSE, *K8S, *RULES]
ALL_FILES = [DOCKERFILE, COMPOSE, *UNITS, *K8S, *RULES, *DASHBOARDS]
#: where the units expect logpipe; the verify test points them at this checkout's instead
INSTALLED_LOGPIPE = "/opt/logpipe/bin/logpipe"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_files_are_there() -> None:
    names = {_rel(p) for p in ALL_FILES}
    assert {
        "deploy/systemd/logpipe-api.service",
        "deploy/systemd/logpipe-drainer.service",
    } <= names
    assert K8S
    assert RULES
    assert DASHBOARDS


# ---- parsing ------------------------------------------------------------------------


def _yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, f"{_rel(path)} holds no document"
    assert all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", DASHBOARDS, ids=_rel)
def test_dashboard_json_parses(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash["title"]
    assert dash["panels"]
    assert all(t["expr"] for p in dash["panels"] for t in p["targets"])


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def _instr(instructions: list[tuple[str, str]], name: str) -> list[str]:
    return [args for word, args in instructions if word == name]


def _dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instr(instructions, "ENV"):
        for pair in args.split():
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_dockerfile_is_small_non_root_and_passes_signals(
    dockerfile: list[tuple[str, str]],
) -> None:
    unknown = {w for w, _ in dockerfile} - KNOWN_INSTRUCTIONS
    assert not unknown, f"not Dockerfile instructions: {unknown}"
    assert dockerfile[0][0] == "FROM"
    assert all("slim" in f or "alpine" in f for f in _instr(dockerfile, "FROM"))
    # the last USER (the one the program runs as) is not root
    user = _instr(dockerfile, "USER")[-1]
    assert user not in ("root", "0")
    # exec form: a JSON array, so logpipe is the process that gets SIGTERM
    (entrypoint,) = _instr(dockerfile, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["logpipe"]
    (cmd,) = _instr(dockerfile, "CMD")
    assert json.loads(cmd) == ["serve"]
    (health,) = _instr(dockerfile, "HEALTHCHECK")
    _, _, check = health.partition(" CMD ")
    check_args = json.loads(check)
    assert "/readyz" in " ".join(check_args)
    assert "LOGPIPE_SERVER_PORT" in " ".join(check_args)
    env = _dockerfile_env(dockerfile)
    (expose,) = _instr(dockerfile, "EXPOSE")
    assert expose == env["LOGPIPE_SERVER_PORT"]
    assert env["LOGPIPE_SERVER_HOST"] == "0.0.0.0"  # reachable from outside the container
    (volume,) = _instr(dockerfile, "VOLUME")
    assert json.loads(volume) == [env["LOGPIPE_DRAINER_LOGS_DIR"]]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!logpipe_cli/"]


# ---- commands and flags -------------------------------------------------------------


def _commands() -> dict[str, Any]:
    """The root app's sub-commands (typer vendors its own click: no isinstance checks)."""
    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return commands


def check_invocation(args: list[str], where: str) -> None:
    """``args`` (after ``logpipe``) name a real command and only its real options."""
    assert args, f"{where}: no command"
    command = _commands().get(args[0])
    assert command is not None, f"{where}: `logpipe {args[0]}` is no command"
    options = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
    rest = iter(args[1:])
    for token in rest:
        assert token.startswith("--"), f"{where}: unexpected argument {token!r}"
        name, eq, value = token.partition("=")
        param = options.get(name)
        assert param is not None, f"{where}: `logpipe {args[0]}` has no option {name}"
        if not getattr(param, "is_flag", False) and not eq:
            value = next(rest, "")
            assert value, f"{where}: {name} needs a value"
        low, high = getattr(param, "min", None), getattr(param, "max", None)
        if low is not None or high is not None:  # e.g. --metrics-port is 1..65535
            assert (low or 0) <= float(value) <= (high or float("inf")), f"{where}: {token}"


def invocations() -> Iterator[tuple[str, list[str]]]:
    """Every ``logpipe ...`` the files run: (where, args after ``logpipe``)."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    yield "Dockerfile CMD", json.loads(_instr(instructions, "CMD")[0])
    compose = _yaml_docs(COMPOSE)[0]
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("logpipe"):
            yield f"compose.yaml {name}", svc["command"]
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                binary, *args = line.removeprefix("ExecStart=").split()
                assert binary == INSTALLED_LOGPIPE, f"{unit.name}: runs {binary}"
                yield unit.name, args
    for path, container in k8s_containers():
        yield f"{path.name} {container['name']}", container["args"]


def k8s_containers() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in K8S:
        for doc in _yaml_docs(path):
            if doc["kind"] == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    yield path, c


def test_every_logpipe_invocation_is_a_real_command_with_real_options() -> None:
    seen = list(invocations())
    assert {args[0] for _, args in seen} == {"serve", "drain"}
    for where, args in seen:
        check_invocation(args, where)


def test_check_invocation_catches_a_wrong_flag() -> None:
    with pytest.raises(AssertionError, match="no option --metric-port"):
        check_invocation(["drain", "--metric-port", "9108"], "here")
    with pytest.raises(AssertionError, match="is no command"):
        check_invocation(["drainer"], "here")


# ---- environment variables ----------------------------------------------------------


def real_env_names() -> set[str]:
    return {CONFIG_ENV} | {info.env_var for info in SETTINGS.values()}


# ---- systemd --------------------------------------------------------------------------


def _unit_value(text: str, key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)
    assert len(values) == 1, f"{key}: {values}"
    return str(values[0])


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd; make test does)")
    logpipe = Path(sys.executable).parent / "logpipe"
    assert logpipe.exists(), logpipe
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED_LOGPIPE, str(logpipe)))
        copies.append(str(copy))
    result = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on unknown keys and bad values too: any message is a failure
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_stop_gracefully_and_are_hardened(unit: Path) -> None:
    text = unit.read_text()
    assert _unit_value(text, "KillSignal") == "SIGTERM"
    assert _unit_value(text, "Restart") == "on-failure"
    stop_s = int(_unit_value(text, "TimeoutStopSec").removesuffix("s"))
    if "logpipe-api" in unit.name:
        assert stop_s > GRACEFUL_SHUTDOWN_S  # uvicorn's own deadline comes first
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert f"\n{option}\n" in text
    if "drainer" in unit.name:
        logs_dir = _unit_value(text, "Environment").partition("=")[2]
        assert _unit_value(text, "ReadWritePaths").lstrip("-") == logs_dir


# ---- metric names ---------------------------------------------------------------------


def _exposition_names(text: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def exported_metrics(make_settings: MakeSettings, redis_url: str) -> set[str]:
    """Every metric name the API's ``/metrics`` and a drainer's metrics server expose."""
    with TestClient(create_app(make_settings(redis_url))) as client:
        ok = client.post("/log", json={"user_id": "1", "event": "x", "timestamp": 1712345678})
        assert ok.status_code == 200, ok.text
        assert client.post("/log", json={"user_id": "1"}).status_code == 400
        resp = client.get("/metrics")
        assert resp.status_code == 200
        api = resp.text
    drainer = DrainerMetrics()
    drainer.observe(True, 1, 10, 0.01)
    return _exposition_names(api) | _exposition_names(generate_latest(drainer.registry).decode())


def _used_metrics() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in [*RULES, *DASHBOARDS]:
        if path.suffix == ".json":
            panels = json.loads(path.read_text())["panels"]
            exprs = [t["expr"] for p in panels for t in p["targets"]]
        else:
            exprs = [r["expr"] for d in _yaml_docs(path) for g in d["groups"] for r in g["rules"]]
        used[_rel(path)] = set(re.findall(r"\blogpipe_[a-z0-9_]+", " ".join(exprs)))
    return used


def test_dashboard_and_rules_use_only_exported_metrics(exported_metrics: set[str]) -> None:
    used = _used_metrics()
    for where, names in used.items():
        assert names, f"{where} uses no logpipe metric"
        assert not names - exported_metrics, f"{where}: not in /metrics: {names - exported_metrics}"
    all_used = set().union(*used.values())
    # what the issue asks the alerts and dashboard to watch
    for needed in (
        "logpipe_drain_lag_seconds",
        "logpipe_buffered_events",
        "logpipe_events_refused_total",
        "logpipe_redis_errors_total",
    ):
        assert needed in all_used
