"""``enfold export --triton-repo``: every generated ``config.pbtxt`` parses with Triton's own schema
(``model_config.proto`` as shipped in tritonclient) and names the tensors and shapes of the
graph it serves; TensorRT entries are written from the sidecar alone."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from enfold.artifact.sidecar import Sidecar, read_sidecar, write_sidecar
from enfold.errors import EnfoldError
from enfold.export.triton_repo import (
    MARKER,
    model_config,
    onnx_io,
    output_dims,
    to_pbtxt,
    write_triton_entry,
)

tritonclient = pytest.importorskip("tritonclient", reason="pip install 'tritonclient[http]'")
from google.protobuf import json_format, text_format  # noqa: E402  (protobuf comes with onnx)


def model_config_pb2():
    """Triton's ModelConfig schema, loaded alone: importing tritonclient.grpc needs grpcio."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMA = model_config_pb2()


def parse(config_path: Path):
    return text_format.Parse(config_path.read_text(), SCHEMA.ModelConfig())


@pytest.fixture(scope="module")
def exports(tiny_exports):
    """ONNX classifier and encoder; TorchScript classifier, restorer and energy (1:4:16)."""
    return tiny_exports


@pytest.mark.parametrize("target", ["classifier", "encoder"])
def test_onnx_entries_parse_and_match_the_graph(exports, tmp_path, target):
    artifact = exports["artifacts"][target]
    written = write_triton_entry(artifact, tmp_path, batch=(1, 4, 16))
    config = parse(Path(written["config"]))
    # the text and the JSON form (what enfold serve answers at /v2/models/NAME/config) agree
    meta = read_sidecar(artifact)
    as_json = model_config(meta, output_dims(meta, artifact), (1, 4, 16))
    assert config == json_format.ParseDict(as_json, SCHEMA.ModelConfig())
    assert config.name == artifact.stem == Path(written["config"]).parent.name
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert len(config.instance_group) == 1 and config.instance_group[0].count == 1
    (in_name, in_shape), (out_name, out_shape) = onnx_io(artifact)
    assert (config.input[0].name, [-1, *config.input[0].dims]) == (in_name, in_shape)
    assert config.input[0].data_type == SCHEMA.TYPE_FP32
    out = config.output[0]
    model_dims = list(out.reshape.shape) if out.HasField("reshape") else list(out.dims)
    assert (out.name, [-1, *model_dims]) == (out_name, out_shape)
    params = {k: json.loads(v.string_value) for k, v in config.parameters.items()}
    assert params["target"] == target and params["mean"] == list(meta.mean)
    assert "checkpoint" not in params  # a path on the exporting machine
    # the repository's model file is the artifact, and runs under the config's names and shapes
    import onnxruntime

    model_file = Path(written["model"])
    assert model_file.name == "model.onnx" and model_file.read_bytes() == artifact.read_bytes()
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    x = np.zeros((config.max_batch_size, *config.input[0].dims), np.float32)
    y = session.run([out.name], {config.input[0].name: x})[0]
    assert list(y.shape) == [config.max_batch_size, *model_dims]


def test_torchscript_entries(exports, tmp_path):
    classifier = write_triton_entry(exports["artifacts"]["classifier-ts"], tmp_path, (1, 4, 16))
    config = parse(Path(classifier["config"]))
    assert (config.platform, config.backend) == ("pytorch_libtorch", "pytorch")
    assert config.max_batch_size == 16
    # Triton's PyTorch backend addresses TorchScript tensors by position: <name>__<index>
    assert (config.input[0].name, config.output[0].name) == ("images__0", "logits__0")
    assert list(config.output[0].dims) == [10] and Path(classifier["model"]).name == "model.pt"
    module = torch.jit.load(classifier["model"])
    assert module(torch.zeros(3, *config.input[0].dims)).shape == (3, 10)
    # the traced restorer takes one batch size only: no batching axis, the full shape instead
    restorer = write_triton_entry(exports["artifacts"]["restorer-ts"], tmp_path, (1, 4, 16))
    config = parse(Path(restorer["config"]))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == list(config.output[0].dims) == [4, 3, 8, 8]
    # one energy per image: declared [1] for Triton, reshaped to the model's own (B,)
    energy = write_triton_entry(exports["artifacts"]["energy-ts"], tmp_path, (1, 4, 16))
    config = parse(Path(energy["config"]))
    out = config.output[0]
    assert (out.name, list(out.dims)) == ("energy__0", [1])
    assert out.HasField("reshape") and list(out.reshape.shape) == []
    module = torch.jit.load(energy["model"])
    assert module(torch.zeros(5, *config.input[0].dims)).shape == (5,)


