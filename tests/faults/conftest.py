"""Fixtures for the fault-injection suite: logpipe as real processes, a real redis-server."""

from tests.processes import launcher  # noqa: F401 - fixture
