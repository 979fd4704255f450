"""``python -m bench.drain_child PORT LOGS_DIR [--profile OUT]``: one timed drain pass.

Run by :func:`bench.drain.logpipe_drain` in a process of its own, so the peak RSS it
prints is the drainer's alone: ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``.
Linux carries ``ru_maxrss`` over an ``exec`` from the memory the process had before it
(``exec_mmap`` keeps the old mm's high-water mark), and a child that ``subprocess``
starts had, until its ``exec``, the bench's own memory: the 304 MB reported for the
100,000-key pass was the bench parent's (its load and raw-loop buffers), while the
drainer itself peaked at ~76 MB. ``VmHWM`` belongs to the new program's memory only.
With ``--profile`` the pass runs under cProfile and the stats are dumped to ``OUT``
(``python -m pstats OUT`` reads them). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import resource
import time
from pathlib import Path
from typing import Any

from logpipe_cli.buffer import Buffer
from logpipe_cli.drainer import Drainer
from logpipe_cli.settings import load_settings


def peak_rss_kib(usage: resource.struct_rusage) -> int:
    """This program's peak RSS in KiB: ``VmHWM`` (see the module's docstring), else
    ``ru_maxrss`` (KiB on Linux) where there is no ``/proc``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
    except OSError:
        pass
    return int(usage.ru_maxrss)


async def drain(port: int, logs_dir: Path, profile: Path | None) -> dict[str, Any]:
    settings = load_settings(
        {
            "redis": {"url": f"redis://127.0.0.1:{port}"},
            "drainer": {"logs_dir": str(logs_dir), "fsync": True},
        },
        {},
    )
    async with Buffer.connect(settings.redis) as buffer:
        # as `logpipe drain` runs it (drain_loop): the collector paused during the pass
        drainer = Drainer(buffer, settings.drainer, pause_gc=True)
        prof = cProfile.Profile() if profile else None
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        if prof is not None:
            prof.enable()
        report = await drainer.drain_once()
        if prof is not None:
            prof.disable()
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    if prof is not None and profile is not None:
        prof.dump_stats(profile)
    return {
        "ok": report.ok,
        "events": report.events,
        "keys": report.keys,
        "errors": report.errors[:3],
        "seconds": seconds,
        "cpu_s": {
            "user": round(after.ru_utime - before.ru_utime, 3),
            "sys": round(after.ru_stime - before.ru_stime, 3),
        },
        "peak_rss_mb": round(peak_rss_kib(after) / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("logs_dir", type=Path)
    p.add_argument("--profile", type=Path, default=None)
    args = p.parse_args()
    print(json.dumps(asyncio.run(drain(args.port, args.logs_dir, args.profile))))


if __name__ == "__main__":
    main()
