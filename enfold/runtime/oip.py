"""The Open Inference Protocol (KServe v2, as spoken by Triton) beside ``enfold serve``'s own API.

    GET  /v2                                server metadata
    GET  /v2/health/live, /v2/health/ready  liveness, readiness
    GET  /v2/models/{name}[/versions/1]     inputs and outputs: names, datatypes, shapes
    GET  /v2/models/{name}/ready            readiness of one model
    GET  /v2/models/{name}/config           Triton's model configuration (JSON form)
    GET  /v2/models/{name}/stats            inference and execution counts
    POST /v2/models/{name}/infer            JSON tensors, or the binary tensor extension
    POST /v2/repository/index               the served models, all READY

Each served target is one model, named and shaped exactly as the Triton repository entry that
``enfold export --triton-repo`` writes for the same artifact (both come from
:func:`enfold.export.triton_repo.model_config`): the input is the artifact's own, images
normalised with the ``mean`` and ``std`` in the config's parameters, and the output is the
artifact's raw output (logits, features, energy, the restored image in the normalised space).
So one client works against ``enfold serve`` and against Triton alike. Requests are batched by
a :class:`MicroBatcher` per model. A malformed request gets ``{"error": "..."}`` and a 400
(404 for an unknown model), never a 500.

Note: no ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures.
"""

import asyncio
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from enfold.errors import EnfoldError
from enfold.export.triton_repo import entry_name, model_config, output_dims
from enfold.runtime.batching import MicroBatcher
from enfold.runtime.session import InferenceSession

if TYPE_CHECKING:
    from fastapi import APIRouter

VERSION = "1"  # every served model has one version, as in a Triton repository entry
HEADER_LENGTH = "inference-header-content-length"  # binary tensor extension
# Triton's names for the data types; enfold models take and give FP32 only.
DATATYPE = "FP32"
TRITON_DATATYPE = {"TYPE_FP32": "FP32"}


class ProtocolError(Exception):
    """A request the protocol refuses: its message goes back as ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OipModel:
    """One served target as an Open Inference Protocol model."""

    name: str
    target: str
    config: dict[str, Any]  # Triton ModelConfig, JSON form
    batcher: MicroBatcher

    @property
    def max_batch(self) -> int:
        return int(self.config["max_batch_size"])

    def tensor(self, kind: str) -> dict[str, Any]:
        """The single input (``"input"``) or output (``"output"``) in Triton's config form."""
        return self.config[kind][0]

    def shape(self, kind: str) -> list[int]:
        """Full shape with the batch axis (-1) when the model batches."""
        dims = list(self.tensor(kind)["dims"])
        return [-1, *dims] if self.max_batch > 0 else dims

    def metadata(self) -> dict[str, Any]:
        def describe(kind: str) -> dict[str, Any]:
            t = self.tensor(kind)
            return {"name": t["name"], "datatype": TRITON_DATATYPE[t["data_type"]],
                    "shape": self.shape(kind)}

        return {"name": self.name, "versions": [VERSION], "platform": self.config["platform"],
                "inputs": [describe("input")], "outputs": [describe("output")]}


def build_models(session: InferenceSession, max_batch: int,
                 max_wait_ms: float) -> dict[str, OipModel]:
    """An :class:`OipModel` (and its batcher) for every target ``session`` serves."""
    models = {}
    fmt = session.metadata.get("format", "checkpoint")
    for target in session.targets:
        meta = {**session.metadata, "target": target}
        try:
            dims = output_dims(meta)
        except EnfoldError:  # the encoder's width is not in the metadata: one call tells it
            probe = np.zeros((1, session.in_chans, session.img_size, session.img_size),
                             np.float32)
            dims = list(_run(session, target, probe).shape[1:])
        name = entry_name(meta)
        config = model_config(meta, dims, (1, max_batch, max_batch), fmt,
                              queue_delay_us=int(max_wait_ms * 1000), name=name)

        def run(x: torch.Tensor, target: str = target) -> torch.Tensor:
            return torch.from_numpy(_run(session, target, x.numpy()))

        models[name] = OipModel(name, target, config,
                                MicroBatcher(run, max_batch, max_wait_ms, name=f"v2/{name}"))
    return models


def _run(session: InferenceSession, target: str, x: np.ndarray) -> np.ndarray:
    # The artifact's own input space: the session's runner and batch-size handling, without the
    # pixel normalisation its classify/restore/energy methods add (clients normalise).
    return session._run(target, np.ascontiguousarray(x, dtype=np.float32))


# ----------------------------------------------------------------------------- requests


