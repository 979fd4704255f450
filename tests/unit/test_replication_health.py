"""redis-check's replication warnings, and its report staying as it was for standalone."""

from __future__ import annotations

from logpipe_cli.health import Replica, Replication, risks
from logpipe_cli.settings import load_settings
from tests.unit.test_health import report


def replication(mode: str, min_replicas: int, online: int) -> Replication:
    replicas = [Replica(f"10.0.0.{i}:6379", "online", 0, 0) for i in range(online)]
    replicas.append(Replica("10.0.0.9:6379", "wait_bgsave", 3, 1024))
    return Replication(mode, "10.0.0.1:6379", "master", min_replicas, replicas)


def test_sentinel_without_min_replicas_warns() -> None:
    (warning,) = risks(report(replication=replication("sentinel", 0, 2)), load_settings())
    assert "redis.min_replicas is 0" in warning


def test_more_min_replicas_than_online_replicas_warns() -> None:
    (warning,) = risks(report(replication=replication("sentinel", 3, 2)), load_settings())
    assert warning.startswith("redis.min_replicas is 3 but 2 replicas are online")


def test_enough_replicas_is_quiet() -> None:
    assert risks(report(replication=replication("sentinel", 2, 2)), load_settings()) == []


def test_standalone_report_has_no_replication_key() -> None:
    assert "replication" not in report().as_dict()
    assert report(replication=replication("sentinel", 1, 1)).as_dict()["replication"]["replicas"][
        0
    ] == {"address": "10.0.0.0:6379", "state": "online", "lag_s": 0, "behind_bytes": 0}
