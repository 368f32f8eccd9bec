"""``enfold serve``: an HTTP server over one :class:`InferenceSession`, with dynamic batching.

    serve("exported/restorer-k2.onnx", port=8000)

Endpoints (multipart uploads in field ``file``): ``POST /v1/classify``, ``POST /v1/energy``,
``POST /v1/restore`` (a PNG back), plus ``GET /healthz``, ``GET /v1/metadata`` and
``GET /v1/stats``. Requests for one target that arrive within ``max_wait_ms`` of each other are
run as one batch by a :class:`MicroBatcher`; every batched response says the batch size it was
computed in (header ``X-Batch-Size``). Decoding, corruption and PNG encoding run in worker
threads so the event loop keeps accepting requests while the model runs.

The endpoints are the methods of :class:`V1Endpoints`; :func:`create_app` builds the app and
its middlewares and routes each endpoint to its method (:func:`_bind_v1`).

Note: this module deliberately has no ``from __future__ import annotations``: FastAPI reads the
route bindings' signatures (in :func:`_bind_v1`) at runtime.
"""

import asyncio
import json
import logging
import math
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from enfold.errors import EnfoldError, LimitError
from enfold.runtime.batching import MicroBatcher
from enfold.runtime.budget import DEFAULT_BUDGET, WorkBudget
from enfold.runtime.connections import (
    AmbiguousFraming,
    ConnectionLimits,
    fit_file_limit,
    listen_again,
    protocol_class,
    quiet_accept_errors,
)
from enfold.runtime.guard import RequestGuard
from enfold.runtime.images import decode_image, decode_view, encode_png
from enfold.runtime.oip import MAX_JSON_DEPTH, oip_router
from enfold.runtime.outputs import NonFiniteOutputError, check_finite
from enfold.runtime.page import page_router
from enfold.runtime.repository import ModelRepository
from enfold.runtime.repository_app import RepositoryApp
from enfold.runtime.restore import (
    Restoration,
    check_enlarged,
    check_restore_options,
    restore_image,
)
from enfold.runtime.session import TARGET_METHODS, InferenceSession
from enfold.runtime.upload_limit import UploadLimit, too_large_message

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_EXTRA_HINT = ("enfold serve needs fastapi, uvicorn and python-multipart: "
                    "pip install 'enfold[serve]'")
# Endpoint -> the session target that computes it; each endpoint is named for the session method
# it calls. The encoder's features are not served.
ENDPOINT_TARGETS = {method: target for target, method in TARGET_METHODS.items()
                    if target != "encoder"}
# Status of an upload over a work limit: too large, or a shape the server will not tile.
LIMIT_STATUS = {"max_pixels": 413, "max_tiles": 413, "max_aspect": 422}
# Images decoded at once: bounds the memory of concurrent large uploads (each up to max_pixels).
DECODE_SLOTS = 2
# Largest seed a form accepts (seeds are hashed by numpy's SeedSequence, which wants >= 0).
MAX_SEED = 2**63 - 1

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


def _finish_restore(rest: "Restoration") -> tuple[bytes, dict[str, str]]:
    """Encode a restoration (:func:`enfold.runtime.restore.restore_image`, the function
    ``enfold restore`` and the Python API use, so all give the same pixels) as PNG bytes, and
    the response headers that describe it: PSNR for simulated corruptions, the noise level
    and where it came from for noise-level restorers."""
    headers = {"X-Task": str(rest.task)}
    for key, value in rest.psnr().items():
        headers["X-PSNR-" + key.split("_")[1].title()] = f"{value:.3f}"
    if rest.sigma is not None:
        headers["X-Sigma"] = f"{rest.sigma:.5f}"
        headers["X-Sigma-Source"] = str(rest.sigma_source)
    if rest.sigma_passes is not None:
        headers["X-Sigma-Passes"] = ",".join(f"{s:.5f}" for s in rest.sigma_passes)
    return encode_png(rest.restored), headers


