"""`logpipe config init/show` and how a bad configuration is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli.config_file import render_sample
from tests.cli.conftest import Invoke, assert_clean_error


def test_init_writes_the_sample_here(invoke: Invoke, workdir: Path) -> None:
    result = invoke("config", "init")
    assert result.exit_code == 0, result.stderr
    assert "wrote config.toml" in result.stdout
    assert result.stderr == ""
    assert (workdir / "config.toml").read_text(encoding="utf-8") == render_sample()


def test_init_refuses_to_overwrite_without_force(invoke: Invoke, workdir: Path) -> None:
    target = workdir / "mine.toml"
    target.write_text("# my settings\n", encoding="utf-8")
    refused = invoke("config", "init", str(target))
    assert_clean_error(refused, 2, str(target), "already exists", "--force")
    assert refused.stdout == ""
    assert target.read_text(encoding="utf-8") == "# my settings\n"

    forced = invoke("config", "init", str(target), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == render_sample()


def test_init_into_a_missing_directory(invoke: Invoke, workdir: Path) -> None:
    assert_clean_error(invoke("config", "init", "no/such/dir.toml"), 2, "cannot write")


def test_written_sample_is_a_valid_config(invoke: Invoke) -> None:
    assert invoke("config", "init").exit_code == 0
    shown = invoke("config", "show", "--json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["file"] == "config.toml"
    assert set(data["sources"].values()) == {"file"}


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param("[server\nport = 1\n", ["not valid TOML"], id="malformed"),
        pytest.param("[server]\nprot = 1\n", ["unknown key server.prot"], id="unknown-key"),
        pytest.param("[srv]\nport = 1\n", ["unknown section [srv]"], id="unknown-section"),
        pytest.param('[server]\nport = "80"\n', ["server.port", "an integer"], id="wrong-type"),
        pytest.param(
            "[server]\nport = 70000\n", ["server.port", "at most 65535"], id="out-of-range"
        ),
    ],
)
def test_bad_config_file_exits_2_naming_the_file(
    invoke: Invoke, workdir: Path, content: str, fragments: list[str]
) -> None:
    bad = workdir / "bad.toml"
    bad.write_text(content, encoding="utf-8")
    result = invoke("--config", str(bad), "config", "show")
    assert_clean_error(result, 2, str(bad), *fragments)
    assert result.stdout == ""


def test_bad_config_found_by_default_or_env(invoke: Invoke, workdir: Path) -> None:
    (workdir / "config.toml").write_text("[drainer]\nlogsdir = 'x'\n", encoding="utf-8")
    assert_clean_error(invoke("config", "show"), 2, "config.toml", "drainer.logsdir")
    other = workdir / "other.toml"
    other.write_text("[logging]\nlevel = 'loud'\n", encoding="utf-8")
    result = invoke("config", "show", env={"LOGPIPE_CONFIG": str(other)})
    assert_clean_error(result, 2, str(other), "logging.level")


def test_missing_config_file_named_explicitly(invoke: Invoke) -> None:
    assert_clean_error(
        invoke("-c", "nope.toml", "config", "show"), 2, "nope.toml", "does not exist"
    )


def test_bad_environment_variable_exits_2(invoke: Invoke) -> None:
    result = invoke("config", "show", env={"LOGPIPE_SERVER_PORT": "eighty"})
    assert_clean_error(result, 2, "LOGPIPE_SERVER_PORT", "an integer")


def test_unknown_environment_variable_exits_2_with_a_hint(invoke: Invoke) -> None:
    result = invoke("config", "show", env={"LOGPIPE_REDIS_ULR": "redis://elsewhere:1"})
    assert_clean_error(result, 2, "LOGPIPE_REDIS_ULR", "did you mean LOGPIPE_REDIS_URL?")


def test_malformed_redis_url_exits_2_in_one_line(invoke: Invoke) -> None:
    result = invoke("config", "show", env={"LOGPIPE_REDIS_URL": "redis://:hunter2@h:abc"})
    assert_clean_error(result, 2, "redis.url", "port")
    assert "hunter2" not in result.stderr


QUERY_PASSWORD = {"LOGPIPE_REDIS_URL": "redis://db.example:6380/2?password=hunter2"}


def test_show_json_masks_a_password_in_the_query(invoke: Invoke) -> None:
    result = invoke("config", "show", "--json", env=QUERY_PASSWORD)
    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stdout
    url = json.loads(result.stdout)["settings"]["redis"]["url"]
    assert url == "redis://db.example:6380/2?password=***"


def test_show_table_masks_a_password_in_the_query(invoke: Invoke) -> None:
    result = invoke("config", "show", env=QUERY_PASSWORD)
    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stdout
    # at 80 columns the table folds the URL inside its cell: join the value column
    cells = [line.split("│") for line in result.stdout.splitlines() if line.count("│") == 4]
    assert '"redis://db.example:6380/2?password=***"' in "".join(c[2].strip() for c in cells)


def test_show_json_sources_and_masking(invoke: Invoke, workdir: Path) -> None:
    (workdir / "config.toml").write_text(
        '[redis]\nurl = "redis://:hunter2@db.example:6380/2"\n[server]\nport = 4000\n',
        encoding="utf-8",
    )
    result = invoke("config", "show", "--json", env={"LOGPIPE_SERVER_PORT": "4500"})
    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stdout
    data = json.loads(result.stdout)
    assert data["file"] == "config.toml"
    assert data["settings"]["server"]["port"] == 4500
    assert data["settings"]["redis"]["url"] == "redis://:***@db.example:6380/2"
    assert data["sources"]["server.port"] == "env"
    assert data["sources"]["redis.url"] == "file"
    assert data["sources"]["drainer.logs_dir"] == "default"


def test_show_table(invoke: Invoke) -> None:
    result = invoke("config", "show", env={"LOGPIPE_DRAINER_LOGS_DIR": "/var/log/lp"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "file: none" in out
    row = next(x for x in out.splitlines() if "drainer.logs_dir" in x)
    assert "/var/log/lp" in row
    assert "env" in row


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.mkdir(), "is a directory, not a file"),
        (lambda p: None, "does not exist"),
    ],
    ids=["directory", "missing"],
)
def test_a_config_path_that_is_no_file_is_named_for_what_it_is(
    invoke: Invoke, workdir: Path, make: Any, problem: str
) -> None:
    target = workdir / "conf"
    make(target)
    result = invoke("--config", str(target), "config", "show")
    assert_clean_error(result, 2, f"config file {target} {problem}")
