"""What one stored event costs Redis, counted in instructions rather than timed.

    python -m bench.redis_cost [--per 100] [--flushes 100] [--ids] [--rpush] [--top N]

Runs ``redis-server`` (AOF on, ``appendfsync everysec``, as ``bench.run``) under
``valgrind --tool=callgrind``, stores ``--flushes`` flushes of ``--per`` events over 1,000
users through :meth:`Buffer.store` (APPEND, the write path's one script; ``--ids`` gives
every event an ``event_id``), and prints Redis's instructions per event. ``--rpush`` sends
the same events as a plain pipeline of ``RPUSH`` instead, as the Rust original does: the
floor a script's checks and counters are measured against. ``--top N`` also prints the N
functions of Redis with the most instructions per event, inclusive (callgrind_annotate).

Instructions do not move with the machine's load, so two versions of the script compare
exactly where a timed run on a shared 2-core machine cannot (bench/HISTORY.md: 100-event
batches ``--per 100 --flushes 100``, single events ``--per 16 --flushes 3000``). The count
covers only the measured flushes (callgrind's counters are zeroed after a warm-up store)
and includes Redis's own socket reads and replies. Needs ``valgrind``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import tempfile
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from bench.procs import free_port, need, wait_redis
from logpipe_cli.buffer import Buffer
from logpipe_cli.resp import LeanRedis
from logpipe_cli.settings import RedisSettings

USERS = 1000
DAY = 19800


def line(user: int, n: int) -> bytes:
    return b'{"user_id":"%d","event":"clicked_button","timestamp":%d}' % (user, 1712345678 + n)


def callgrind(action: str, pid: int) -> None:
    """``callgrind_control --zero`` or ``--dump`` (nothing else runs meanwhile: it may block)."""
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


async def store(port: int, pid: int, per: int, flushes: int, ids: bool, rpush: bool) -> int:
    """Send the flushes; callgrind counts only them. Returns the events sent."""
    client = aioredis.Redis(port=port)
    buffer = Buffer(client, RedisSettings(url=f"redis://127.0.0.1:{port}"))
    # the API's way: APPEND through the lean connection
    lean = LeanRedis.from_url(f"redis://127.0.0.1:{port}", timeout_s=60)
    buffer.write_through(lean)
    try:
        # warm-up: the script loaded, the connection made
        await buffer.store([(f"logs:user_w:{DAY}", line(0, 0))], ids=["w"] if ids else None)
        callgrind("--zero", pid)
        n = 0
        for _ in range(flushes):
            items: list[tuple[str, bytes]] = []
            for _ in range(per):
                user = (n * 7919) % USERS
                items.append((f"logs:user_{user}:{DAY}", line(user, n)))
                n += 1
            if rpush:
                pipe = client.pipeline(transaction=False)
                for key, value in items:
                    pipe.rpush(key, value)
                await pipe.execute()
            else:
                eids: list[str | None] | None = [uuid.uuid4().hex for _ in items] if ids else None
                await buffer.store(items, ids=eids)
        callgrind("--dump", pid)
        return n
    finally:
        if lean is not None:
            await lean.aclose()
        await client.aclose()


def annotate(out_dir: Path, *flags: str) -> str:
    """``callgrind_annotate`` of the dump made after the measured flushes (the newest file)."""
    dumps = sorted(out_dir.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
    argv = ["callgrind_annotate", *flags, str(dumps[-1])]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def total_instructions(out_dir: Path) -> int:
    """The instructions of the measured flushes."""
    text = annotate(out_dir)
    found = re.search(r"([\d,]+) \S*\s*PROGRAM TOTALS", text)
    if found is None:
        raise SystemExit(f"no PROGRAM TOTALS in callgrind_annotate's output in {out_dir}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per", type=int, default=100, help="events per flush (1,000 users)")
    p.add_argument("--flushes", type=int, default=100)
    p.add_argument("--ids", action="store_true", help="every event with an event_id")
    p.add_argument("--rpush", action="store_true", help="plain pipelined RPUSH, no script")
    p.add_argument(
        "--top", type=int, default=0, help="also print the N functions with the most inclusive cost"
    )
    args = p.parse_args()
    need("valgrind")
    need("callgrind_control")
    server = need("redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
                server, "--port", str(port), "--dir", tmp, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_redis(port, proc, timeout_s=60)
            sent = store(port, proc.pid, args.per, args.flushes, args.ids, args.rpush)
            events = asyncio.run(sent)
            total = total_instructions(out)
            top = annotate(out, "--inclusive=yes").splitlines() if args.top else []
        finally:
            proc.terminate()
            proc.wait()
    what = "RPUSH pipeline" if args.rpush else "APPEND" + (" with ids" if args.ids else "")
    print(
        f"{what}, {args.flushes} flushes of {args.per} events over {USERS:,} users: "
        f"{total / events:,.0f} Redis instructions per event ({events:,} events)"
    )
    rows = [r for r in top if re.match(r"\s*[\d,]+ \(", r)]
    for r in rows[: args.top]:
        count, _, rest = r.strip().partition(" ")
        name = rest.split(" ", 1)[1] if " " in rest else rest
        print(f"{int(count.replace(',', '')) / events:>10,.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
