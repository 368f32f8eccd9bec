"""``enfold serve``: an HTTP server over one :class:`InferenceSession`, with dynamic batching.

    serve("exported/restorer-k2.onnx", port=8000)

Endpoints (multipart uploads in field ``file``): ``POST /v1/classify``, ``POST /v1/energy``,
``POST /v1/restore`` (a PNG back), plus ``GET /healthz``, ``GET /v1/metadata`` and
``GET /v1/stats``. Requests for one target that arrive within ``max_wait_ms`` of each other are
run as one batch by a :class:`MicroBatcher`; every batched response says the batch size it was
computed in (header ``X-Batch-Size``). Decoding, corruption and PNG encoding run in worker
threads so the event loop keeps accepting requests while the model runs.

Note: this module deliberately has no ``from __future__ import annotations``: FastAPI reads the
endpoint signatures (closures inside :func:`create_app`) at runtime.
"""

import asyncio
import json
import logging
import math
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from enfold.errors import EnfoldError
from enfold.runtime.images import decode_image, encode_png, model_view
from enfold.runtime.restore import assemble, corrupt_tiles, task_corruption
from enfold.runtime.session import InferenceSession, load

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_EXTRA_HINT = ("enfold serve needs fastapi, uvicorn and python-multipart: "
                    "pip install 'enfold[serve]'")
# Endpoint -> the session target that computes it.
ENDPOINT_TARGETS = {"classify": "classifier", "restore": "restorer", "energy": "energy"}
# Room for the multipart boundaries, part headers and small form fields around the file itself,
# so a file just under the limit is not refused for its envelope.
MULTIPART_SLACK = 16 * 1024

log = logging.getLogger("enfold.serve")


# ----------------------------------------------------------------------------- batching


@dataclass
class Batched:
    """A request's output rows and the size of the batch they were computed in.

    A request split into several chunks (more rows than ``max_batch``) reports the largest.
    """

    rows: torch.Tensor
    batch_size: int


@dataclass
class _Item:
    x: torch.Tensor
    future: asyncio.Future
    enqueued: float


@dataclass
class _Counters:
    requests: int = 0
    batches: int = 0
    images: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches


class MicroBatcher:
    """Groups concurrent requests into single calls of a synchronous batch function.

    ``await submit(x)`` queues ``x`` (``(N, C, H, W)``) and returns its rows of ``fn``'s output.
    One worker task takes the queue head, waits up to ``max_wait_ms`` after that item arrived
    for more rows (or until ``max_batch`` rows are queued), concatenates them and runs ``fn`` in
    a thread. Requests with more than ``max_batch`` rows are split into chunks that batch like
    any other. An exception from ``fn`` is delivered to every request of that batch only.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 16,
                 max_wait_ms: float = 5.0, name: str = "model") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.name = name
        self.counters = _Counters()
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    # -- public API
    async def submit(self, x: torch.Tensor) -> Batched:
        """Queue ``x`` ``(N, C, H, W)`` and wait for its ``N`` output rows."""
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"submit needs a batch of at least one row, got {tuple(x.shape)}")
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        futures = []
        for chunk in x.split(self.max_batch):
            fut = loop.create_future()
            self._queue.append(_Item(chunk, fut, loop.time()))
            self._queued_rows += chunk.shape[0]
            futures.append(fut)
        self.counters.requests += 1
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            results = await asyncio.gather(*futures)
        except BaseException:
            for fut in futures:  # chunks still queued are skipped by the worker
                fut.cancel()
            raise
        rows = results[0][0] if len(results) == 1 else torch.cat([r[0] for r in results])
        return Batched(rows, max(r[1] for r in results))

    def stats(self) -> dict[str, Any]:
        """Requests, batches, images, mean batch size and the batch-size histogram so far."""
        c = self.counters
        return {"requests": c.requests, "batches": c.batches, "images": c.images,
                "mean_batch_size": round(c.images / c.batches, 3) if c.batches else 0.0,
                "largest_batch": c.largest_batch, "failed_batches": c.failed_batches,
                "queued_images": self._queued_rows,
                "batch_sizes": {str(k): v for k, v in sorted(c.sizes.items())}}

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with a RuntimeError."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._queued_rows = 0

    # -- internals
    def _ensure_worker(self) -> None:
        # Started lazily so the queue, event and task belong to the loop that serves requests.
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"enfold-batcher-{self.name}")

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # The oldest request waits at most max_wait for company; requests that queued while
            # the previous batch ran are usually past that already and go at once.
            deadline = self._queue[0].enqueued + self.max_wait
            while self._queued_rows < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            items = self._take()
            if items:
                await self._run_batch(items)

    def _take(self) -> list[_Item]:
        """Pop queued items, oldest first, while they fit ``max_batch`` and share a shape."""
        items: list[_Item] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            n = item.x.shape[0]
            if item.future.done():  # its request was cancelled (client went away)
                self._queue.popleft()
                self._queued_rows -= n
                continue
            if items and (rows + n > self.max_batch or item.x.shape[1:] != items[0].x.shape[1:]):
                break
            self._queue.popleft()
            self._queued_rows -= n
            items.append(item)
            rows += n
        return items

    async def _run_batch(self, items: list[_Item]) -> None:
        sizes = [item.x.shape[0] for item in items]
        total = sum(sizes)
        try:
            batch = items[0].x if len(items) == 1 else torch.cat([item.x for item in items])
            out = await asyncio.to_thread(self.fn, batch)
            if len(out) != total:
                raise RuntimeError(f"{self.name}: a batch of {total} gave {len(out)} outputs")
        except Exception as exc:  # delivered to the waiting requests, never lost
            self.counters.failed_batches += 1
            log.error("%s batch of %d failed: %s: %s", self.name, total, type(exc).__name__, exc)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        c = self.counters
        c.batches += 1
        c.images += total
        c.largest_batch = max(c.largest_batch, total)
        c.sizes[total] = c.sizes.get(total, 0) + 1
        start = 0
        for item, n in zip(items, sizes, strict=True):
            if not item.future.done():
                item.future.set_result((out[start:start + n], total))
            start += n


# ----------------------------------------------------------------------------- the app


def _import_fastapi() -> Any:
    from importlib.util import find_spec

    try:
        import fastapi
    except ImportError as exc:
        raise EnfoldError(SERVE_EXTRA_HINT) from exc
    # python-multipart parses File and Form fields; its import name changed in 0.0.13
    if find_spec("python_multipart") is None and find_spec("multipart") is None:
        raise EnfoldError(SERVE_EXTRA_HINT)
    return fastapi


def _json_safe(value: Any) -> Any:
    """Metadata as plain JSON: non-finite floats become strings, unknown objects their str."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return json.loads(json.dumps(fix(value), default=str))


