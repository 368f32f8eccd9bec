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


def deadline_message(seconds: float) -> str:
    return (f"the request took longer than the server's deadline of {seconds:g} s "
            "(--request-timeout); retry later or send a smaller image")


class RequestGuard:
    """Per-request deadline (``504`` when it passes before a response started) and cancellation
    of requests whose client disconnected; ``timeout_s`` None means no deadline."""

    def __init__(self, app: Any, timeout_s: float | None = None) -> None:
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"the request deadline must be positive, got {timeout_s}")
        self.app = app
        self.timeout_s = timeout_s
        self.cancelled = {"disconnected": 0, "deadline": 0}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"body_done": asyncio.Event(), "started": False, "finished": False}

        async def app_receive() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                state["body_done"].set()
            return message

        async def app_send(message: dict) -> None:
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
        except asyncio.CancelledError:  # the server is stopping: stop the endpoint too
            task.cancel()
            watcher.cancel()
            raise
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
