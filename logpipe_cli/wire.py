"""Requests the HTTP protocol serves below ASGI: what a route must offer for it
(:class:`WireDoor`) and what stands for such a request while it is in progress
(:class:`WireCycle`). The protocol is :mod:`logpipe_cli.http_guard`'s; the one door is
:class:`logpipe_cli.fastpath.PostDoor` (``POST /log`` and ``POST /logs``)."""

from __future__ import annotations

from typing import Any

from logpipe_cli.answers import Answer


class WireDoor:
    """Routes the protocol serves below ASGI (``POST /log`` and ``POST /logs``: see
    :class:`logpipe_cli.fastpath.PostDoor`), found as the ``__self__`` of the app's ASGI
    handler. uvicorn's way costs per request a scope dict (and a copy of the app state),
    a request cycle with an event, the proxy-headers layer, Litestar's call and the
    ASGI messages (issue 12's profile: about half the API's CPU per ``POST /log``)."""

    def admit(self, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
        """What :meth:`serve` needs, or ``None``: the ASGI app answers the request."""
        raise NotImplementedError

    async def serve(self, admitted: Any, body: bytes, client: str | None) -> Answer:
        """The answer to an admitted request whose whole ``body`` is in."""
        raise NotImplementedError

    def count(self, path: str, status: int, start: float) -> None:
        """The request in the API's metrics, with its ``status`` (499: the client left)
        and the time since ``start`` (``time.perf_counter()`` at its last header byte)."""
        raise NotImplementedError


class _Event:
    """What uvicorn asks of a cycle's ``message_event``: nothing waits on this one."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _Event()


class WireCycle:
    """A request served by a :class:`WireDoor`, in the protocol's ``cycle`` slot, where
    uvicorn (pipelining, shutdown, a lost connection) and the guard look for the request
    in progress: the attributes they read and set."""

    __slots__ = (
        "admitted", "body", "disconnected", "door", "keep_alive", "path", "response_complete",
        "response_started", "start",
    )  # fmt: skip
    message_event = _NO_EVENT
    more_body = True

    def __init__(
        self, door: WireDoor, path: str, admitted: Any, keep_alive: bool, start: float
    ) -> None:
        self.door = door
        self.path = path
        self.admitted = admitted
        self.keep_alive = keep_alive
        self.start = start
        self.body = bytearray()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
