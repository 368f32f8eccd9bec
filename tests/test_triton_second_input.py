"""Triton repository entries for restorers with a second graph input (``sigma``, ``mask``):
every input is in ``config.pbtxt`` (parsed with Triton's own schema), named and shaped as the
graph takes it, sigma a scalar per batch row (``dims: [1]`` reshaped to ``[]``), and the copied
model file runs under the config's names and shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import json_format
from second_input_tiny import second_input_models
from test_triton_repo import SCHEMA, parse

from enfold.artifact.sidecar import Sidecar, read_sidecar
from enfold.export.triton_repo import model_config, output_dims, write_triton_entry
from enfold.runtime import load

FP32 = SCHEMA.TYPE_FP32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return second_input_models(tmp_path_factory)


def test_onnx_entry_declares_sigma_per_image_and_runs(models, tmp_path):
    import onnx
    import onnxruntime

    artifact = models["onnx"]
    written = write_triton_entry(artifact, tmp_path, batch=(1, 4, 8))
    config = parse(Path(written["config"]))
    meta = read_sidecar(artifact)
    # the text and the JSON form enfold serve derives its own from agree
    as_json = model_config(meta, output_dims(meta, artifact), (1, 4, 8))
    assert config == json_format.ParseDict(as_json, SCHEMA.ModelConfig())
    assert config.max_batch_size == 8
    graph = onnx.load(str(artifact), load_external_data=False).graph
    assert [i.name for i in config.input] == [i.name for i in graph.input] == ["images", "sigma"]
    images, sigma = config.input
    assert list(images.dims) == [3, 8, 8] and not images.HasField("reshape")
    # one noise level per image: clients send [B, 1], the graph takes (B,)
    assert sigma.data_type == FP32 and list(sigma.dims) == [1]
    assert sigma.HasField("reshape") and list(sigma.reshape.shape) == []
    assert not sigma.optional  # Triton runs the graph as it is: sigma must be sent
    assert 'reshape {\n      shape: [ ]\n    }' in Path(written["config"]).read_text()
    # the copied file runs with the config's names, each input reshaped as Triton would
    session = onnxruntime.InferenceSession(written["model"], providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, *images.dims), dtype=np.float32)
    s = np.float32([[0.03], [0.1], [0.15]])  # the client's [B, 1]
    mean, std = (np.float32(v).reshape(1, -1, 1, 1) for v in (meta.mean, meta.std))
    feed = {images.name: (x - mean) / std,
            sigma.name: s.reshape(-1, *sigma.reshape.shape)}
    out = session.run([config.output[0].name], feed)[0]
    expected = load(artifact, backend="onnxruntime", device="cpu").raw("restorer", x,
                                                                      sigma=s.reshape(-1))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_torchscript_entry_names_inputs_by_position_at_the_fixed_batch(models, tmp_path):
    written = write_triton_entry(models["ts"], tmp_path, batch=(1, 4, 8))
    config = parse(Path(written["config"]))
    assert (config.platform, config.backend) == ("pytorch_libtorch", "pytorch")
    assert config.max_batch_size == 0  # the trace's one batch size, in the dims
    assert [(i.name, list(i.dims)) for i in config.input] == [
        ("images__0", [4, 3, 8, 8]), ("sigma__1", [4])]
    assert not config.input[1].HasField("reshape")
    module = torch.jit.load(written["model"])
    out = module(torch.zeros(*config.input[0].dims), torch.full(list(config.input[1].dims), 0.1))
    assert list(out.shape) == list(config.output[0].dims) == [4, 3, 8, 8]


def test_mask_restorer_entries_list_the_mask(models, tmp_path):
    from enfold.export.export import export_artifact

    ts = export_artifact(str(models["mask"]), "restorer", "torchscript", tmp_path / "ts",
                         steps=1, batch="1:2:4", validate=False)["artifact"]
    config = parse(Path(write_triton_entry(ts, tmp_path / "repo")["config"]))
    assert [(i.name, list(i.dims)) for i in config.input] == [
        ("images__0", [2, 3, 8, 8]), ("mask__1", [2, 1, 8, 8])]
    module = torch.jit.load(str(Path(tmp_path / "repo" / "restorer-k1" / "1" / "model.pt")))
    assert module(torch.zeros(2, 3, 8, 8), torch.ones(2, 1, 8, 8)).shape == (2, 3, 8, 8)
    # both inputs, batched (ONNX and TensorRT name them as the graph does)
    meta = Sidecar("onnx", "restorer", 8, 3, (0.5,) * 3, (0.5,) * 3,
                   restorer_inputs=("sigma", "mask"))
    config = json_format.ParseDict(model_config(meta, [3, 8, 8], (1, 4, 16)),
                                   SCHEMA.ModelConfig())
    assert [(i.name, list(i.dims), i.HasField("reshape")) for i in config.input] == [
        ("images", [3, 8, 8], False), ("sigma", [1], True), ("mask", [1, 8, 8], False)]
    # a checkpoint's other targets take the images only
    for target in ("energy", "encoder"):
        other = Sidecar("onnx", target, 8, 3, (0.5,) * 3, (0.5,) * 3,
                        restorer_inputs=("sigma",))
        assert len(model_config(other, [], (1, 4, 16))["input"]) == 1