class V1Endpoints:
    """The ``/v1`` endpoints (and ``/healthz``) over one session and its batchers: one method
    per endpoint, each checking its request, running it and shaping the answer. The FastAPI
    routes that call them are thin bindings (:func:`_bind_v1`)."""

    def __init__(self, session: InferenceSession, batchers: dict[str, MicroBatcher],
                 decode_slots: asyncio.Semaphore, *, max_batch: int, max_wait_ms: float,
                 max_upload_bytes: int, budget: WorkBudget, request_timeout_s: float | None,
                 max_json_depth: int, max_json_elements: int | None,
                 connections: ConnectionLimits | None) -> None:
        self.session = session
        self.batchers = batchers
        self.decode_slots = decode_slots  # shared with /v2: bounds decoding memory
        self.meta = session.metadata
        self.size = session.img_size
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self.max_upload_bytes = max_upload_bytes
        self.budget = budget
        self.request_timeout_s = request_timeout_s
        self.max_json_depth, self.max_json_elements = max_json_depth, max_json_elements
        self.connections = connections

    # ------------------------------------------------------------------------- helpers

    def batcher_for(self, endpoint: str) -> MicroBatcher:
        """The endpoint's batcher, or a 404 naming the artifact that would serve it."""
        if endpoint not in self.batchers:
            need = ENDPOINT_TARGETS[endpoint]
            how = ("a fine-tuned classifier (enfold export --target classifier)"
                   if need == "classifier" else
                   f"an {need} artifact" if need[0] in "aeiou" else f"a {need} artifact")
            if need != "classifier":
                how += f" (enfold export --target {need}) or a pretrain checkpoint"
            raise _http_error(404, f"this model serves {', '.join(self.session.targets)}; "
                                   f"/v1/{endpoint} needs {how}")
        return self.batchers[endpoint]

    async def read_upload(self, file: Any) -> bytes:
        """The upload's bytes, or a 413 when it is over the upload limit."""
        data = await file.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise _http_error(413, too_large_message(self.max_upload_bytes))
        return data

    async def decode(self, fn: Any, *args: Any) -> torch.Tensor:
        """``fn(*args)`` in a worker thread holding a decode slot: 413 or 422 over the work
        budget, 415 when it is not an image."""
        try:
            async with self.decode_slots:
                return await asyncio.to_thread(fn, *args)
        except LimitError as exc:
            raise _limit_error(exc) from exc
        except EnfoldError as exc:
            raise _http_error(415, str(exc)) from exc

    async def read_image(self, file: Any, view: bool) -> torch.Tensor:
        """The upload as the model's view ``(C, S, S)`` (``view``) or the whole ``(C, H, W)``
        image in [0, 1]: 413 or 422 over the work budget (checked from the header), 400 or 415
        when it is not an image."""
        data = await self.read_upload(file)
        name = Path(file.filename or "upload").name[:200] or "upload"
        if not data:
            raise _http_error(400, f"{name} is empty: upload an image file in field 'file'")
        if view:
            return await self.decode(decode_view, data, self.meta, name, self.budget)
        return await self.decode(decode_image, data, self.session.in_chans, name, self.budget,
                                 self.size)

    async def model_batch(self, file: Any) -> torch.Tensor:
        """The upload as a batch of one model view."""
        return (await self.read_image(file, view=True))[None]

    # ------------------------------------------------------------------------- endpoints

    async def healthz(self) -> dict[str, str]:
        """``GET /healthz``."""
        return {"status": "ok"}

    async def metadata(self) -> dict[str, Any]:
        """``GET /v1/metadata``: the model, its endpoints, the batching and every limit."""
        # the checkpoint's path on this machine is not the client's business; its hash stays
        public = {k: v for k, v in self.meta.to_dict().items() if k != "checkpoint"}
        budget, connections = self.budget, self.connections
        return {**_json_safe(public), "backend": self.session.describe(),
                "targets": self.session.targets,
                "endpoints": [f"/v1/{e}" for e in self.batchers],
                "batching": {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms},
                "max_upload_bytes": self.max_upload_bytes,
                "limits": {"max_pixels": budget.max_pixels, "max_aspect": budget.max_aspect,
                           "max_tiles": budget.max_tiles, "decode_slots": DECODE_SLOTS,
                           "request_timeout_s": self.request_timeout_s,
                           "max_json_depth": self.max_json_depth,
                           "max_json_elements": self.max_json_elements,
                           **({"max_connections": connections.max_connections,
                               "header_timeout_s": connections.header_timeout_s,
                               "keep_alive_s": connections.keep_alive_s}
                              if connections is not None else {})}}

    async def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``: every batcher's counters."""
        return {endpoint: batcher.stats() for endpoint, batcher in self.batchers.items()}

    async def classify(self, file: Any, top_k: int) -> Any:
        """``POST /v1/classify``: the top ``top_k`` labels and their scores."""
        from fastapi.responses import JSONResponse

        batcher = self.batcher_for("classify")
        out = await batcher.submit(await self.model_batch(file))
        ranked = self.session.top_k(out.rows, top_k)[0]
        return JSONResponse({"label": ranked[0][0],
                             "top_k": [{"label": label, "score": score}
                                       for label, score in ranked]},
                            headers={"X-Batch-Size": str(out.batch_size)})

    async def energy(self, file: Any) -> Any:
        """``POST /v1/energy``: the upload's energy."""
        from fastapi.responses import JSONResponse

        batcher = self.batcher_for("energy")
        out = await batcher.submit(await self.model_batch(file))
        return JSONResponse({"energy": float(out.rows[0])},
                            headers={"X-Batch-Size": str(out.batch_size)})

    async def restore(self, file: Any, task: str | None, sigma: float | None,
                      scale: int | None, mask: Any, simulate: bool, seed: int,
                      keep_known: bool, passes: int | None = None) -> Any:
        """``POST /v1/restore``: the restored image as a PNG, described in its headers."""
        from fastapi.responses import Response

        batcher = self.batcher_for("restore")
        if not task and not self.meta.task:
            raise _http_error(422, "this artifact names no default task: pass the form "
                                   "field 'task'")
        try:  # checked before the upload is decoded: a typo costs no CPU
            name = check_restore_options(self.session, task, simulate, sigma, scale,
                                         mask is not None, passes)
        except EnfoldError as exc:
            raise _http_error(422, str(exc)) from exc
        img = await self.read_image(file, view=False)
        if scale:
            try:
                check_enlarged(self.budget, self.session, img, scale, file.filename or "upload")
            except LimitError as exc:
                raise _limit_error(exc) from exc
        holes = None
        if mask is not None:
            data = await self.read_upload(mask)
            holes = await self.decode(decode_image, data, 1, "the mask", self.budget)
        rest, batch_size = await self.run_restore(
            batcher, img, name, seed, simulate, keep_known, sigma=sigma, scale=scale,
            mask=holes, passes=passes)
        png, headers = await asyncio.to_thread(_finish_restore, rest)
        headers["X-Batch-Size"] = str(batch_size)
        return Response(png, media_type="image/png", headers=headers)

    async def run_restore(self, batcher: MicroBatcher, img: torch.Tensor, name: str,
                          *args: Any, **options: Any) -> tuple[Restoration, int]:
        """:func:`restore_image` in a worker thread, and the largest batch its tiles ran in.
        Plain restorers share the micro-batcher with other requests; those with sigma or mask
        inputs run directly. When the request is cancelled the remaining tiles are skipped."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        pending: list[Any] = []
        sizes = [0]

        def run(tiles: torch.Tensor, **extra: Any) -> torch.Tensor:
            """One batch of tiles from the worker thread."""
            if stop.is_set():
                raise asyncio.CancelledError
            if extra:
                sizes[0] = max(sizes[0], tiles.shape[0])
                return self.session.restore(tiles, **extra)
            fut = asyncio.run_coroutine_threadsafe(batcher.submit(tiles), loop)
            pending[:] = [fut]
            out = fut.result()
            sizes[0] = max(sizes[0], out.batch_size)
            return out.rows

        try:
            rest = await asyncio.to_thread(restore_image, self.session, img, name, *args,
                                           **options, run=run)
        except NonFiniteOutputError:
            raise  # the model's fault, not the request's: the app answers 500
        except EnfoldError as exc:  # e.g. a mask of another size than the image
            raise _http_error(422, str(exc)) from exc
        except BaseException:
            stop.set()  # the client left or the request timed out: skip the remaining tiles
            for fut in pending:
                fut.cancel()
            raise
        return rest, sizes[0]


def _http_error(status: int, detail: str) -> Exception:
    """FastAPI's HTTPException (imported on use: FastAPI is an optional extra)."""
    from fastapi import HTTPException

    return HTTPException(status, detail)


