"""Connection limits for ``enfold serve``: idle and slow connections closed, a cap on open ones,
and requests with ambiguous framing refused.

uvicorn closes a connection idle *between* requests after its keep-alive timeout, but one that
never sends a request, or sends its head a byte at a time, stays open forever (slowloris), and
nothing caps how many are open: 56 such sockets exhaust a process limited to 64 files, and normal
requests go unanswered. :func:`protocol_class` makes uvicorn's h11 protocol

* close a connection that has no request running for ``header_timeout_s`` seconds: the head
  of each request (the first, and every later one on a kept-alive connection) must be complete
  within that time after the connection opened or the previous response ended;
* keep at most ``max_connections`` open: when one more arrives, the connection that has waited
  longest without a request is closed to make room; when every connection has a request
  running, the newcomer gets a 503 and is closed.

:func:`fit_file_limit` fits the cap and the listen backlog under the process's file limit
(``RLIMIT_NOFILE``).
:class:`AmbiguousFraming` refuses a request that carries both ``Content-Length`` and
``Transfer-Encoding`` (the two framings disagree about where the body ends, so a second request
can be smuggled inside the first's body): 400, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enfold.errors import EnfoldError

log = logging.getLogger("enfold.serve")

# Files kept free beyond the connections: the model, logs, the accept that runs ahead of the
# cap, and whatever the backends open later.
FD_SPARE = 16
FD_SPARE_FRACTION = 0.1
BACKLOG = 2048  # uvicorn's default listen backlog
BURSTS = 3  # accept bursts that may run before closed connections free their files
WARN_EVERY_S = 10.0  # out-of-files warnings, at most one per this many seconds
CAP_MESSAGE = ("the server is at its connection limit (--max-connections) and every connection "
               "has a request running; retry shortly")


@dataclass(frozen=True)
class ConnectionLimits:
    """``enfold serve``'s connection limits; see the module docstring."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise EnfoldError(f"--max-connections must be at least 1, got {self.max_connections}")
        for option, value in (("--header-timeout", self.header_timeout_s),
                              ("--keep-alive", self.keep_alive_s)):
            if not (value == value and 0 < value < float("inf")):
                raise EnfoldError(f"{option} must be a positive number of seconds, got {value}")


def open_files() -> int:
    """Files this process has open now (Linux: /proc/self/fd; elsewhere /dev/fd)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def fit_file_limit(max_connections: int, backlog: int = BACKLOG) -> tuple[int, int]:
    """``(connections, accept burst)`` that fit under the process's soft ``RLIMIT_NOFILE``
    with the files already open and a spare; an EnfoldError when not even one connection fits.

    asyncio accepts up to its ``backlog`` connections in one go before any of them is counted
    against the cap, and a connection closed to make room frees its file only two loop turns
    later, so the cap leaves room for :data:`BURSTS` whole bursts: otherwise accept runs out
    of files, and asyncio stalls a second before it retries. (The kernel's listen queue, which
    costs no files, is set back to ``backlog`` once serving: :func:`listen_again`.)"""
    try:
        import resource
    except ImportError:  # not a Unix: no file limit to respect
        return max_connections, backlog
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections, backlog
    room = soft - open_files() - FD_SPARE - int(FD_SPARE_FRACTION * soft)
    if room < 2:
        raise EnfoldError(f"the process may open only {soft} files (ulimit -n) and uses "
                          f"{open_files()} already: no room for connections; raise ulimit -n")
    backlog = max(1, min(backlog, room // (2 * BURSTS)))
    return max(1, min(max_connections, room - BURSTS * backlog)), backlog


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the header timeout and the connection cap of ``limits``
    (pass it as ``uvicorn.Config(http=...)``); its ``dropped`` counts closed connections."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # every open connection of this server, and since when it has waited without a request
    waiting_since: dict[H11Protocol, float] = {}
    dropped = {"header_timeout": 0, "evicted": 0, "refused": 0}

    class LimitedH11Protocol(H11Protocol):
        """H11Protocol with a header timeout and a cap on open connections."""

        limits_applied = limits
        dropped_counts = dropped
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            waiting_since[self] = self.loop.time()
            if len(waiting_since) > limits.max_connections:
                idle = [c for c in waiting_since if c is not self and c.idle()]
                if not idle:
                    dropped["refused"] += 1
                    self._close(self._refuse)
                    return
                dropped["evicted"] += 1
                min(idle, key=waiting_since.__getitem__)._close()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            waiting_since.pop(self, None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            if self in waiting_since:
                waiting_since[self] = self.loop.time()
                self._arm()  # the next request's head must arrive in time too
            super().on_response_complete()

        def idle(self) -> bool:
            """No request running: waiting for (the rest of) a request head."""
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(limits.header_timeout_s, self._expire)

        def _expire(self) -> None:
            self._timer = None
            if self.idle() and not self.transport.is_closing():
                dropped["header_timeout"] += 1
                self._close()

        def _close(self, last_words: Callable[[], None] | None = None) -> None:
            # no longer counted against the cap from now on, though its file is freed only
            # when asyncio calls connection_lost
            waiting_since.pop(self, None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if last_words is not None:
                last_words()
            self.transport.close()

        def _refuse(self) -> None:
            body = json.dumps({"detail": CAP_MESSAGE}).encode()
            head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: " + str(len(body)).encode() +
                    b"\r\n\r\n")
            self.transport.write(head + body)

    return LimitedH11Protocol


def listen_again(sockets: list[Any], backlog: int = BACKLOG) -> None:
    """Give listening sockets a long kernel queue again: asyncio's ``listen`` call used the
    short accept burst of :func:`fit_file_limit`, and a short queue drops connection attempts
    (clients retry a second later) whenever a burst of them arrives."""
    for sock in sockets:
        sock.listen(backlog)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Event-loop exception handler: running out of files while accepting (asyncio retries a
    second later) is a warning line at most every :data:`WARN_EVERY_S` seconds, not a traceback
    per attempt; anything else as usual."""
    if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
        now = loop.time()
        if now - _last_warning.get(loop, -WARN_EVERY_S) >= WARN_EVERY_S:
            _last_warning[loop] = now
            log.warning("out of file descriptors while accepting connections (%s); asyncio "
                        "retries in a second (lower --max-connections or raise ulimit -n)",
                        context.get("exception"))
        return
    loop.default_exception_handler(context)


_last_warning: dict[asyncio.AbstractEventLoop, float] = {}


class AmbiguousFraming:
    """ASGI middleware: 400 and ``Connection: close`` for a request with both
    ``Content-Length`` and ``Transfer-Encoding``, before its body is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = json.dumps({"detail": "the request has both Content-Length and "
                                   "Transfer-Encoding: send one of them"}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
