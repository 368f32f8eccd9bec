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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from enfold.errors import EnfoldError
from enfold.runtime.batching import MicroBatcher
from enfold.runtime.images import decode_image, encode_png, model_view
from enfold.runtime.restore import assemble, corrupt_tiles, task_corruption
from enfold.runtime.session import TARGET_METHODS, InferenceSession, load
from enfold.runtime.upload_limit import UploadLimit, too_large_message

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_EXTRA_HINT = ("enfold serve needs fastapi, uvicorn and python-multipart: "
                    "pip install 'enfold[serve]'")
# Endpoint -> the session target that computes it; each endpoint is named for the session method
# it calls. The encoder's features are not served.
ENDPOINT_TARGETS = {method: target for target, method in TARGET_METHODS.items()
                    if target != "encoder"}

log = logging.getLogger("enfold.serve")


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
    batchers = {endpoint: MicroBatcher(getattr(session, TARGET_METHODS[target]), max_batch,
                                       max_wait_ms, name=endpoint)
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
    app.add_middleware(UploadLimit, max_upload_bytes=max_upload_bytes)

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
            raise HTTPException(413, too_large_message(max_upload_bytes))
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
