"""Fixtures for the fault-injection suite: logpipe as real processes and a real
redis-server. The session's fault report (the ``fault_report`` fixture) is a plugin of the
whole session: :mod:`tests.faults.session_report`."""

from __future__ import annotations

from tests.processes import launcher  # noqa: F401 - fixture
from tests.redis_sentinel import sentinel_setup  # noqa: F401 - fixture
