"""redis-check's replication rows, printed into a pinned-width console."""

from __future__ import annotations

from rich.console import Console

from logpipe_cli.cli import redis_check
from logpipe_cli.health import Replica, Replication
from tests.cli.test_render import health, text


def rows(out: str) -> list[tuple[str, str]]:
    return [
        (line.split("│")[1].strip(), line.split("│")[2].strip())
        for line in out.splitlines()
        if line.count("│") == 3
    ]


def test_sentinel_rows_name_the_master_and_each_replica_with_its_lag(console: Console) -> None:
    replication = Replication(
        "sentinel",
        "10.0.0.1:6379",
        "master",
        1,
        [Replica("10.0.0.2:6379", "online", 0, 0), Replica("10.0.0.3:6379", "online", 2, 4096)],
    )
    redis_check.health_table(health(replication=replication), console)
    shown = rows(text(console))
    assert ("mode", "sentinel") in shown
    assert ("master", "10.0.0.1:6379") in shown
    assert ("replica", "10.0.0.2:6379 online, lag 0 s, 0 B behind") in shown
    assert ("replica", "10.0.0.3:6379 online, lag 2 s, 4.0 KiB behind") in shown
    assert ("min_replicas", "1") in shown


def test_standalone_table_has_no_replication_rows(console: Console) -> None:
    redis_check.health_table(health(), console)
    names = [name for name, _ in rows(text(console))]
    assert "mode" not in names
    assert "master" not in names
