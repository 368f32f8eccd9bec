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
A restorer's second input (``sigma``, ``mask``: ``restorer_inputs``) is listed after the images
as the Triton entry lists it, and travels with the images through the batcher (one plane per
row, :meth:`OipModel.pack`); a request without sigma gets each image's estimated noise level, as
``/v1/restore`` does. So one client works against ``enfold serve`` and against Triton alike.
Requests are batched by a :class:`MicroBatcher` per model. A malformed request gets
``{"error": "..."}`` and a 400 (404 for an unknown model), never a 500.

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
from enfold.export.triton_repo import (
    entry_name,
    extra_input_dims,
    extra_inputs,
    model_config,
    output_dims,
)
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
# A restorer's noise level, pixel units: the open interval /v1/restore and the CLI accept, and
# the clamp an estimated one gets (as enfold.runtime.restore.restore_image does).
SIGMA_RANGE = (0.0, 1.0)
SIGMA_CLAMP = (1e-4, 0.999)
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
    # a restorer's inputs besides the images ("sigma", "mask"), as config["input"][1:]
    extras: tuple[str, ...] = ()

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
        return self.shape_of(self.tensor(kind))

    def shape_of(self, spec: dict[str, Any]) -> list[int]:
        """The full shape of the tensor ``spec`` (a config input or output) as clients send
        and receive it: its ``dims``, after a batch axis (-1) when the model batches."""
        dims = list(spec["dims"])
        return [-1, *dims] if self.max_batch > 0 else dims

    def kind_of(self, name: str) -> str:
        """``"images"``, ``"sigma"`` or ``"mask"``: what the input called ``name`` holds."""
        names = [spec["name"] for spec in self.config["input"]]
        return ("images", *self.extras)[names.index(name)]

    def metadata(self) -> dict[str, Any]:
        def describe(spec: dict[str, Any]) -> dict[str, Any]:
            return {"name": spec["name"], "datatype": TRITON_DATATYPE[spec["data_type"]],
                    "shape": self.shape_of(spec)}

        return {"name": self.name, "versions": [VERSION], "platform": self.config["platform"],
                "inputs": [describe(spec) for spec in self.config["input"]],
                "outputs": [describe(self.tensor("output"))]}

    def pack(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """The images and the restorer's other inputs as one ``(B, C + len(extras), H, W)``
        array, the micro-batcher's rows: each extra input one plane (sigma repeated over it)."""
        x = tensors["images"]
        if not self.extras:
            return x
        planes = [x]
        for kind in self.extras:
            value = tensors[kind]
            plane = (x.shape[0], 1, *x.shape[2:])
            planes.append(value if kind == "mask" else
                          np.broadcast_to(value.reshape(-1, 1, 1, 1), plane))
        return np.ascontiguousarray(np.concatenate(planes, axis=1), dtype=np.float32)

    def unpack(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """:meth:`pack` undone: the images and the extra inputs in the graph's order."""
        return unpack(rows, self.extras)


def unpack(rows: np.ndarray, extras: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """:meth:`OipModel.pack`'s rows as the images and the ``extras`` in the graph's order:
    the mask ``(B, 1, H, W)``, sigma ``(B,)``."""
    chans = rows.shape[1] - len(extras)
    x = np.ascontiguousarray(rows[:, :chans])
    given = [np.ascontiguousarray(rows[:, chans + i:chans + i + 1] if kind == "mask"
                                  else rows[:, chans + i, 0, 0])
             for i, kind in enumerate(extras)]
    return x, given


def json_limits_for(in_shape: list[int], max_batch: int, max_depth: int = MAX_JSON_DEPTH,
                    max_elements: int | None = None, extra_values: int = 0) -> JsonLimits:
    """JSON limits for a model taking ``in_shape`` (one image, no batch axis) and
    ``extra_values`` more numbers per image (a restorer's sigma and mask), ``max_batch``
    images at most: by default its largest batch of values and :data:`JSON_SLACK` more; arrays
    and objects at most one per row of the nested form (``numbers / width``) plus the slack."""
    values = max(1, max_batch) * (math.prod(in_shape) + extra_values)
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
        extras = tuple(extra_inputs(meta))
        # sigma may be left out of a request: the server estimates it, as /v1/restore does
        config = model_config(meta, dims, (1, max_batch, max_batch), fmt,
                              queue_delay_us=int(max_wait_ms * 1000), name=name,
                              optional=tuple(e for e in extras if e == "sigma"))

        def run(rows: torch.Tensor, target: str = target, extras: tuple[str, ...] = extras
                ) -> torch.Tensor:
            x, given = unpack(rows.numpy(), extras)
            return torch.from_numpy(_run(session, target, x, given))

        def check(rows: torch.Tensor, name: str = name) -> None:
            check_finite(rows, name)

        in_shape = list(config["input"][0]["dims"])
        if int(config["max_batch_size"]) == 0:  # a fixed batch: its rows are in the dims
            in_shape = in_shape[1:]
        extra_values = sum(math.prod(extra_input_dims(e, meta)) for e in extras)
        models[name] = OipModel(
            name, target, config,
            MicroBatcher(run, max_batch, max_wait_ms, name=f"v2/{name}", check=check),
            json_limits_for(in_shape, max_batch, max_json_depth, max_json_elements,
                            extra_values),
            *(tuple(float(v) for v in values[: session.in_chans])
              for values in (session.metadata.mean, session.metadata.std)),
            extras=extras)
    return models


def _run(session: InferenceSession, target: str, x: np.ndarray,
         extras: list[np.ndarray] | None = None) -> np.ndarray:
    # The artifact's own input space: the session's runner and batch-size handling, without the
    # pixel normalisation its classify/restore/energy methods add (clients normalise).
    return session._run(target, np.ascontiguousarray(x, dtype=np.float32), extras)


# ----------------------------------------------------------------------------- requests


def parse_request(model: OipModel, body: bytes, header_length: str | None
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """``(request JSON, input arrays by kind, whether the output goes back binary)``, or a
    ProtocolError. The kinds: ``images``, and a restorer's ``sigma`` (``(B,)``) and ``mask``."""
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
    tensors = _read_inputs(model, request.get("inputs"), binary)
    return request, tensors, _binary_output(model, request)


def _read_inputs(model: OipModel, inputs: Any, binary: bytes) -> dict[str, np.ndarray]:
    """The request's tensors by kind (``images``, ``sigma`` as ``(B,)``, ``mask``), each
    checked against its config entry; binary tensors take the body's bytes in request order."""
    specs = {spec["name"]: spec for spec in model.config["input"]}
    takes = ", ".join(repr(name) + (" (optional)" if spec.get("optional") else "")
                      for name, spec in specs.items())
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        count = "exactly one tensor" if len(specs) == 1 else "its input tensors"
        raise ProtocolError(f"'inputs' must list {count}: {takes}")
    seen: set[str] = set()
    for tensor in inputs:
        name = tensor.get("name")
        if name not in specs:
            raise ProtocolError(f"unknown input {name!r}: model {model.name!r} takes {takes}")
        if name in seen:
            raise ProtocolError(f"input {name!r} is given twice")
        seen.add(name)
    missing = [name for name, spec in specs.items()
               if name not in seen and not spec.get("optional")]
    if missing:
        what = {"images": "the normalised images", "sigma": "the noise level per image",
                "mask": "the hole mask, 1 in the holes and 0 elsewhere"}
        raise ProtocolError("missing input " + "; ".join(
            f"{name!r} ({what[model.kind_of(name)]}, {model.shape_of(specs[name])})"
            for name in missing) + f": model {model.name!r} takes {takes}")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    batch = None
    for tensor in inputs:
        spec = specs[tensor["name"]]
        kind = model.kind_of(spec["name"])
        x, offset = _read_tensor(model, tensor, spec, binary, offset)
        if model.max_batch > 0:
            if batch is not None and x.shape[0] != batch:
                raise ProtocolError(f"input {spec['name']!r} has {x.shape[0]} rows but the "
                                    f"request's other inputs {batch}: one row per image")
            batch = x.shape[0]
        tensors[kind] = x
    if offset != len(binary):
        raise ProtocolError("the body holds binary data but no input declares binary_data_size"
                            if offset == 0 else
                            f"the inputs declare {offset} bytes of binary data; the body holds "
                            f"{len(binary)}")
    check_range(model, tensors["images"])
    if "sigma" in tensors:
        tensors["sigma"] = check_sigma(model, tensors["sigma"])
    if "mask" in tensors:
        mask = tensors["mask"]
        if mask.min() < 0 or mask.max() > 1:
            raise ProtocolError(f"input {_name_of(model, 'mask')!r} is the hole mask, 1 in the "
                                f"holes and 0 elsewhere; it holds values from {mask.min():.4g} "
                                f"to {mask.max():.4g}")
    return {kind: np.ascontiguousarray(x, dtype=np.float32) for kind, x in tensors.items()}


def _name_of(model: OipModel, kind: str) -> str:
    return model.config["input"][("images", *model.extras).index(kind)]["name"]


def _read_tensor(model: OipModel, tensor: dict[str, Any], spec: dict[str, Any], binary: bytes,
                 offset: int) -> tuple[np.ndarray, int]:
    """One input's values (JSON ``data`` or the binary bytes from ``offset``), and the offset
    of the next binary tensor."""
    name = spec["name"]
    if tensor.get("datatype") != DATATYPE:
        raise ProtocolError(f"input {name!r} has datatype {tensor.get('datatype')!r}; "
                            f"this model takes {DATATYPE}")
    shape = check_shape(model, tensor.get("shape"), spec)
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("input 'parameters' must be an object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        left = len(binary) - offset
        if not isinstance(size, int) or size != count * 4 or left < size:
            raise ProtocolError(f"input {name!r} of shape {shape} needs {count * 4} "
                                f"bytes of FP32 binary data; binary_data_size is {size!r} and "
                                f"the body holds {left} more")
        x = np.frombuffer(binary, dtype="<f4", count=count, offset=offset).reshape(shape)
        offset += size
    else:
        x = _json_array(tensor.get("data"), name, shape, count)
    if not np.isfinite(x).all():
        raise ProtocolError(f"input {name!r} holds NaN or infinite values")
    return x, offset


def check_sigma(model: OipModel, sigma: np.ndarray) -> np.ndarray:
    """A request's noise levels as ``(B,)``, or a ProtocolError unless each lies in
    :data:`SIGMA_RANGE` (pixel units, as ``/v1/restore`` and ``enfold restore --sigma``)."""
    sigma = sigma.reshape(-1)
    lo, hi = SIGMA_RANGE
    if not ((sigma > lo) & (sigma < hi)).all():
        bad = float(sigma[~((sigma > lo) & (sigma < hi))][0])
        raise ProtocolError(f"input {_name_of(model, 'sigma')!r} is the noise level in pixel "
                            f"units, in ({lo:g}, {hi:g}) (e.g. 0.05 for 13 of 255), got {bad:g}")
    return sigma


def estimate_sigmas(model: OipModel, x: np.ndarray) -> np.ndarray:
    """Each normalised image's noise level (pixel units), estimated from its pixels as
    ``session.restore`` and ``/v1/restore`` do when not told, clamped as ``/v1`` does."""
    from enfold.corrupt.noise import estimate_sigma

    mean = np.asarray(model.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(model.std, np.float32).reshape(-1, 1, 1)
    found = [estimate_sigma(img * std + mean) for img in x]
    return np.clip(np.asarray(found, np.float32), *SIGMA_CLAMP).astype(np.float32)


def model_input(model: OipModel, tensors: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, str | None]:
    """The micro-batcher's rows for a parsed request (:meth:`OipModel.pack`) and where sigma
    came from (``"given"``, ``"estimated"``; None for a model without it)."""
    source = None
    if "sigma" in model.extras:
        source = "given" if "sigma" in tensors else "estimated"
        if source == "estimated":
            tensors = {**tensors, "sigma": estimate_sigmas(model, tensors["images"])}
    return model.pack(tensors), source


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


def check_shape(model: OipModel, shape: Any, spec: dict[str, Any] | None = None) -> list[int]:
    """The request's shape if the model accepts it for the input ``spec`` (default the images):
    batch 1 to ``max_batch_size``."""
    spec = spec or model.tensor("input")
    want = model.shape_of(spec)
    if (not isinstance(shape, list) or len(shape) != len(want)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or any(w != -1 and d != w for d, w in zip(shape, want, strict=True))
            or (want[0] == -1 and not 1 <= shape[0] <= model.max_batch)):
        limit = f" with 1 <= batch <= {model.max_batch}" if model.max_batch > 0 else ""
        hint = (" (one noise level per image)" if spec is not model.tensor("input")
                and model.kind_of(spec["name"]) == "sigma" else "")
        raise ProtocolError(f"input {spec['name']!r} shape {shape!r} does not fit model "
                            f"{model.name!r}: it takes {want}{limit}{hint}")
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
            parsed, tensors, binary = await asyncio.to_thread(
                parse_request, model, body, request.headers.get(HEADER_LENGTH))
            x, sigma_source = await asyncio.to_thread(model_input, model, tensors)
        del body, tensors  # not cached on the request (as Request.body() would): freed early
        try:
            out = await model.batcher.submit(torch.from_numpy(x))
            content, headers = await asyncio.to_thread(encode_response, model, parsed,
                                                       out.rows.numpy(), binary)
        except NonFiniteOutputError as exc:
            return self.error(str(exc), 500)
        except Exception as exc:  # the model failed on a well-formed request: a server error
            return self.error(f"model {name!r} failed: {type(exc).__name__}: {exc}", 500)
        headers["X-Batch-Size"] = str(out.batch_size)
        if sigma_source is not None:  # as /v1/restore: given by the client or estimated
            headers["X-Sigma-Source"] = sigma_source
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