def _limit_error(exc: LimitError) -> Exception:
    """The HTTP error for an upload over a work limit (:data:`LIMIT_STATUS`)."""
    return _http_error(LIMIT_STATUS.get(exc.limit, 413), str(exc))


def _bind_v1(app: "FastAPI", v1: V1Endpoints) -> None:
    """Route ``/healthz`` and ``/v1/...`` to ``v1``'s methods. The upload endpoints get thin
    bindings: FastAPI reads their form fields from these signatures."""
    from fastapi import File, Form, UploadFile
    from fastapi.responses import JSONResponse, Response

    app.add_api_route("/healthz", v1.healthz, methods=["GET"])
    app.add_api_route("/v1/metadata", v1.metadata, methods=["GET"])
    app.add_api_route("/v1/stats", v1.stats, methods=["GET"])

    @app.post("/v1/classify")
    async def classify(file: UploadFile = File(...), top_k: int = Form(5, ge=1)
                       ) -> JSONResponse:
        return await v1.classify(file, top_k)

    @app.post("/v1/energy")
    async def energy(file: UploadFile = File(...)) -> JSONResponse:
        return await v1.energy(file)

    @app.post("/v1/restore")
    async def restore(file: UploadFile = File(...), task: str | None = Form(None),
                      sigma: float | None = Form(None), scale: int | None = Form(None),
                      mask: UploadFile | None = File(None), simulate: bool = Form(False),
                      seed: int = Form(0, ge=0, le=MAX_SEED), keep_known: bool = Form(True),
                      degraded: bool = Form(False), passes: int | None = Form(None)
                      ) -> Response:
        # ``degraded`` is accepted and ignored, for old clients: uploads are degraded by default
        return await v1.restore(file, task, sigma, scale, mask, simulate, seed, keep_known,
                                passes)


