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

Bounded work per request: a JSON body is scanned for its nesting depth and element count before
it is parsed (:mod:`enfold.runtime.json_limits`; the limits fit the model's largest batch), and
bodies are parsed a few at a time (the server's decode slots), so junk bodies cost neither
memory nor a traceback. Input values must be images: pixels in [0, 1] (a restorer's noisy
input in [-1, 2]) after the model's normalisation; an output with NaN or infinity is a 500 that
says so, never a bare ``NaN`` in the JSON.

Note: no ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures.
"""

import asyncio
import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from enfold.errors import EnfoldError, LimitError
from enfold.export.triton_repo import entry_name, model_config, output_dims
from enfold.runtime.batching import MicroBatcher
from enfold.runtime.json_limits import JsonLimits
from enfold.runtime.outputs import NonFiniteOutputError, check_finite, strict_json
from enfold.runtime.session import InferenceSession

if TYPE_CHECKING:
    from fastapi import APIRouter

VERSION = "1"  # every served model has one version, as in a Triton repository entry
HEADER_LENGTH = "inference-header-content-length"  # binary tensor extension
# Triton's names for the data types; enfold models take and give FP32 only.
DATATYPE = "FP32"
TRITON_DATATYPE = {"TYPE_FP32": "FP32"}
# Pixels (before normalisation) an input may hold: images lie in [0, 1]; a restorer's input is a
# corrupted image, and Gaussian noise is added unclamped (enfold/corrupt/noise.py), so it may
# stray outside by several sigma. Tolerance: float32 rounding of the client's normalisation.
PIXEL_RANGE = {"restorer": (-1.0, 2.0)}
IMAGE_RANGE = (0.0, 1.0)
PIXEL_TOLERANCE = 1e-3
# JSON limits: nesting (a request is about 8 deep: object, inputs, tensor, N, C, H, W) and
# values beyond the largest batch's tensor (the request's own fields).
MAX_JSON_DEPTH = 32
JSON_SLACK = 4096
# How a JSON limit is answered: too deep is malformed, too many values is too large.
JSON_LIMIT_STATUS = {"max_depth": 400, "max_elements": 413, "max_containers": 413}


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
    json_limits: JsonLimits = JsonLimits()
    mean: tuple[float, ...] = ()  # the input's normalisation, per channel
    std: tuple[float, ...] = ()

    @property
    def pixel_range(self) -> tuple[float, float]:
        return PIXEL_RANGE.get(self.target, IMAGE_RANGE)

    def input_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the lowest and highest normalised input value allowed."""
        lo, hi = self.pixel_range
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return (lo - PIXEL_TOLERANCE - mean) / std, (hi + PIXEL_TOLERANCE - mean) / std

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


def json_limits_for(in_shape: list[int], max_batch: int, max_depth: int = MAX_JSON_DEPTH,
                    max_elements: int | None = None) -> JsonLimits:
    """JSON limits for a model taking ``in_shape`` (one image, no batch axis), ``max_batch``
    images at most: by default its largest batch of values and :data:`JSON_SLACK` more; arrays
    and objects at most one per row of the nested form (``numbers / width``) plus the slack."""
    values = max(1, max_batch) * math.prod(in_shape)
    elements = max_elements if max_elements is not None else 2 * values + JSON_SLACK
    width = in_shape[-1] if in_shape else 1
    containers = max(1, min(elements, elements // max(1, width) + JSON_SLACK))
    return JsonLimits(max_depth=max_depth, max_elements=elements, max_containers=containers)


def build_models(session: InferenceSession, max_batch: int, max_wait_ms: float,
                 max_json_depth: int = MAX_JSON_DEPTH, max_json_elements: int | None = None,
                 prefix: str | None = None) -> dict[str, OipModel]:
    """An :class:`OipModel` (and its batcher) for every target ``session`` serves, with the
    JSON limits of :func:`json_limits_for`. Each is named as its Triton entry (``classifier``,
    ``restorer-k2``); with ``prefix`` (a server of several models) the model is named
    ``prefix`` when it serves one target, ``prefix-ENTRY`` for each of several."""
    models = {}
    fmt = session.metadata.format
    for target in session.targets:
        meta = replace(session.metadata, target=target)
        try:
            dims = output_dims(meta)
        except EnfoldError:  # the encoder's width is not in the metadata: one call tells it
            probe = np.zeros((1, session.in_chans, session.img_size, session.img_size),
                             np.float32)
            dims = list(_run(session, target, probe).shape[1:])
        name = entry_name(meta)
        if prefix is not None:
            name = prefix if len(session.targets) == 1 else f"{prefix}-{name}"
        config = model_config(meta, dims, (1, max_batch, max_batch), fmt,
                              queue_delay_us=int(max_wait_ms * 1000), name=name)

        def run(x: torch.Tensor, target: str = target) -> torch.Tensor:
            return torch.from_numpy(_run(session, target, x.numpy()))

        def check(rows: torch.Tensor, name: str = name) -> None:
            check_finite(rows, name)

        in_shape = list(config["input"][0]["dims"])
        if int(config["max_batch_size"]) == 0:  # a fixed batch: its rows are in the dims
            in_shape = in_shape[1:]
        models[name] = OipModel(
            name, target, config,
            MicroBatcher(run, max_batch, max_wait_ms, name=f"v2/{name}", check=check),
            json_limits_for(in_shape, max_batch, max_json_depth, max_json_elements),
            *(tuple(float(v) for v in values[: session.in_chans])
              for values in (session.metadata.mean, session.metadata.std)))
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
        model.json_limits.check(body)
    except LimitError as exc:
        raise ProtocolError(str(exc), JSON_LIMIT_STATUS[exc.limit]) from None
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, a 5000-digit integer
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
    check_range(model, x)
    return request, np.ascontiguousarray(x, dtype=np.float32), _binary_output(model, request)


def check_range(model: OipModel, x: np.ndarray) -> None:
    """ProtocolError unless every value of ``x`` is a pixel of the model's range once its
    normalisation is undone (per channel; :data:`PIXEL_RANGE`)."""
    if not model.mean:
        return
    channels = len(model.mean)
    per_channel = np.moveaxis(x.reshape(-1, *x.shape[-3:]), 1, 0).reshape(channels, -1)
    low, high = per_channel.min(axis=1), per_channel.max(axis=1)
    lo, hi = model.input_bounds()
    if (low >= lo).all() and (high <= hi).all():
        return
    c = int(np.argmax((low < lo) | (high > hi)))
    plo, phi = model.pixel_range
    ranges = [f"[{a + PIXEL_TOLERANCE / s:.4g}, {b - PIXEL_TOLERANCE / s:.4g}]"
              for a, b, s in zip(lo, hi, model.std, strict=True)]
    ranges_text = (f"values in {ranges[0]}" if len(set(ranges)) == 1 else
                   "per channel values in " + ", ".join(ranges))
    raise ProtocolError(
        f"input {model.tensor('input')['name']!r} holds values outside the valid range: model "
        f"{model.name!r} takes pixels in [{plo:g}, {phi:g}] normalised with mean "
        f"{list(model.mean)} and std {list(model.std)}: {ranges_text}; channel {c} holds "
        f"values from {low[c]:.4g} to {high[c]:.4g}")


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
    header = strict_json(response)
    if not binary:
        return header, {"content-type": "application/json"}
    return header + raw, {"content-type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


async def read_body(request: Any) -> bytes:
    """The request's body (its size already bounded by the upload limit)."""
    chunks = [chunk async for chunk in request.stream()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ----------------------------------------------------------------------------- the router


class OipEndpoints:
    """The protocol's endpoints over ``models`` (name -> :class:`OipModel`): one method per
    endpoint; :func:`oip_router` binds each to its route. A :class:`ProtocolError` raised by
    an endpoint is answered in the protocol's error form (:meth:`guarded`). Request bodies are
    parsed while holding one of ``slots`` (shared with the server's image decoding)."""

    def __init__(self, models: dict[str, OipModel], slots: asyncio.Semaphore,
                 server_version: str) -> None:
        self.models = models
        self.slots = slots
        self.server_version = server_version

    @staticmethod
    def error(message: str, status: int = 400) -> Any:
        """The protocol's error answer: ``{"error": message}``."""
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": message}, status_code=status)

    def find(self, name: str, model_version: str | None = None) -> OipModel:
        """The model called ``name`` (at ``model_version``), or a 404 ProtocolError."""
        if name not in self.models:
            raise ProtocolError(f"unknown model {name!r}; this server has "
                                f"{', '.join(sorted(self.models))}", 404)
        if model_version not in (None, VERSION):
            raise ProtocolError(f"model {name!r} has version {VERSION} only, not "
                                f"{model_version!r}", 404)
        return self.models[name]

    async def guarded(self, fn: Any, *args: Any) -> Any:
        """``await fn(*args)``, a ProtocolError answered as :meth:`error`."""
        try:
            return await fn(*args)
        except ProtocolError as exc:
            return self.error(str(exc), exc.status)

    async def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": "enfold", "version": self.server_version,
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"]}

    async def live(self) -> Any:
        """``GET /v2/health/live``."""
        from fastapi.responses import Response

        return Response(status_code=200)

    async def ready(self) -> Any:
        """``GET /v2/health/ready``: models load before the server listens."""
        from fastapi.responses import Response

        return Response(status_code=200)

    async def model_metadata(self, name: str, model_version: str | None = None
                             ) -> dict[str, Any]:
        """``GET /v2/models/{name}``: inputs and outputs."""
        return self.find(name, model_version).metadata()

    async def model_ready(self, name: str, model_version: str | None = None) -> Any:
        """``GET /v2/models/{name}/ready``."""
        self.find(name, model_version)
        return await self.ready()

    async def model_config(self, name: str, model_version: str | None = None
                           ) -> dict[str, Any]:
        """``GET /v2/models/{name}/config``: the Triton configuration."""
        return self.find(name, model_version).config

    async def model_stats(self, name: str, model_version: str | None = None
                          ) -> dict[str, Any]:
        """``GET /v2/models/{name}/stats``: inference and execution counts."""
        model = self.find(name, model_version)
        c = model.batcher.counters
        return {"model_stats": [{"name": model.name, "version": VERSION,
                                 "inference_count": c.images, "execution_count": c.batches,
                                 "batch_sizes": {str(k): v for k, v in sorted(c.sizes.items())}
                                 }]}

    async def infer(self, request: Any, name: str, model_version: str | None = None) -> Any:
        """``POST /v2/models/{name}/infer``: the request parsed (in a decode slot), batched,
        run and encoded; a model failure on a well-formed request is a 500."""
        from fastapi.responses import Response

        model = self.find(name, model_version)
        body = await read_body(request)
        async with self.slots:
            parsed, x, binary = await asyncio.to_thread(
                parse_request, model, body, request.headers.get(HEADER_LENGTH))
        del body  # not cached on the request (as Request.body() would): freed while it runs
        try:
            out = await model.batcher.submit(torch.from_numpy(x))
            content, headers = await asyncio.to_thread(encode_response, model, parsed,
                                                       out.rows.numpy(), binary)
        except NonFiniteOutputError as exc:
            return self.error(str(exc), 500)
        except Exception as exc:  # the model failed on a well-formed request: a server error
            return self.error(f"model {name!r} failed: {type(exc).__name__}: {exc}", 500)
        headers["X-Batch-Size"] = str(out.batch_size)
        return Response(content, headers=headers)

    async def repository_index(self) -> list[dict[str, str]]:
        """``POST /v2/repository/index``: the served models, all READY."""
        return [{"name": name, "version": VERSION, "state": "READY"}
                for name in sorted(self.models)]

    async def list_models(self) -> dict[str, list[dict[str, Any]]]:
        """Every served model's metadata (an extension: the protocol lists them only through
        the repository index)."""
        return {"models": [self.models[name].metadata() for name in sorted(self.models)]}

    async def unknown(self, method: str, path: str) -> Any:
        """Any other ``/v2`` path: the protocol's 404."""
        hint = " (infer takes POST)" if path.endswith("/infer") else ""
        return self.error(f"unknown endpoint {method} /v2/{path}{hint}", 404)


def _server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("enfold")
    except PackageNotFoundError:
        return "unknown"


def oip_router(session: InferenceSession, max_batch: int, max_wait_ms: float,
               decode_slots: asyncio.Semaphore | None = None,
               max_json_depth: int = MAX_JSON_DEPTH, max_json_elements: int | None = None,
               prefix: str | None = None) -> tuple["APIRouter", list[MicroBatcher]]:
    """A FastAPI router speaking the protocol for ``session``, and the batchers to stop at
    shutdown. Request bodies are parsed while holding one of ``decode_slots`` (shared with the
    server's image decoding: the memory of concurrent parses stays bounded)."""
    models = build_models(session, max_batch, max_wait_ms, max_json_depth, max_json_elements,
                          prefix)
    slots = decode_slots if decode_slots is not None else asyncio.Semaphore(2)
    router = _bind_oip(OipEndpoints(models, slots, _server_version()))
    router.models = models  # type: ignore[attr-defined]  # name -> OipModel, for listings
    return router, [m.batcher for m in models.values()]


def _bind_oip(oip: OipEndpoints) -> "APIRouter":
    """A router with a thin binding from every protocol route to its :class:`OipEndpoints`
    method (FastAPI reads the bindings' signatures)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()
    router.add_api_route("/v2", oip.server_metadata, methods=["GET"])
    # these answer a bare Response: no response model
    router.add_api_route("/v2/health/live", oip.live, methods=["GET"], response_model=None)
    router.add_api_route("/v2/health/ready", oip.ready, methods=["GET"], response_model=None)

    def endpoints(fn: Any) -> tuple[Any, Any]:
        async def plain(name: str) -> Any:
            return await oip.guarded(fn, name)

        async def versioned(name: str, model_version: str) -> Any:
            return await oip.guarded(fn, name, model_version)

        return plain, versioned

    # each route with and without /versions/{model_version}, as the protocol allows both
    for suffix, fn in [("", oip.model_metadata), ("/ready", oip.model_ready),
                       ("/config", oip.model_config), ("/stats", oip.model_stats)]:
        plain, versioned = endpoints(fn)
        router.add_api_route(f"/v2/models/{{name}}{suffix}", plain, methods=["GET"])
        router.add_api_route(f"/v2/models/{{name}}/versions/{{model_version}}{suffix}",
                             versioned, methods=["GET"])

    @router.post("/v2/models/{name}/infer")
    async def infer(request: Request, name: str) -> Any:
        return await oip.guarded(oip.infer, request, name)

    @router.post("/v2/models/{name}/versions/{model_version}/infer")
    async def infer_versioned(request: Request, name: str, model_version: str) -> Any:
        return await oip.guarded(oip.infer, request, name, model_version)

    router.add_api_route("/v2/repository/index", oip.repository_index, methods=["POST"])
    router.add_api_route("/v2/models", oip.list_models, methods=["GET"])

    # registered last: any other /v2 path gets the protocol's error form, not FastAPI's
    @router.api_route("/v2/{path:path}", methods=["GET", "POST"])
    async def unknown(request: Request, path: str) -> JSONResponse:
        return await oip.unknown(request.method, path)

    return router