class _UploadLimit:
    """ASGI middleware: 413 for request bodies above the limit, before they are parsed.

    Refuses at once when ``Content-Length`` says too much, and counts the bytes actually
    received for bodies without one (chunked uploads). The endpoints check the file's own size.
    """

    def __init__(self, app: Any, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.message = _too_large_message(max_upload_bytes)

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
                    raise _BodyTooLarge
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
        except _BodyTooLarge:
            if not state["started"]:
                await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"detail": self.message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def _too_large_message(limit: int) -> str:
    return f"upload too large: the limit is {limit:,} bytes ({limit / 2**20:.2f} MiB)"


def _finish_restore(img: torch.Tensor, corrupted: torch.Tensor, restored: torch.Tensor,
                    weight: torch.Tensor | None, layout: tuple, original_hw: tuple[int, int],
                    keep_known: bool) -> tuple[bytes, dict[str, float]]:
    """Stitch the restored tiles, measure PSNR, and encode the result at the upload's size.

    The same steps as :func:`enfold.runtime.restore.restore_image` (``corrupt_tiles`` before
    the batcher, ``assemble`` after it), so the server and ``enfold restore`` give the same
    pixels."""
    result = assemble(img, corrupted, restored, weight, layout, keep_known)
    out = result.restored
    if tuple(out.shape[-2:]) != original_hw:  # fit_min_side upscaled a small upload: undo it
        out = torch.nn.functional.interpolate(out[None], size=original_hw, mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    return encode_png(out), result.psnr()


def create_app(session: InferenceSession, max_batch: int = 16, max_wait_ms: float = 5.0,
               max_upload_bytes: int = 10 * 2**20) -> "FastAPI":
    """The FastAPI app serving ``session``: one :class:`MicroBatcher` per served target."""
    fastapi = _import_fastapi()
    from contextlib import asynccontextmanager

    from fastapi import File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import JSONResponse, Response

    if max_upload_bytes < 1:
        raise EnfoldError(f"the upload limit must be positive, got {max_upload_bytes} bytes")
    method = {"classifier": "classify", "restorer": "restore", "energy": "energy"}
    batchers = {endpoint: MicroBatcher(getattr(session, method[target]), max_batch, max_wait_ms,
                                       name=endpoint)
                for endpoint, target in ENDPOINT_TARGETS.items() if target in session.targets}
    meta = session.metadata
    size = session.img_size

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        for batcher in batchers.values():
            await batcher.stop()

    app = fastapi.FastAPI(title="enfold", lifespan=lifespan,
                          description=f"enfold serve: {session.describe()}")
    app.add_middleware(_UploadLimit, max_body_bytes=max_upload_bytes + MULTIPART_SLACK,
                       max_upload_bytes=max_upload_bytes)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this response; the server keeps running.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=500)

    def batcher_for(endpoint: str) -> MicroBatcher:
        if endpoint not in batchers:
            need = ENDPOINT_TARGETS[endpoint]
            how = ("a fine-tuned classifier (enfold export --target classifier)"
                   if need == "classifier" else
                   f"an {need} artifact" if need[0] in "aeiou" else f"a {need} artifact")
            if need != "classifier":
                how += f" (enfold export --target {need}) or a pretrain checkpoint"
            raise HTTPException(404, f"this model serves {', '.join(session.targets)}; "
                                     f"/v1/{endpoint} needs {how}")
        return batchers[endpoint]

    async def read_image(file: UploadFile) -> torch.Tensor:
        """The upload as a ``(C, H, W)`` image in [0, 1]; 413, 400 or 415 when it is not one."""
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, _too_large_message(max_upload_bytes))
        name = file.filename or "upload"
        if not data:
            raise HTTPException(400, f"{name} is empty: upload an image file in field 'file'")
        try:
            return await asyncio.to_thread(decode_image, data, session.in_chans, name)
        except EnfoldError as exc:
            raise HTTPException(415, str(exc)) from exc

    async def model_batch(file: UploadFile) -> torch.Tensor:
        img = await read_image(file)
        return (await asyncio.to_thread(model_view, img, meta))[None]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/metadata")
    async def metadata() -> dict[str, Any]:
        # the checkpoint's path on this machine is not the client's business; its hash stays
        public = {k: v for k, v in meta.items() if k != "checkpoint"}
        return {**_json_safe(public), "backend": session.describe(), "targets": session.targets,
                "endpoints": [f"/v1/{e}" for e in batchers],
                "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
                "max_upload_bytes": max_upload_bytes}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return {endpoint: batcher.stats() for endpoint, batcher in batchers.items()}

    @app.post("/v1/classify")
    async def classify(file: UploadFile = File(...), top_k: int = Form(5, ge=1)
                       ) -> JSONResponse:
        batcher = batcher_for("classify")
        out = await batcher.submit(await model_batch(file))
        ranked = session.top_k(out.rows, top_k)[0]
        return JSONResponse({"label": ranked[0][0],
                             "top_k": [{"label": label, "score": score}
                                       for label, score in ranked]},
                            headers={"X-Batch-Size": str(out.batch_size)})

    @app.post("/v1/energy")
    async def energy(file: UploadFile = File(...)) -> JSONResponse:
        batcher = batcher_for("energy")
        out = await batcher.submit(await model_batch(file))
        return JSONResponse({"energy": float(out.rows[0])},
                            headers={"X-Batch-Size": str(out.batch_size)})

    @app.post("/v1/restore")
    async def restore(file: UploadFile = File(...), task: str | None = Form(None),
                      seed: int = Form(0), degraded: bool = Form(False),
                      keep_known: bool = Form(True)) -> Response:
        batcher = batcher_for("restore")
        corruption = None
        if not degraded:
            name = task or meta.get("task")
            if not name:
                raise HTTPException(422, "this artifact names no default task: pass the form "
                                         "field 'task', or degraded=true")
            try:  # checked before the upload is decoded: a typo costs no CPU
                corruption = task_corruption(meta, name)
            except EnfoldError as exc:
                raise HTTPException(422, str(exc)) from exc
        img = await read_image(file)
        clean, corrupted, weight, layout = await asyncio.to_thread(
            corrupt_tiles, img, size, corruption, seed)
        out = await batcher.submit(corrupted)
        png, psnr = await asyncio.to_thread(_finish_restore, clean, corrupted, out.rows,
                                            weight, layout, tuple(img.shape[-2:]), keep_known)
        headers = {"X-Batch-Size": str(out.batch_size)}
        if psnr:
            headers["X-PSNR-Input"] = f"{psnr['psnr_input']:.3f}"
            headers["X-PSNR-Restored"] = f"{psnr['psnr_restored']:.3f}"
        return Response(png, media_type="image/png", headers=headers)

    return app


