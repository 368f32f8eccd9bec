"""ASGI middleware that bounds each request's life: a deadline, and cancellation when the client
has gone.

Without it a request keeps the server busy after its client gave up (uvicorn does not cancel an
endpoint on disconnect), and one slow request can hold a worker forever. Cancelling the endpoint
cancels its queued model work too (the micro-batcher skips cancelled rows); a decode or model
call already running in a thread finishes, bounded by the work budget, and its result is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger("enfold.serve")


SHUTDOWN_MESSAGE = ("the server is shutting down and this request did not finish within its "
                    "drain time (--drain); retry it against a running server")


def deadline_message(seconds: float) -> str:
    return (f"the request took longer than the server's deadline of {seconds:g} s "
            "(--request-timeout); retry later or send a smaller image")


class RequestGuard:
    """Per-request deadline (``504`` when it passes before a response started), cancellation
    of requests whose client disconnected, and a ``503`` for a request the server cancels as it
    shuts down (past ``--drain``); ``timeout_s`` None means no deadline."""

    def __init__(self, app: Any, timeout_s: float | None = None) -> None:
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"the request deadline must be positive, got {timeout_s}")
        self.app = app
        self.timeout_s = timeout_s
        self.cancelled = {"disconnected": 0, "deadline": 0, "shutdown": 0}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"body_done": asyncio.Event(), "started": False, "finished": False,
                 "shut": False}

        async def app_receive() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                state["body_done"].set()
            return message

        async def app_send(message: dict) -> None:
            if state["shut"]:  # the 503 of a shutdown went out instead
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["finished"] = True
            await send(message)

        async def client_gone() -> None:
            # Once the body is read, the only message left for this request is the disconnect.
            await state["body_done"].wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        task = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        watcher = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({task, watcher}, timeout=self.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is stopping, past its drain time
            task.cancel()
            watcher.cancel()
            await self._shut_down(task, scope, send, state)
            return
        if task in done:
            watcher.cancel()
            task.result()  # re-raise what the app raised
            return
        if watcher in done and state["finished"]:
            await task  # the response went out: the disconnect is the normal end
            return
        task.cancel()
        watcher.cancel()
        why = "disconnected" if watcher in done else "deadline"
        self.cancelled[why] += 1
        log.warning("%s %s cancelled: %s", scope.get("method"), scope.get("path"),
                    "the client went away" if why == "disconnected" else
                    f"past the {self.timeout_s:g} s deadline")
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        if why == "deadline" and not state["started"]:
            assert self.timeout_s is not None
            body = json.dumps({"detail": deadline_message(self.timeout_s)}).encode()
            await send({"type": "http.response.start", "status": 504,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

    async def _shut_down(self, task: asyncio.Future, scope: dict, send: Callable,
                         state: dict) -> None:
        """The server cancelled this request as it stops: answer 503 (JSON) at once when no
        response has started, and finish normally (no traceback, no bare 500). The endpoint
        unwinds on its own; nothing here waits, as the event loop is about to stop."""
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # the cancellation is handled here
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: moot
        self.cancelled["shutdown"] += 1
        if state["started"]:
            return
        state["shut"] = True
        log.warning("%s %s cancelled: the server is shutting down", scope.get("method"),
                    scope.get("path"))
        body = json.dumps({"detail": SHUTDOWN_MESSAGE}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
