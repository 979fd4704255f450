"""A tokens file with no token in it fails closed: it used to leave auth off, so an API
on a loopback address behind a proxy served everyone after a deploy emptied the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from logpipe_cli.auth import load_authorizer
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import load_settings


@pytest.mark.parametrize("text", ["", "\n\n", "# tokens go here\n   # none yet\n"])
def test_a_tokens_file_without_tokens_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    settings = load_settings({"auth": {"tokens_file": str(path)}}, {})
    with pytest.raises(ConfigError, match="holds no token") as caught:
        load_authorizer(settings.auth)
    assert caught.value.exit_code == 2
    assert str(path) in caught.value.detail
