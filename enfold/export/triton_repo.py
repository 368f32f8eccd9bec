"""Triton Inference Server model repository entries for exported artifacts.

    enfold export --checkpoint CKPT --target classifier --format onnx --out exports/ \\
        --triton-repo models/
    # models/classifier/config.pbtxt and models/classifier/1/model.onnx

One function, :func:`model_config`, describes a served model as Triton's ``ModelConfig`` in its
JSON form (the form Triton's ``GET /v2/models/{name}/config`` returns). The repository writer
prints it as ``config.pbtxt``, and ``enfold serve`` answers the same JSON and derives its Open
Inference Protocol metadata from it, so a client sees the same tensors from both servers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from enfold.artifact.formats import BY_NAME, TritonNames
from enfold.artifact.sidecar import Sidecar
from enfold.errors import EnfoldError
from enfold.export.onnx_export import INPUT_NAME, OUTPUT_NAMES

# Triton's names for each format it loads (platform, backend, file): the formats table's.
TRITON = {fmt.name: fmt.triton for fmt in BY_NAME.values() if fmt.triton}
# The first line of every config enfold writes: an entry without it is someone else's.
MARKER = "# written by enfold export: edit freely, a re-export replaces it"
# config.pbtxt fields whose values are enum names, printed without quotes.
ENUM_FIELDS = frozenset({"data_type", "kind", "format"})
# Metadata that stays out of the parameters: a path on the exporting machine.
PRIVATE_KEYS = frozenset({"checkpoint"})


def entry_name(meta: Sidecar) -> str:
    """``classifier``, ``restorer-k2``, ``energy-fp16``: the artifact's own file stem."""
    name = meta.target
    if meta.target == "restorer" and meta.steps:
        name += f"-k{meta.steps}"
    return name + ("-fp16" if meta.precision == "fp16" else "")


def tensor_names(meta: Sidecar) -> tuple[str, str]:
    """(input, output) tensor names the served model uses.

    Triton's PyTorch backend names TorchScript tensors by position (``<name>__<index>``), as a
    traced module's outputs have no names.
    """
    inp = meta.input or INPUT_NAME
    out = meta.output or OUTPUT_NAMES[meta.target]
    names = TRITON.get(meta.format)
    if names is not None and names.positional_names:
        return f"{inp}__0", f"{out}__0"
    return inp, out


def extra_inputs(meta: Sidecar) -> list[str]:
    """The restorer's inputs besides the images (``sigma``, ``mask``), in the graph's order;
    none for the other targets (a checkpoint's sidecar lists them for all of its targets)."""
    return list(meta.restorer_inputs or ()) if meta.target == "restorer" else []


def extra_input_dims(name: str, meta: Sidecar) -> list[int]:
    """Per-image shape of a restorer's other input, without the batch axis: ``[]`` for sigma
    (one noise level per image), ``[1, S, S]`` for the hole mask."""
    return [] if name == "sigma" else [1, meta.img_size, meta.img_size]


def output_dims(meta: Sidecar, artifact: Path | None = None) -> list[int]:
    """Per-image output shape, without the batch axis (``[]`` for one number per image).

    The encoder's width is not in the metadata: it is read from the ONNX graph (the artifact or
    the ONNX file a TensorRT engine was built from) or from one TorchScript call.
    """
    target = meta.target
    if target == "classifier":
        return [len(meta.class_names or ())]
    if target == "restorer":
        return [meta.in_chans, meta.img_size, meta.img_size]
    if target == "energy":
        return []
    if artifact is not None:
        onnx_path = artifact.with_suffix(BY_NAME["onnx"].suffix)
        if onnx_path.is_file():
            return onnx_io(onnx_path)[1][1][1:]
        if meta.format == "torchscript":
            return _torchscript_output_dims(artifact, meta)
    raise EnfoldError(f"cannot tell the encoder's feature width for {artifact}: export the "
                      "encoder to ONNX beside it (the engine's own ONNX file) and retry")