def parse_request(model: OipModel, body: bytes, header_length: str | None
                  ) -> tuple[dict[str, Any], np.ndarray, bool]:
    """``(request JSON, input array, whether the output goes back binary)``, or ProtocolError."""
    binary = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"Inference-Header-Content-Length {header_length!r} is not an "
                                "integer") from None
        if not 0 < n <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {n} does not fit the "
                                f"{len(body)}-byte body")
        body, binary = body[:n], body[n:]
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    spec = model.tensor("input")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"'inputs' must list exactly one tensor, {spec['name']!r}")
    tensor = inputs[0]
    if tensor.get("name") != spec["name"]:
        raise ProtocolError(f"unknown input {tensor.get('name')!r}: model {model.name!r} takes "
                            f"{spec['name']!r}")
    if tensor.get("datatype") != DATATYPE:
        raise ProtocolError(f"input {spec['name']!r} has datatype {tensor.get('datatype')!r}; "
                            f"this model takes {DATATYPE}")
    shape = check_shape(model, tensor.get("shape"))
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("input 'parameters' must be an object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size != count * 4 or len(binary) != size:
            raise ProtocolError(f"input {spec['name']!r} of shape {shape} needs {count * 4} "
                                f"bytes of FP32 binary data; binary_data_size is {size!r} and "
                                f"the body holds {len(binary)}")
        x = np.frombuffer(binary, dtype="<f4").reshape(shape)
    else:
        if binary:
            raise ProtocolError("the body holds binary data but no input declares "
                                "binary_data_size")
        x = _json_array(tensor.get("data"), spec["name"], shape, count)
    if not np.isfinite(x).all():
        raise ProtocolError(f"input {spec['name']!r} holds NaN or infinite values")
    return request, np.ascontiguousarray(x, dtype=np.float32), _binary_output(model, request)


def check_shape(model: OipModel, shape: Any) -> list[int]:
    """The request's shape if the model accepts it (batch 1 to ``max_batch_size``)."""
    want = model.shape("input")
    if (not isinstance(shape, list) or len(shape) != len(want)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or any(w != -1 and d != w for d, w in zip(shape, want, strict=True))
            or (want[0] == -1 and not 1 <= shape[0] <= model.max_batch)):
        limit = f" with 1 <= batch <= {model.max_batch}" if model.max_batch > 0 else ""
        raise ProtocolError(f"input shape {shape!r} does not fit model {model.name!r}: it takes "
                            f"{want}{limit}")
    return shape


def _json_array(data: Any, name: str, shape: list[int], count: int) -> np.ndarray:
    if data is None:
        raise ProtocolError(f"input {name!r} has no 'data' (nor binary_data_size)")
    try:
        values = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(f"input {name!r} data is not a rectangular array: {exc}") from None
    if values.dtype.kind not in "iuf" or values.size != count:
        what = (f"{values.size} numbers" if values.dtype.kind in "iuf"
                else f"values of type {values.dtype}")
        raise ProtocolError(f"input {name!r} of shape {shape} needs {count} numbers in 'data' "
                            f"(row-major), got {what}")
    return values.astype(np.float32).reshape(shape)


def _binary_output(model: OipModel, request: dict[str, Any]) -> bool:
    """Whether the output goes back in the binary extension; refuses unknown output names."""
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("request 'parameters' must be an object")
    binary = bool(params.get("binary_data_output", False))
    outputs = request.get("outputs")
    if outputs is None:
        return binary
    name = model.tensor("output")["name"]
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != name:
            got = out.get("name") if isinstance(out, dict) else out
            raise ProtocolError(f"unknown output {got!r}: model {model.name!r} gives {name!r}")
        out_params = out.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise ProtocolError("output 'parameters' must be an object")
        if out_params.get("class_count"):
            raise ProtocolError("the classification extension (class_count) is not supported: "
                                "request the raw output and take the top-k yourself")
        binary = bool(out_params.get("binary_data", binary))
    return binary


def encode_response(model: OipModel, request: dict[str, Any], rows: np.ndarray,
                    binary: bool) -> tuple[bytes, dict[str, str]]:
    """The infer response body and its headers (the JSON header length when binary)."""
    spec = model.tensor("output")
    shape = [rows.shape[0], *spec["dims"]] if model.max_batch > 0 else list(spec["dims"])
    rows = np.ascontiguousarray(rows, dtype="<f4").reshape(shape)
    output: dict[str, Any] = {"name": spec["name"], "datatype": DATATYPE, "shape": shape}
    if binary:
        raw = rows.tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = rows.reshape(-1).tolist()
    response: dict[str, Any] = {"model_name": model.name, "model_version": VERSION,
                                "outputs": [output]}
    if "id" in request:
        response["id"] = request["id"]
    header = json.dumps(response).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + raw, {"content-type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


# ----------------------------------------------------------------------------- the router


def oip_router(session: InferenceSession, max_batch: int, max_wait_ms: float
               ) -> tuple["APIRouter", list[MicroBatcher]]:
    """A FastAPI router speaking the protocol for ``session``, and the batchers to stop at
    shutdown."""
    from importlib.metadata import PackageNotFoundError, version

    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse, Response

    models = build_models(session, max_batch, max_wait_ms)
    router = APIRouter()
    try:
        server_version = version("enfold")
    except PackageNotFoundError:
        server_version = "unknown"

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def find(name: str, model_version: str | None = None) -> OipModel:
        if name not in models:
            raise ProtocolError(f"unknown model {name!r}; this server has "
                                f"{', '.join(sorted(models))}", 404)
        if model_version not in (None, VERSION):
            raise ProtocolError(f"model {name!r} has version {VERSION} only, not "
                                f"{model_version!r}", 404)
        return models[name]

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "enfold", "version": server_version,
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"]}

    @router.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @router.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200)  # models load before the server listens

    async def guarded(fn: Any, *args: Any) -> Any:
        try:
            return await fn(*args)
        except ProtocolError as exc:
            return error(str(exc), exc.status)

    async def _metadata(name: str, model_version: str | None = None) -> dict[str, Any]:
        return find(name, model_version).metadata()

    async def _ready(name: str, model_version: str | None = None) -> Response:
        find(name, model_version)
        return Response(status_code=200)

    async def _config(name: str, model_version: str | None = None) -> dict[str, Any]:
        return find(name, model_version).config

    async def _stats(name: str, model_version: str | None = None) -> dict[str, Any]:
        model = find(name, model_version)
        c = model.batcher.counters
        return {"model_stats": [{"name": model.name, "version": VERSION,
                                 "inference_count": c.images, "execution_count": c.batches,
                                 "batch_sizes": {str(k): v for k, v in sorted(c.sizes.items())}
                                 }]}

    async def _infer(request: Request, name: str, model_version: str | None = None) -> Any:
        model = find(name, model_version)
        body = await request.body()
        parsed, x, binary = await asyncio.to_thread(
            parse_request, model, body, request.headers.get(HEADER_LENGTH))
        try:
            out = await model.batcher.submit(torch.from_numpy(x))
        except Exception as exc:  # the model failed on a well-formed request: a server error
            return error(f"model {name!r} failed: {type(exc).__name__}: {exc}", 500)
        content, headers = await asyncio.to_thread(encode_response, model, parsed,
                                                   out.rows.numpy(), binary)
        headers["X-Batch-Size"] = str(out.batch_size)
        return Response(content, headers=headers)

    def endpoints(fn: Any) -> tuple[Any, Any]:
        async def plain(name: str) -> Any:
            return await guarded(fn, name)

        async def versioned(name: str, model_version: str) -> Any:
            return await guarded(fn, name, model_version)

        return plain, versioned

    # each route with and without /versions/{model_version}, as the protocol allows both
    for suffix, fn in [("", _metadata), ("/ready", _ready), ("/config", _config),
                       ("/stats", _stats)]:
        plain, versioned = endpoints(fn)
        router.add_api_route(f"/v2/models/{{name}}{suffix}", plain, methods=["GET"])
        router.add_api_route(f"/v2/models/{{name}}/versions/{{model_version}}{suffix}",
                             versioned, methods=["GET"])

    @router.post("/v2/models/{name}/infer")
    async def infer(request: Request, name: str) -> Any:
        return await guarded(_infer, request, name)

    @router.post("/v2/models/{name}/versions/{model_version}/infer")
    async def infer_versioned(request: Request, name: str, model_version: str) -> Any:
        return await guarded(_infer, request, name, model_version)

    @router.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, str]]:
        return [{"name": name, "version": VERSION, "state": "READY"} for name in sorted(models)]

    # registered last: any other /v2 path gets the protocol's error form, not FastAPI's
    @router.api_route("/v2/{path:path}", methods=["GET", "POST"])
    async def unknown(request: Request, path: str) -> JSONResponse:
        hint = " (infer takes POST)" if path.endswith("/infer") else ""
        return error(f"unknown endpoint {request.method} /v2/{path}{hint}", 404)

    return router, [m.batcher for m in models.values()]
