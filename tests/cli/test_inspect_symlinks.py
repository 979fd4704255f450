"""``logpipe inspect file|files`` read below ``logs_dir`` as the drainer writes there:
following no link. A link planted in ``logs_dir`` (``user_x -> /home/alice``, or a day
file linked to a secret) is refused and reported, never read, counted or printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from logpipe_cli.settings import Settings
from tests.cli.ops_support import RunCli, one_error_line

DAY = 19723
SECRET = '{"user_id":"x","event":"the secret","timestamp":1}\n'


def _outside(tmp_path: Path) -> Path:
    """A directory outside logs_dir holding a day file with a secret in it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{DAY}.jsonl").write_text(SECRET)
    return elsewhere


def _real(logs: Path) -> None:
    (logs / "user_real").mkdir(parents=True)
    (logs / "user_real" / f"{DAY}.jsonl").write_text(
        '{"user_id":"real","event":"e","timestamp":1}\n'
    )


def test_file_refuses_a_linked_user_directory(
    logpipe: RunCli, settings: Settings, tmp_path: Path
) -> None:
    logs = Path(settings.drainer.logs_dir)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "user_x").symlink_to(_outside(tmp_path), target_is_directory=True)
    result = logpipe("inspect", "file", "--user", "x", "--day", str(DAY), "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "the secret" not in result.stdout + result.stderr
    assert "user_x" in one_error_line(result)


def test_file_refuses_a_linked_day_file(
    logpipe: RunCli, settings: Settings, tmp_path: Path
) -> None:
    logs = Path(settings.drainer.logs_dir)
    (logs / "user_x").mkdir(parents=True)
    (logs / "user_x" / f"{DAY}.jsonl").symlink_to(_outside(tmp_path) / f"{DAY}.jsonl")
    result = logpipe("inspect", "file", "--user", "x", "--day", str(DAY))
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "the secret" not in result.stdout + result.stderr
    assert f"{DAY}.jsonl" in one_error_line(result)


def test_files_skips_and_reports_links_and_fifos(
    logpipe: RunCli, settings: Settings, tmp_path: Path
) -> None:
    logs = Path(settings.drainer.logs_dir)
    _real(logs)
    elsewhere = _outside(tmp_path)
    (logs / "user_linkdir").symlink_to(elsewhere, target_is_directory=True)
    (logs / "user_linkfile").mkdir()
    (logs / "user_linkfile" / f"{DAY}.jsonl").symlink_to(elsewhere / f"{DAY}.jsonl")
    (logs / "user_fifo").mkdir()
    os.mkfifo(logs / "user_fifo" / f"{DAY}.jsonl")  # would block a plain open
    result = logpipe("inspect", "files", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["user"], r["events"]) for r in rows] == [("real", 1)]
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 3, result.stderr
    assert any("user_linkdir is a symbolic link: refused" in w for w in warnings)
    assert any(f"user_linkfile/{DAY}.jsonl is a symbolic link: refused" in w for w in warnings)
    assert any(f"user_fifo/{DAY}.jsonl is a FIFO: refused" in w for w in warnings)
    # the table too: only the real file, the same warnings
    table = logpipe("inspect", "files")
    assert table.exit_code == 0, table.stderr
    assert "real" in table.stdout
    assert "linkdir" not in table.stdout
    assert table.stderr == result.stderr
