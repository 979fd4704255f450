"""Whether the API's address can be listened on, asked before anything starts: uvicorn
finds a taken port only once it runs, and says so in a log line of its own, not in the
one ``error: ...`` line every other refusal is."""

from __future__ import annotations

import socket

from logpipe_cli.errors import ListenError


def check_listen(host: str, port: int) -> None:
    """Raise :class:`ListenError` if ``host:port`` cannot be bound now (the port is taken,
    or the address is not this machine's). Bound as uvicorn binds it (IPv6 for a host
    with a colon, ``SO_REUSEADDR``), then let go at once: a port taken in between is
    still uvicorn's to report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