def _torchscript_output_dims(artifact: Path, meta: Sidecar) -> list[int]:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.jit.load's deprecation notice, not the user's
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(artifact), map_location="cpu").eval()
    size = meta.img_size
    x = torch.zeros(meta.fixed_batch or 1, meta.in_chans, size, size)
    with torch.no_grad():
        return list(module(x).shape[1:])


def onnx_io(path: Path) -> tuple[tuple[str, list[int]], tuple[str, list[int]]]:
    """``((input name, shape), (output name, shape))`` of an ONNX graph; -1 for a free axis."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def shape(value: Any) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim]

    init = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init]
    return (inputs[0].name, shape(inputs[0])), (graph.output[0].name, shape(graph.output[0]))


def model_config(meta: Sidecar, out_dims: list[int], batch: tuple[int, int, int],
                 fmt: str | None = None, queue_delay_us: int = 5000,
                 name: str | None = None, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's Triton ``ModelConfig`` as JSON (field names as in ``model_config.proto``).

    ``batch`` is ``(min, preferred, max)``: ``max`` becomes ``max_batch_size`` and ``preferred``
    the dynamic batcher's preferred size. An artifact fixed to one batch size (a traced
    TorchScript restorer, ``fixed_batch``) gets ``max_batch_size: 0`` and its full shape instead.
    An output of one number per image is declared ``[1]`` and reshaped to the model's ``[]``,
    Triton's way of stating a scalar per batch row; so is a restorer's ``sigma`` input (the
    graph takes ``(B,)``, clients send ``[B, 1]``). A restorer's other inputs
    (:func:`extra_inputs`) follow the images in the graph's order, each named as the graph
    names it (positionally for TorchScript: ``sigma__1``). ``optional``: inputs the server
    fills in itself when a request leaves them out (``enfold serve`` estimates sigma), marked
    ``optional: true``; a Triton entry has none.
    """
    fmt = fmt or meta.format
    lo, opt, hi = batch
    in_name, out_name = tensor_names(replace(meta, format=fmt))
    in_dims = [meta.in_chans, meta.img_size, meta.img_size]
    output: dict[str, Any] = {"name": out_name, "data_type": "TYPE_FP32", "dims": list(out_dims)}
    if not out_dims:
        output.update(dims=[1], reshape={"shape": []})
    fixed = meta.fixed_batch
    # a format Triton does not load (a checkpoint that enfold serve runs) keeps its own name
    triton = TRITON.get(fmt) or TritonNames(f"enfold_{fmt}", "enfold", "")
    config: dict[str, Any] = {"name": name or entry_name(meta), "platform": triton.platform,
                              "backend": triton.backend}
    if fixed:
        config["max_batch_size"] = 0
        in_dims = [int(fixed), *in_dims]
        output["dims"] = [int(fixed), *out_dims]
        output.pop("reshape", None)
    else:
        if lo > 1:
            raise EnfoldError(f"the artifact's smallest batch is {lo}, and Triton sends any batch "
                              f"from 1 to max_batch_size: export with --batch 1:{opt}:{hi}")
        config["max_batch_size"] = int(hi)
    config["input"] = [{"name": in_name, "data_type": "TYPE_FP32", "dims": in_dims}]
    positional = triton.positional_names
    for index, extra in enumerate(extra_inputs(meta), start=1):
        dims = extra_input_dims(extra, meta)
        spec: dict[str, Any] = {"name": f"{extra}__{index}" if positional else extra,
                                "data_type": "TYPE_FP32"}
        if fixed:
            spec["dims"] = [int(fixed), *dims]
        elif dims:
            spec["dims"] = dims
        else:  # one value per image: [1] for Triton, the graph's own (B,) after the reshape
            spec.update(dims=[1], reshape={"shape": []})
        if extra in optional:
            spec["optional"] = True
        config["input"].append(spec)
    config["output"] = [output]
    if not fixed:
        config["dynamic_batching"] = {"preferred_batch_size": [int(opt)],
                                      "max_queue_delay_microseconds": int(queue_delay_us)}
    # a TensorRT engine runs on the GPU it was built for; the others go where Triton has room
    config["instance_group"] = [{"count": 1,
                                 "kind": "KIND_GPU" if triton.gpu_only else "KIND_AUTO"}]
    config["parameters"] = {key: {"string_value": json.dumps(value)}
                            for key, value in sorted(meta.to_dict().items())
                            if key not in PRIVATE_KEYS}
    return config


