"""A key written by hand for a day past the year 9999 (``logs:user_x:99999999``) is a
valid key, drained to ``user_x/99999999.jsonl``; listing it crashed ``inspect keys``,
``inspect files`` and ``stats --keys`` with an OverflowError traceback."""

from __future__ import annotations

import json
from pathlib import Path

from logpipe_cli.settings import Settings
from tests.cli.ops_support import RunCli, seed

FAR = 99_999_999
EVENT = {"user_id": "far", "event": "e", "timestamp": 1712345678}


def test_keys_and_files_of_a_day_past_9999_are_listed(logpipe: RunCli, settings: Settings) -> None:
    seed(settings.redis.url, [(f"logs:user_far:{FAR}", EVENT)])
    for args in (("inspect", "keys"), ("inspect", "keys", "--sort", "age")):
        table = logpipe(*args)
        assert table.exit_code == 0, table.stderr
        assert str(FAR) in table.stdout
    rows = json.loads(logpipe("inspect", "keys", "--json").stdout)
    assert [(r["day"], r["date"]) for r in rows] == [(FAR, str(FAR))]

    logs = Path(settings.drainer.logs_dir)
    (logs / "user_far").mkdir(parents=True)
    (logs / "user_far" / f"{FAR}.jsonl").write_text(json.dumps(EVENT) + "\n")
    files = logpipe("inspect", "files", "--json")
    assert files.exit_code == 0, files.stderr
    assert [(f["day"], f["date"]) for f in json.loads(files.stdout)] == [(FAR, str(FAR))]
    table = logpipe("inspect", "files")
    assert table.exit_code == 0, table.stderr
    assert str(FAR) in table.stdout