def _add_error_handlers(app: "FastAPI") -> None:
    """A 500 that says why for a non-finite output and for any other failure."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.exception_handler(NonFiniteOutputError)
    async def non_finite(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this response; the server keeps running.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=500)


def create_app(session: InferenceSession, max_batch: int = 16, max_wait_ms: float = 5.0,
               max_upload_bytes: int = 10 * 2**20, budget: WorkBudget = DEFAULT_BUDGET,
               request_timeout_s: float | None = None, max_json_depth: int = MAX_JSON_DEPTH,
               max_json_elements: int | None = None,
               connections: ConnectionLimits | None = None, name: str | None = None
               ) -> "FastAPI":
    """The FastAPI app serving ``session``: one :class:`MicroBatcher` per served target.

    Every upload is checked against ``budget`` from its header before it is decoded (413 or
    422 naming the limit); a request still running after ``request_timeout_s`` gets a 504 and
    one whose client disconnected is cancelled (:class:`RequestGuard`). Open Inference Protocol
    bodies are checked against ``max_json_depth`` and ``max_json_elements`` (default: the
    model's largest batch) before they are parsed. An output with NaN or infinity is a 500 that
    says so. ``connections`` (applied by :func:`serve`) is only reported in the metadata.
    ``name``: the model's name in a server of several (its Open Inference Protocol models are
    named after it, :func:`enfold.runtime.oip.build_models`).
    """
    fastapi = _import_fastapi()
    from contextlib import asynccontextmanager

    if max_upload_bytes < 1:
        raise EnfoldError(f"the upload limit must be positive, got {max_upload_bytes} bytes")
    def finite(target: str) -> Any:
        return lambda rows: check_finite(rows, target)

    batchers = {endpoint: MicroBatcher(getattr(session, TARGET_METHODS[target]), max_batch,
                                       max_wait_ms, name=endpoint, check=finite(target))
                for endpoint, target in ENDPOINT_TARGETS.items() if target in session.targets}
    # Images decoded and JSON bodies parsed at once, /v1 and /v2 together: bounds their memory.
    decode_slots = asyncio.Semaphore(DECODE_SLOTS)
    # the Open Inference Protocol (/v2/...) beside the /v1 endpoints: runtime/oip.py
    oip, oip_batchers = oip_router(session, max_batch, max_wait_ms, decode_slots,
                                   max_json_depth, max_json_elements, prefix=name)
    v1 = V1Endpoints(session, batchers, decode_slots, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, max_upload_bytes=max_upload_bytes, budget=budget,
                     request_timeout_s=request_timeout_s, max_json_depth=max_json_depth,
                     max_json_elements=max_json_elements, connections=connections)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        for batcher in [*batchers.values(), *oip_batchers]:
            await batcher.stop()

    app = fastapi.FastAPI(title="enfold", lifespan=lifespan,
                          description=f"enfold serve: {session.describe()}")
    app.include_router(oip)
    app.include_router(page_router())  # GET /: a page to try the model (runtime/page.py)
    app.state.oip_models = oip.models  # type: ignore[attr-defined]
    app.state.endpoints = list(batchers)
    app.add_middleware(UploadLimit, max_upload_bytes=max_upload_bytes)
    app.add_middleware(RequestGuard, timeout_s=request_timeout_s)  # wraps the rest
    app.add_middleware(AmbiguousFraming)  # outermost: refused before anything reads the body
    _add_error_handlers(app)
    _bind_v1(app, v1)
    return app


def create_repository_app(repo: ModelRepository, **app_options: Any) -> RepositoryApp:
    """One :func:`create_app` per model of ``repo`` (each with ``app_options``: limits,
    batching; each its own batchers) behind a :class:`RepositoryApp`. With one model its
    protocol models keep their own names; with several each is named after its model."""
    several = len(repo) > 1
    apps: dict[str, Any] = {}
    oip_names: dict[str, str] = {}
    for model in repo:
        app = create_app(model.session, name=model.name if several else None, **app_options)
        apps[model.name] = app
        for oip in app.state.oip_models:
            if oip in oip_names:  # a model named like another's NAME-ENTRY
                raise EnfoldError(f"models {oip_names[oip]!r} and {model.name!r} both give an "
                                  f"Open Inference Protocol model {oip!r}: rename one "
                                  "(--model NAME=PATH)")
            oip_names[oip] = model.name
    return RepositoryApp(repo, apps, oip_names)


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


def serve(model: str | Path | Sequence[str | Path], backend: str = "auto",
          device: str | None = None,
          provider: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          max_batch: int = 16, max_wait_ms: float = 5.0, max_upload_mb: float = 10.0,
          budget: WorkBudget = DEFAULT_BUDGET, request_timeout_s: float | None = 30.0,
          drain_s: float = 5.0, connections: ConnectionLimits = ConnectionLimits(),
          max_json_depth: int = MAX_JSON_DEPTH, max_json_elements: int | None = None) -> None:
    """Load ``model`` (a path, ``NAME=PATH``, or a list of them: several models side by side,
    :mod:`enfold.runtime.repository_app`) and serve it over HTTP until interrupted (Ctrl-C or
    SIGTERM). Every model gets its own batchers and the limits below.

    ``max_batch`` images per model call at most, gathered for up to ``max_wait_ms`` after the
    first waiting request; uploads above ``max_upload_mb`` MiB are refused with 413, images over
    ``budget`` with 413/422, requests running longer than ``request_timeout_s`` with 504, JSON
    bodies over ``max_json_depth`` / ``max_json_elements`` with 400/413. ``connections``: at
    most ``max_connections`` open (lowered to fit the process's file limit), each closed when it
    has no request running for ``header_timeout_s`` seconds (:mod:`enfold.runtime.connections`).
    On SIGTERM the server stops accepting, lets running requests finish for up to ``drain_s``
    seconds, answers the rest 503 and exits.
    """
    _import_fastapi()
    try:
        import uvicorn
    except ImportError as exc:
        raise EnfoldError(SERVE_EXTRA_HINT) from exc
    if max_batch < 1:
        raise EnfoldError(f"--max-batch must be at least 1, got {max_batch}")
    if not (math.isfinite(max_wait_ms) and max_wait_ms >= 0):
        raise EnfoldError(f"--max-wait-ms must be a number >= 0, got {max_wait_ms}")
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise EnfoldError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
    if request_timeout_s is not None and not (math.isfinite(request_timeout_s)
                                              and request_timeout_s > 0):
        raise EnfoldError(f"--request-timeout must be a positive number of seconds, got "
                          f"{request_timeout_s}")
    if not (math.isfinite(drain_s) and drain_s >= 0):
        raise EnfoldError(f"--drain must be 0 or more seconds, got {drain_s}")
    if not 0 <= port <= 65535:
        raise EnfoldError(f"--port must be between 0 and 65535, got {port}")
    if max_json_depth < 1:
        raise EnfoldError(f"--max-json-depth must be at least 1, got {max_json_depth}")
    if max_json_elements is not None and max_json_elements < 1:
        raise EnfoldError(f"--max-json-elements must be at least 1, got {max_json_elements}")
    specs = [model] if isinstance(model, (str, Path)) else list(model)
    repo = ModelRepository.from_specs(specs, backend=backend, device=device, provider=provider)
    cap, backlog = fit_file_limit(connections.max_connections)
    if cap < connections.max_connections:
        print(f"enfold serve: at most {cap} connections (not {connections.max_connections}): "
              "the process's file limit (ulimit -n) leaves room for no more", flush=True)
        connections = ConnectionLimits(cap, connections.header_timeout_s,
                                       connections.keep_alive_s)
    app = AmbiguousFraming(create_repository_app(  # its own listings are refused alike
        repo, max_batch=max_batch, max_wait_ms=max_wait_ms,
        max_upload_bytes=max(1, int(max_upload_mb * 2**20)), budget=budget,
        request_timeout_s=request_timeout_s, max_json_depth=max_json_depth,
        max_json_elements=max_json_elements, connections=connections))
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    for served in repo:
        session = served.session
        where = "/v1" if len(repo) == 1 else f"/v1/models/{served.name}"
        endpoints = ", ".join(f"{where}/{e}" for e, t in ENDPOINT_TARGETS.items()
                              if t in session.targets)
        print(f"enfold serve: {session.describe()} from {served.path} at http://{shown}:{bound} "
              f"as {served.name!r} ({endpoints}; Open Inference Protocol at /v2; batches of up "
              f"to {max_batch}, {max_wait_ms:g} ms wait)", flush=True)
    # timeout_graceful_shutdown: uvicorn's default waits for every running request, forever
    config = uvicorn.Config(app, host=host, port=bound, log_level="warning",
                            timeout_graceful_shutdown=drain_s, http=protocol_class(connections),
                            timeout_keep_alive=connections.keep_alive_s,  # type: ignore[arg-type]
                            backlog=backlog)
    _uvicorn_server()(config).run(sockets=[sock])


def _uvicorn_server() -> type:
    """uvicorn.Server with :func:`quiet_accept_errors` (made on first use: uvicorn is lazy)."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with one warning line, not a traceback, when accept runs out of
        files (asyncio retries it a second later), and a long listen queue."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            asyncio.get_running_loop().set_exception_handler(quiet_accept_errors)
            await super().startup(sockets=sockets)
            listen_again(sockets or [])

    return Server