def test_tensorrt_entry_from_the_sidecar_alone(exports, tmp_path, monkeypatch):
    """A TensorRT export is an engine beside the ONNX file it was built from; the entry needs
    neither TensorRT nor a GPU."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now fails
    folder = tmp_path / "trt"
    folder.mkdir()
    for target in ("classifier", "encoder"):
        onnx_file = exports["artifacts"][target]
        shutil.copy(onnx_file, folder / onnx_file.name)
        engine = folder / onnx_file.with_suffix(".engine").name
        engine.write_bytes(b"a serialized engine")  # copied, never parsed
        write_sidecar(engine, {**read_sidecar(onnx_file).to_dict(), "format": "tensorrt",
                               "batch_profile": [1, 2, 8]})
        written = write_triton_entry(engine, tmp_path / "repo", batch=(1, 4, 16))
        config = parse(Path(written["config"]))
        assert (config.platform, config.backend) == ("tensorrt_plan", "tensorrt")
        assert config.max_batch_size == 8  # the engine's profile, not the default
        assert list(config.dynamic_batching.preferred_batch_size) == [2]
        assert config.instance_group[0].kind == SCHEMA.ModelInstanceGroup.KIND_GPU
        assert Path(written["model"]).read_bytes() == b"a serialized engine"
        assert Path(written["model"]).name == "model.plan"
        (_, in_shape), (_, out_shape) = onnx_io(onnx_file)
        assert [-1, *config.input[0].dims] == in_shape
        assert [-1, *config.output[0].dims] == out_shape
    # Triton sends any batch from 1 up: an engine whose profile starts above 1 cannot serve
    write_sidecar(engine, {**read_sidecar(engine).to_dict(), "batch_profile": [2, 4, 8]})
    with pytest.raises(EnfoldError, match="--batch 1:4:8"):
        write_triton_entry(engine, tmp_path / "repo")


def test_entry_replacement_and_foreign_entries(exports, tmp_path):
    onnx_entry = write_triton_entry(exports["artifacts"]["classifier"], tmp_path)
    ts_entry = write_triton_entry(exports["artifacts"]["classifier-ts"], tmp_path)
    version = Path(ts_entry["model"]).parent
    assert sorted(p.name for p in version.iterdir()) == ["model.pt"]  # no stale model.onnx
    assert Path(onnx_entry["config"]).read_text().startswith(MARKER)
    handwritten = tmp_path / "energy" / "config.pbtxt"
    handwritten.parent.mkdir()
    handwritten.write_text('name: "energy"\nbackend: "python"\n')
    with pytest.raises(EnfoldError, match="not written by enfold"):
        write_triton_entry(exports["artifacts"]["energy-ts"], tmp_path)
    assert handwritten.read_text() == 'name: "energy"\nbackend: "python"\n'


def test_pbtxt_escapes_strings():
    meta = Sidecar("onnx", "classifier", 4, 1, (0.5,), (0.5,),
                   class_names=('say "hi"', "back\\slash", "new\nline", "ünï"))
    config = model_config(meta, [4], (1, 2, 4))
    parsed = text_format.Parse(to_pbtxt(config), SCHEMA.ModelConfig())
    assert json.loads(parsed.parameters["class_names"].string_value) == list(meta.class_names)


def test_cli_export_writes_repository_and_card(exports):
    root = exports["root"]
    out, repo = root / "cli-export", root / "cli-repo"
    result = run_cli(
        "export", "--checkpoint", str(exports["runs"]["finetune"]), "--target", "classifier",
        "--format", "torchscript", "--out", str(out), "--batch", "1:2:8",
        "--triton-repo", str(repo))
    assert "Triton entry" in result.stdout
    config = parse(repo / "classifier" / "config.pbtxt")
    assert config.max_batch_size == 8
    card = (out / "README.md").read_text()
    for section in ("## From", "### Model details", "### Training data", "### Recipe",
                    "### Measured numbers", "## Limits", "### Reproduce"):
        assert section in card
    report = json.loads((out / "classifier.ts.validation.json").read_text())
    assert f"max_abs_error {report['max_abs_error']:.4g}" in card
    metrics = [json.loads(line) for line in
               (exports["runs"]["finetune"].parent / "metrics.jsonl").read_text().splitlines()]
    top1 = [m["eval/top1"] for m in metrics if "eval/top1" in m][-1]
    assert f"| eval/top1 | {top1:.4g} |" in card
    assert "--target classifier --format torchscript" in card
