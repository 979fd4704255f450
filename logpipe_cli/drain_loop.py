"""The drain loop's lifecycle: signals, the metrics server, stopping cleanly.

One place for what every long-running drainer needs (the CLI's ``logpipe drain``, tests,
the bench), as uvicorn's ``Server.handle_exit`` is for a web server: the first
SIGINT/SIGTERM finishes the pass in hand, a second one stops now.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

from prometheus_client import start_http_server

from logpipe_cli import metrics
from logpipe_cli.buffer import Buffer
from logpipe_cli.drainer import Drainer, DrainReport, Progress, cancel_and_wait
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import Settings

OnReport = Callable[[DrainReport], None]
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainLoop:
    """Runs :meth:`Drainer.run` until :meth:`handle_exit` (or a signal) says stop."""

    def __init__(
        self, drainer: Drainer, interval_s: float, on_report: OnReport | None = None
    ) -> None:
        self.drainer = drainer
        self.interval_s = interval_s
        self.on_report = on_report
        self.should_exit = asyncio.Event()  # finish the pass in hand, then stop
        self.force_exit = asyncio.Event()  # stop now, mid-pass

    def handle_exit(self) -> None:
        """First call: stop after the pass in hand. Second call: stop now.

        A pass stopped mid-way loses nothing: its claims and offsets stay in Redis and
        the next drainer repairs and finishes them.
        """
        if self.should_exit.is_set():
            self.force_exit.set()
        self.should_exit.set()

    async def serve(self, *, install_signals: bool = True) -> None:
        """Drain every ``interval_s`` until told to stop; errors of a pass are reported
        to ``on_report`` and retried (see :meth:`Drainer.run`)."""
        with self._signals(install_signals):
            run = asyncio.create_task(
                self.drainer.run(self.should_exit, self.interval_s, self.on_report)
            )
            forced = asyncio.create_task(self.force_exit.wait())
            try:
                await asyncio.wait({run, forced}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(forced)
                # cancelled from outside, or a second signal: stop the pass now
                await cancel_and_wait(run)

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install:
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit)
        try:
            yield
        finally:
            for sig in HANDLED_SIGNALS:
                loop.remove_signal_handler(sig)


async def run(settings: Settings, on_report: OnReport | None = None) -> None:
    """``logpipe drain`` without ``--once``: a drainer on its own Redis client, looping
    until SIGINT/SIGTERM (see :class:`DrainLoop`)."""
    async with Buffer.connect(settings.redis) as buffer:
        # a process of its own: the collector paused during each pass (see gc_paused)
        drainer = Drainer(buffer, settings.drainer, pause_gc=True)
        await DrainLoop(drainer, settings.drainer.interval_seconds, on_report).serve()


async def drain_once(settings: Settings, progress: Progress | None = None) -> DrainReport:
    """``logpipe drain --once``: one pass (see :meth:`Drainer.drain_once`) on its own client."""
    async with Buffer.connect(settings.redis) as buffer:
        drainer = Drainer(buffer, settings.drainer, pause_gc=True)  # see gc_paused
        return await drainer.drain_once(progress=progress)


@contextlib.contextmanager
def serve_metrics(host: str, port: int | None) -> Iterator[OnReport]:
    """Serve a :class:`~logpipe_cli.metrics.DrainerMetrics` on ``host:port`` (if a port
    is given) while inside; yields the function that feeds it each report."""
    if port is None:
        yield lambda report: None
        return
    drainer_metrics = metrics.DrainerMetrics()
    try:
        server, thread = start_http_server(port, addr=host, registry=drainer_metrics.registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror or exc}") from None
    try:
        yield lambda r: drainer_metrics.observe(r.ok, r.events, r.bytes, r.seconds)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
