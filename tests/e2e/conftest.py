"""Fixtures for the end-to-end tests: logpipe as real processes."""

from tests.processes import launcher  # noqa: F401 - fixture
