"""Upload-size limit for ASGI apps: 413 before an oversized body is parsed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Room for the multipart boundaries, part headers and small form fields around the file itself,
# so a file just under the limit is not refused for its envelope.
MULTIPART_SLACK = 16 * 1024


class UploadLimit:
    """ASGI middleware: 413 for request bodies above the limit, before they are parsed.

    Refuses at once when ``Content-Length`` says too much, and counts the bytes actually
    received for bodies without one (chunked uploads). The endpoints check the file's own size.
    """

    def __init__(self, app: Any, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_upload_bytes + MULTIPART_SLACK
        self.message = too_large_message(max_upload_bytes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = False  # uvicorn refuses malformed lengths before we get here
            if too_big:
                await self._refuse(send)
                return
        state = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["exceeded"] = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: dict) -> None:
            # The inner app turns the parse failure into some error response; replace it.
            if state["exceeded"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not state["started"]:
                await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"detail": self.message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised inside the app's receive call once the body passes the limit."""


def too_large_message(limit: int) -> str:
    """The 413 message for an upload over ``limit`` bytes."""
    return f"upload too large: the limit is {limit:,} bytes ({limit / 2**20:.2f} MiB)"