def batch_range(meta: Sidecar, batch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The batch range an artifact states (a TensorRT profile), else the export's ``--batch``."""
    profile = meta.batch_profile
    if profile:
        lo, opt, hi = (int(b) for b in profile)
        return lo, opt, hi
    return batch


# ----------------------------------------------------------------------------- config.pbtxt


def _quote(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if key in ENUM_FIELDS else _quote(value)
    raise TypeError(f"config field {key}: cannot print {type(value).__name__}")


def _message(fields: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in fields.items():
        if key == "parameters":  # a map<string, ModelParameter>: one entry per key
            for name, param in value.items():
                lines.append(f"{pad}parameters {{")
                lines.append(f"{pad}  key: {_quote(name)}")
                lines.append(f"{pad}  value {{")
                lines.extend(_message(param, indent + 2))
                lines.append(f"{pad}  }}")
                lines.append(f"{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.extend(_message(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, list):
            if value and isinstance(value[0], dict):
                lines.append(f"{pad}{key} [")
                for i, item in enumerate(value):
                    lines.append(f"{pad}  {{")
                    lines.extend(_message(item, indent + 2))
                    lines.append(f"{pad}  }}" + ("," if i < len(value) - 1 else ""))
                lines.append(f"{pad}]")
            else:  # an empty list stays visible: reshape { shape: [ ] } is a scalar per row
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]"
                             .replace("[  ]", "[ ]"))
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return lines


def to_pbtxt(config: dict[str, Any]) -> str:
    """``config`` (the JSON form of a ``ModelConfig``) in protobuf text format."""
    return "\n".join([MARKER, *_message(config, 0)]) + "\n"


# ----------------------------------------------------------------------------- the repository


def write_triton_entry(artifact: str | Path, repo: str | Path,
                       batch: tuple[int, int, int] = (1, 8, 32),
                       queue_delay_us: int = 5000) -> dict[str, str]:
    """Write ``repo/<name>/config.pbtxt`` and ``repo/<name>/1/model.<ext>`` for ``artifact``.

    Reads only the artifact's sidecar (and, for an encoder's width, its ONNX graph), so a
    TensorRT entry is written without TensorRT. An existing entry that enfold did not write is
    left alone: that is an error naming it.
    """
    from enfold.artifact.sidecar import read_sidecar
    from enfold.checkpoint.store import atomic_write_bytes

    artifact = Path(artifact)
    meta = read_sidecar(artifact)
    fmt = meta.format
    if fmt not in TRITON:
        raise EnfoldError(f"{artifact} is a {fmt} artifact; a Triton repository takes "
                          f"{', '.join(TRITON)} exports")
    config = model_config(meta, output_dims(meta, artifact), batch_range(meta, batch), fmt,
                          queue_delay_us)
    entry = Path(repo) / config["name"]
    config_path = entry / "config.pbtxt"
    if config_path.is_file() and not config_path.read_text().startswith(MARKER):
        raise EnfoldError(f"{config_path} exists and was not written by enfold; move it away or "
                          "choose another --triton-repo")
    model_path = entry / "1" / TRITON[fmt].model_file
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(f".{model_path.name}.tmp")
    shutil.copyfile(artifact, tmp)  # copied, not linked: the repository travels on its own
    tmp.replace(model_path)
    # this entry's earlier format
    for other in {t.model_file for t in TRITON.values()} - {model_path.name}:
        (model_path.parent / other).unlink(missing_ok=True)
    text = to_pbtxt(config)
    atomic_write_bytes(config_path, lambda f: f.write(text.encode()))
    return {"config": str(config_path), "model": str(model_path), "name": config["name"]}