# ----------------------------------------------------------------------------- serve


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket, or an EnfoldError that says why not (port taken, unknown host)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise EnfoldError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def serve(model: str | Path, backend: str = "auto", device: str | None = None,
          provider: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          max_batch: int = 16, max_wait_ms: float = 5.0, max_upload_mb: float = 10.0) -> None:
    """Load ``model`` and serve it over HTTP until interrupted (Ctrl-C or SIGTERM).

    ``max_batch`` images per model call at most, gathered for up to ``max_wait_ms`` after the
    first waiting request; uploads above ``max_upload_mb`` MiB are refused with 413.
    """
    _import_fastapi()
    try:
        import uvicorn
    except ImportError as exc:
        raise EnfoldError(SERVE_EXTRA_HINT) from exc
    if max_batch < 1:
        raise EnfoldError(f"--max-batch must be at least 1, got {max_batch}")
    if max_wait_ms < 0:
        raise EnfoldError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
    if max_upload_mb <= 0:
        raise EnfoldError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    session = load(model, backend=backend, device=device, provider=provider)
    app = create_app(session, max_batch=max_batch, max_wait_ms=max_wait_ms,
                     max_upload_bytes=int(max_upload_mb * 2**20))
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    endpoints = ", ".join(f"/v1/{e}" for e, t in ENDPOINT_TARGETS.items()
                          if t in session.targets)
    print(f"enfold serve: {session.describe()} from {model} at http://{shown}:{bound} "
          f"({endpoints}; batches of up to {max_batch}, {max_wait_ms:g} ms wait)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=bound, log_level="warning"))
    server.run(sockets=[sock])
