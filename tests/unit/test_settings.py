"""Settings: one precedence function tested with a table, and every way a value is refused."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli.config_file import load, read_config_file, render_sample, write_sample
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import (
    SETTINGS,
    Settings,
    all_settings,
    load_settings,
    mask_url,
    resolve_config_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- precedence: default < file < env < flag ------------------------------------------

PORT_FILE = {"server": {"port": 4000}}
PORT_ENV = {"LOGPIPE_SERVER_PORT": "5000"}
PORT_FLAG = {"server.port": 6000}


@pytest.mark.parametrize(
    ("file_data", "environ", "overrides", "port", "source"),
    [
        pytest.param({}, {}, {}, 3000, "default", id="default"),
        pytest.param(PORT_FILE, {}, {}, 4000, "file", id="file-over-default"),
        pytest.param({}, PORT_ENV, {}, 5000, "env", id="env-over-default"),
        pytest.param(PORT_FILE, PORT_ENV, {}, 5000, "env", id="env-over-file"),
        pytest.param({}, {}, PORT_FLAG, 6000, "flag", id="flag-over-default"),
        pytest.param(PORT_FILE, {}, PORT_FLAG, 6000, "flag", id="flag-over-file"),
        pytest.param(PORT_FILE, PORT_ENV, PORT_FLAG, 6000, "flag", id="flag-over-all"),
        pytest.param(
            PORT_FILE, PORT_ENV, {"server.port": None}, 5000, "env", id="flag-none-is-not-given"
        ),
    ],
)
def test_precedence_table(
    file_data: dict[str, Any],
    environ: dict[str, str],
    overrides: dict[str, Any],
    port: int,
    source: str,
) -> None:
    settings = load_settings(file_data, environ, overrides)
    assert settings.server.port == port
    assert settings.sources["server.port"] == source
    # the other keys are untouched and say so
    assert settings.server.host == "127.0.0.1"
    assert settings.sources["server.host"] == "default"


def test_sources_name_every_key_and_mix_per_key() -> None:
    settings = load_settings(
        {"redis": {"url": "redis://file:1"}, "drainer": {"logs_dir": "from-file"}},
        {"LOGPIPE_DRAINER_LOGS_DIR": "from-env", "LOGPIPE_LOGGING_LEVEL": "debug"},
        {"drainer.interval_seconds": 0.5},
    )
    assert settings.redis.url == "redis://file:1"
    assert settings.drainer.logs_dir == "from-env"
    assert settings.logging.level == "debug"
    assert settings.drainer.interval_seconds == 0.5
    assert settings.sources["redis.url"] == "file"
    assert settings.sources["drainer.logs_dir"] == "env"
    assert settings.sources["logging.level"] == "env"
    assert settings.sources["drainer.interval_seconds"] == "flag"
    assert settings.sources["redis.key_expiration_seconds"] == "default"
    expected = {f"{s}.{k}" for s, keys in Settings().as_dict().items() for k in keys}
    assert set(settings.sources) == expected


def test_defaults_are_the_seeds() -> None:
    s = load_settings()
    assert (s.server.host, s.server.port) == ("127.0.0.1", 3000)
    assert s.redis.url == "redis://127.0.0.1:6379"
    assert s.redis.key_expiration_seconds == 0
    assert s.drainer.interval_seconds == 60
    assert s.drainer.log_pattern == "logs:user_*:*"
    assert s.drainer.logs_dir == "logs"
    assert s.server.max_body_bytes == 1024 * 1024
    assert s.server.max_future_seconds == 86400
    assert s.server.partition_by == "event"


# ---- environment values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        (" off ", False),
    ],
)
def test_env_bool(raw: str, expected: bool) -> None:
    s = load_settings({"drainer": {"fsync": not expected}}, {"LOGPIPE_DRAINER_FSYNC": raw})
    assert s.drainer.fsync is expected
    assert s.sources["drainer.fsync"] == "env"


def test_env_int_and_float() -> None:
    s = load_settings(
        None,
        {
            "LOGPIPE_SERVER_PORT": "8080",
            "LOGPIPE_DRAINER_INTERVAL_SECONDS": "0.5",
            "LOGPIPE_REDIS_TIMEOUT_SECONDS": "2",
        },
    )
    assert s.server.port == 8080
    assert isinstance(s.server.port, int)
    assert s.drainer.interval_seconds == 0.5
    assert s.redis.timeout_seconds == 2.0
    assert isinstance(s.redis.timeout_seconds, float)


@pytest.mark.parametrize(
    ("var", "raw", "expected"),
    [
        ("LOGPIPE_SERVER_PORT", "abc", "an integer"),
        ("LOGPIPE_SERVER_PORT", "3.5", "an integer"),
        ("LOGPIPE_DRAINER_FSYNC", "maybe", "true or false"),
        ("LOGPIPE_DRAINER_INTERVAL_SECONDS", "soon", "a number"),
    ],
)
def test_env_wrong_type_names_the_variable(var: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {var: raw})
    assert var in info.value.detail
    assert expected in info.value.detail
    assert repr(raw) in info.value.detail
    assert info.value.exit_code == 2


def test_env_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"LOGPIPE_SERVER_PORT.*at most 65535"):
        load_settings(None, {"LOGPIPE_SERVER_PORT": "70000"})


@pytest.mark.parametrize(
    ("raw", "expected"), [("abc", "octal"), ("0777", "0000-0666"), ("640", None), ("0600", None)]
)
def test_file_mode_is_an_octal_string(raw: str, expected: str | None) -> None:
    env = {"LOGPIPE_DRAINER_FILE_MODE": raw}
    if expected is None:
        assert load_settings(None, env).drainer.file_mode_bits == int(raw, 8)
        return
    with pytest.raises(ConfigError, match=expected) as info:
        load_settings(None, env)
    assert "LOGPIPE_DRAINER_FILE_MODE" in info.value.detail


def test_unrelated_env_is_ignored() -> None:
    s = load_settings(None, {"PATH": "/bin", "LOGPIPE_CONFIG": "x.toml", "LOGPIPE_TOKEN": "t"})
    assert s == Settings()


@pytest.mark.parametrize(
    ("var", "hint"),
    [
        ("LOGPIPE_REDIS_ULR", "; did you mean LOGPIPE_REDIS_URL?"),
        ("LOGPIPE_SERVER_PROT", "; did you mean LOGPIPE_SERVER_PORT?"),
        ("LOGPIPE_NOPE_X", ""),
    ],
)
def test_unknown_logpipe_env_is_refused_with_a_hint(var: str, hint: str) -> None:
    # a typo would otherwise be silently ignored and the default used
    with pytest.raises(ConfigError) as info:
        load_settings(None, {var: "redis://elsewhere:1"})
    assert info.value.detail == f"environment variable {var} is not a logpipe setting{hint}"
    assert info.value.exit_code == 2


def test_unknown_file_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean port\?$"):
        load_settings({"server": {"prot": 1}})


def test_every_setting_states_its_facts_once() -> None:
    infos = list(all_settings())
    assert [i.name for i in infos] == list(SETTINGS)
    for info in infos:
        assert info.spec.comment, info.name
        assert info.env_var == "LOGPIPE_" + info.name.replace(".", "_").upper()
        if info.spec.choices:
            assert info.default in info.spec.choices
        if info.spec.minimum is not None:
            assert info.default >= info.spec.minimum


# ---- file values --------------------------------------------------------------------

FILE = Path("/etc/logpipe/config.toml")


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        pytest.param(
            {"sever": {"port": 1}}, ["unknown section [sever]", "[server]"], id="unknown-section"
        ),
        pytest.param(
            {"server": {"prot": 1}}, ["unknown key server.prot", "port"], id="unknown-key"
        ),
        pytest.param({"server": 5}, ["[server] must be a table"], id="section-not-table"),
        pytest.param(
            {"server": {"port": "3000"}}, ["server.port", "an integer", "'3000'"], id="str-for-int"
        ),
        pytest.param(
            {"server": {"port": 3000.0}}, ["server.port", "an integer"], id="float-for-int"
        ),
        pytest.param(
            {"server": {"port": True}}, ["server.port", "an integer", "got true"], id="bool-for-int"
        ),
        pytest.param(
            {"drainer": {"fsync": 1}}, ["drainer.fsync", "true or false"], id="int-for-bool"
        ),
        pytest.param(
            {"drainer": {"interval_seconds": "1"}},
            ["interval_seconds", "a number"],
            id="str-for-float",
        ),
        pytest.param({"redis": {"url": 6379}}, ["redis.url", "a string"], id="int-for-str"),
        pytest.param(
            {"server": {"port": 70000}},
            ["server.port", "at most 65535", "70000"],
            id="port-too-high",
        ),
        pytest.param({"server": {"port": -1}}, ["server.port", "at least 0"], id="port-negative"),
        pytest.param(
            {"redis": {"key_expiration_seconds": -5}},
            ["key_expiration_seconds", "at least 0"],
            id="ttl-negative",
        ),
        pytest.param(
            {"drainer": {"interval_seconds": 0}},
            ["interval_seconds", "at least"],
            id="interval-zero",
        ),
        pytest.param(
            {"server": {"partition_by": "hour"}},
            ["partition_by", "'event', 'ingest'", "'hour'"],
            id="bad-choice",
        ),
        pytest.param({"logging": {"level": "loud"}}, ["logging.level", "'loud'"], id="bad-level"),
    ],
)
def test_file_errors_name_file_key_and_expectation(
    data: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data, {}, path=FILE)
    detail = info.value.detail
    assert detail.startswith(f"{FILE}:"), detail
    for fragment in fragments:
        assert fragment in detail, (fragment, detail)
    assert "\n" not in detail


def test_int_accepted_for_float_key() -> None:
    s = load_settings({"drainer": {"interval_seconds": 2}})
    assert s.drainer.interval_seconds == 2.0
    assert isinstance(s.drainer.interval_seconds, float)


def test_flag_wrong_type_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"option --port: server.port must be an integer"):
        load_settings(None, None, {"server.port": "x"})
    with pytest.raises(ConfigError, match=r"option --port: server.port must be at most 65535"):
        load_settings(None, None, {"server.port": 99999})


def test_a_wrong_type_from_the_file_is_spelled_as_toml_spells_it() -> None:
    with pytest.raises(ConfigError, match=r"server.workers must be an integer, got true$"):
        load_settings({"server": {"workers": True}})


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(AttributeError):
        s.server.port = 1  # type: ignore[misc]


# ---- masking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:hunter2@host/1", "redis://alice:***@host/1"),
        ("rediss://alice:hunter2@host:6380", "rediss://alice:***@host:6380"),
        ("redis://alice@host:6379", "redis://alice@host:6379"),
        ("redis://:hunter2@[::1]:6379", "redis://:***@[::1]:6379"),
        ("redis://host:6379/0?password=hunter2", "redis://host:6379/0?password=***"),
        (
            "redis://host/0?socket_timeout=1&PassWord=hunter2&db=2",
            "redis://host/0?socket_timeout=1&PassWord=***&db=2",
        ),
        ("redis://host/0?pass%77ord=hunter2", "redis://host/0?pass%77ord=***"),
        ("redis://a:b:hunter2@host", "redis://a:***@host"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "hunter2" not in mask_url(url)


def test_repr_masks_the_password() -> None:
    s = load_settings({"redis": {"url": "redis://u:hunter2@h:1/0?password=hunter2"}})
    assert "hunter2" not in repr(s)
    assert "redis://u:***@h:1/0?password=***" in repr(s.redis)
    assert s.redis.url == "redis://u:hunter2@h:1/0?password=hunter2"


def test_as_dict_masks_unless_asked() -> None:
    s = load_settings({"redis": {"url": "redis://:hunter2@h:1"}})
    assert s.as_dict()["redis"]["url"] == "redis://:***@h:1"
    assert s.as_dict(mask_secrets=False)["redis"]["url"] == "redis://:hunter2@h:1"
    assert "hunter2" not in repr(s.as_dict())


# ---- the file itself ----------------------------------------------------------------


def test_sample_parses_back_to_the_defaults() -> None:
    data = tomllib.loads(render_sample())
    assert set(data) == {"server", "redis", "drainer", "limits", "logging", "auth"}
    settings = load_settings(data, {})
    assert settings == Settings()
    # every key is written out, so the sample is a complete reference
    assert all(src == "file" for src in settings.sources.values())


def test_sample_comments_every_key() -> None:
    lines = render_sample().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
    assert "DROPS events" in render_sample()


def test_config_toml_example_is_the_sample() -> None:
    example = REPO_ROOT / "config.toml.example"
    assert example.read_text(encoding="utf-8") == render_sample(), (
        "config.toml.example is stale: run `logpipe config init config.toml.example --force`"
    )


def test_write_sample_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    write_sample(target)
    assert target.read_text(encoding="utf-8") == render_sample()
    target.write_text("# mine\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="already exists"):
        write_sample(target)
    assert target.read_text(encoding="utf-8") == "# mine\n"
    write_sample(target, force=True)
    assert target.read_text(encoding="utf-8") == render_sample()


def test_write_sample_into_missing_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        write_sample(tmp_path / "nope" / "config.toml")


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_config_file(bad)
    assert str(bad) in info.value.detail
    assert "not valid TOML" in info.value.detail


def test_resolve_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) is None
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert resolve_config_path(None, {}) == Path("config.toml")
    other = tmp_path / "other.toml"
    other.write_text("", encoding="utf-8")
    assert resolve_config_path(None, {"LOGPIPE_CONFIG": str(other)}) == other
    assert resolve_config_path(str(other), {"LOGPIPE_CONFIG": "zzz"}) == other
    with pytest.raises(ConfigError, match=r"config file .*missing.toml does not exist"):
        resolve_config_path(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config_path(None, {"LOGPIPE_CONFIG": "missing.toml"})


def test_load_reads_file_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 4000\nhost = "0.0.0.0"\n', encoding="utf-8")
    s = load(cfg, {"server.host": "10.0.0.1"}, {"LOGPIPE_SERVER_PORT": "4500"})
    assert s.path == cfg
    assert (s.server.host, s.server.port) == ("10.0.0.1", 4500)
    assert (s.sources["server.host"], s.sources["server.port"]) == ("flag", "env")


def test_load_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[drainer]\nlogsdir = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{cfg}: unknown key drainer.logsdir"):
        load(cfg, None, {})


# ---- redis.url is checked at load ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://host:abc", "port is not a number"),
        ("redis://host:99999", "port is not a number"),
        ("redis://host:0", "port is not a number"),
        ("http://host:6379", "scheme must be one of redis://, rediss://, unix://"),
        ("host:6379", "scheme must be one of"),
        ("redis://host:6379/zero", "database number 'zero'"),
        ("redis://:hunter2@host:abc", "port is not a number"),
    ],
)
def test_malformed_redis_url_is_a_config_error(url: str, problem: str) -> None:
    for data, env, where in (
        ({"redis": {"url": url}}, {}, "config file"),
        (None, {"LOGPIPE_REDIS_URL": url}, "environment variable LOGPIPE_REDIS_URL"),
    ):
        with pytest.raises(ConfigError) as info:
            load_settings(data, env)
        assert info.value.exit_code == 2
        assert info.value.detail.startswith(f"{where}: redis.url ")
        assert problem in info.value.detail
        assert "hunter2" not in info.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "rediss://alice:pw@host:6380/3",
        "redis://[::1]:6379/0",
        "unix:///tmp/redis.sock?db=1",
        "redis://host",
    ],
)
def test_usable_redis_urls_load(url: str) -> None:
    assert load_settings({"redis": {"url": url}}).redis.url == url


def test_a_flag_error_names_the_option_as_typed() -> None:
    # drain's option is --interval, not --interval-seconds
    with pytest.raises(ConfigError, match=r"^option --interval: drainer.interval_seconds"):
        load_settings(None, {}, {"drainer.interval_seconds": 0.0})
