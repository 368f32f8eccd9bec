"""Export: ONNX (fp32, fp16), TorchScript and the TensorRT path, validated against PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch
from conftest import run_cli

from enfold.export.export import export_artifact
from enfold.export.graphs import build_spec
from enfold.export.validate import ValidationError, check_onnx_graph, heldout_inputs


@pytest.fixture(scope="module")
def checkpoints(tiny_runs):
    """The session's tiny pretrained energy ViT and the classifier fine-tuned from it."""
    return {"pretrain": str(tiny_runs["pretrain"]), "finetune": str(tiny_runs["finetune"])}


def test_restorer_onnx_dynamic_batch_matches_pytorch_and_grows_with_k(checkpoints, tmp_path):
    result = export_artifact(checkpoints["pretrain"], "restorer", "onnx", tmp_path, steps=2)
    report = result["validation"]
    assert report["passed"] and set(report["max_abs_by_batch"]) == {"1", "3", "8"}
    assert max(report["max_abs_by_batch"].values()) <= 1e-4
    assert report["max_abs_update_error"] <= 1e-4
    model = onnx.load(result["artifact"])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 8, 8]
    assert "LayerNormalization" in report["onnx_ops"]
    meta = json.loads(open(result["sidecar"]).read())
    assert meta["steps"] == 2 and len(meta["step_sizes"]) == 2 and meta["task"] == "mask"
    assert len(meta["checkpoint_sha256"]) == 64 and meta["mean"] == [0.5, 0.5, 0.5]
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["steps"] == 2 and props["opset"] >= 17
    one = export_artifact(checkpoints["pretrain"], "restorer", "onnx", tmp_path / "k1", steps=1,
                          validate=False)
    three = export_artifact(checkpoints["pretrain"], "restorer", "onnx", tmp_path / "k3",
                            steps=3, validate=False)
    nodes = [len(onnx.load(r["artifact"]).graph.node) for r in (one, result, three)]
    # every step adds its forward and its input-gradient ops: linear growth in K
    assert nodes[0] < nodes[1] < nodes[2]
    assert nodes[2] - nodes[1] == pytest.approx(nodes[1] - nodes[0], rel=0.05)


def test_restorer_card_reports_psnr_for_each_k_and_the_best(checkpoints, tmp_path):
    """The validation sweeps K = 1 .. 4 on its held-out images in PyTorch: the exported K's
    entry is the validation's own PyTorch PSNR, the best K is the highest, and the card says
    both."""
    result = export_artifact(checkpoints["pretrain"], "restorer", "onnx", tmp_path, steps=2)
    report = result["validation"]
    by_k = report["psnr_pytorch_by_steps"]
    assert list(by_k) == ["1", "2", "3", "4"]
    assert by_k["2"] == pytest.approx(report["psnr_pytorch_vs_clean"], abs=1e-6)
    assert by_k[str(report["best_steps"])] == max(by_k.values())
    card = (tmp_path / "README.md").read_text()
    assert f"best K = {report['best_steps']}" in card and "this export has K = 2" in card
    assert f"K=4 {by_k['4']:.2f}" in card


def test_grid_shifted_restorer_is_validated_against_the_same_energy(checkpoints, tmp_path):
    from enfold.errors import EnfoldError
    from enfold.export.validate import validate_artifact

    pre = checkpoints["pretrain"]
    result = export_artifact(pre, "restorer", "torchscript", tmp_path, grid_shifts=4,
                             validate=False)
    assert result["artifact"].endswith("restorer-k2-g4.ts")
    assert validate_artifact(result["artifact"], pre, batches=(1, 3))["passed"]
    sidecar = tmp_path / "restorer-k2-g4.ts.json"
    meta = json.loads(sidecar.read_text())
    assert meta["grid_shifts"] == 4
    # the sidecar says which energy the graph holds: claiming one grid fails validation
    meta["grid_shifts"] = 1
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValidationError, match="grid_shifts|differs from PyTorch"):
        validate_artifact(result["artifact"], pre, batches=(1, 3))
    with pytest.raises(EnfoldError, match="restorer and energy targets"):
        export_artifact(checkpoints["finetune"], "classifier", "onnx", tmp_path / "c",
                        grid_shifts=4)


def test_step_decay_shrinks_the_steps_beyond_the_trained_k(checkpoints, tmp_path):
    """``--step-decay d``: each step beyond the trained K (2 here) is d times the one before,
    baked into the graph, recorded in the sidecar and the card, and validated against PyTorch
    with the same decay; a sidecar that hides it fails validation."""
    from enfold.errors import EnfoldError
    from enfold.export.validate import validate_artifact

    pre = checkpoints["pretrain"]
    result = export_artifact(pre, "restorer", "onnx", tmp_path, steps=4, step_decay=0.5)
    assert result["artifact"].endswith("restorer-k4-d0.5.onnx")
    assert result["validation"]["passed"]
    sidecar = tmp_path / "restorer-k4-d0.5.onnx.json"
    meta = json.loads(sidecar.read_text())
    a = meta["step_sizes"]
    assert meta["step_decay"] == 0.5 and meta["trained_steps"] == 2
    assert a[2] == pytest.approx(a[1] * 0.5) and a[3] == pytest.approx(a[1] * 0.25)
    plain = build_spec(pre, "restorer", 4, trace=False).metadata
    assert "step_decay" not in plain and plain["step_sizes"][3] == pytest.approx(a[1])
    card = (tmp_path / "README.md").read_text()
    assert "0.5 times the one before" in card and "--step-decay 0.5" in card
    meta.pop("step_decay")  # the graph's decay no longer declared
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(EnfoldError, match="disagrees .* on step_decay"):
        validate_artifact(result["artifact"], pre, batches=(1, 3))
    for bad in (0.0, 1.5):
        with pytest.raises(EnfoldError, match="step-decay must be in"):
            export_artifact(pre, "restorer", "onnx", tmp_path / "bad", steps=4, step_decay=bad)
    with pytest.raises(EnfoldError, match="restorer target"):
        export_artifact(checkpoints["pretrain"], "energy", "onnx", tmp_path / "e",
                        step_decay=0.5)


def test_classifier_onnx_gives_identical_top1_labels(checkpoints, tmp_path):
    report = export_artifact(checkpoints["finetune"], "classifier", "onnx", tmp_path)["validation"]
    assert report["top1_agreement"] == 1.0 and report["max_abs_error"] <= 1e-4
    meta = json.loads((tmp_path / "classifier.onnx.json").read_text())
    assert meta["class_names"] == [str(i) for i in range(10)]


@pytest.mark.parametrize("target", ["restorer", "classifier"])
def test_fp16_onnx_within_documented_tolerance(checkpoints, tmp_path, target):
    ckpt = checkpoints["pretrain" if target == "restorer" else "finetune"]
    result = export_artifact(ckpt, target, "onnx", tmp_path, precision="fp16")
    report = result["validation"]
    assert report["passed"] and report["precision"] == "fp16"
    model = onnx.load(result["artifact"])
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O
    types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types  # the internals really are fp16


def test_torchscript_loads_in_a_fresh_process_without_enfold(checkpoints, tmp_path):
    """Classifier, encoder and restorer: each validated on export, then all three run in one
    fresh interpreter that never imports enfold (the process boundary is the subject)."""
    cases = []
    for target in ("classifier", "encoder", "restorer"):
        ckpt = checkpoints["pretrain" if target == "restorer" else "finetune"]
        result = export_artifact(ckpt, target, "torchscript", tmp_path / target, batch="1:4:8")
        assert result["validation"]["passed"], target
        spec = build_spec(ckpt, target)
        (inputs, _, _), _ = heldout_inputs(ckpt, spec.target, 4, spec.metadata.get("task"))
        with torch.no_grad():
            expected = spec.reference(inputs)
        torch.save({"x": inputs, "y": expected}, tmp_path / f"{target}-io.pt")
        cases.append((target, result["artifact"], str(tmp_path / f"{target}-io.pt")))
    probe = (
        "import sys, torch\n"
        f"for target, artifact, io in {cases!r}:\n"
        "    m = torch.jit.load(artifact)\n"
        "    io = torch.load(io)\n"
        "    print(target, (m(io['x']) - io['y']).abs().max().item())\n"
        "assert not any(k.startswith('enfold') for k in sys.modules), 'enfold was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    errors = dict(line.split() for line in out.stdout.strip().splitlines())
    assert set(errors) == {"classifier", "encoder", "restorer"}
    assert all(float(err) <= 1e-4 for err in errors.values()), errors


def test_restorer_graphs_follow_the_input_device(checkpoints, tmp_path):
    # A restorer traced on the CPU once pinned the zeros of its input gradient to the CPU and
    # failed on a GPU (seen on an H200). The meta device stands in for the GPU here.
    spec = build_spec(checkpoints["pretrain"], "restorer", steps=2)
    x = torch.zeros(3, spec.in_chans, spec.img_size, spec.img_size, device="meta")
    assert spec.module.to("meta")(x).device.type == "meta"
    result = export_artifact(checkpoints["pretrain"], "restorer", "torchscript", tmp_path,
                             batch="1:4:8", validate=False)
    code = []
    for _, module in torch.jit.load(result["artifact"]).named_modules():
        try:
            code.append(module.code)
        except RuntimeError:  # a submodule without a forward of its own
            pass
    assert "new_full" in "".join(code) and 'device("cpu")' not in "".join(code)


def test_tensorrt_without_tensorrt_names_the_missing_package(checkpoints, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    proc = run_cli("export", "--checkpoint", checkpoints["finetune"], "--target", "classifier",
                   "--format", "tensorrt", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2
    assert "TensorRT is not installed" in proc.stderr and "tensorrt" in proc.stderr


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_builds_and_matches_pytorch(checkpoints, tmp_path, precision):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU")
    for target, ckpt in (("classifier", "finetune"), ("restorer", "pretrain")):
        result = export_artifact(checkpoints[ckpt], target, "tensorrt", tmp_path, batch="1:4:8",
                                 precision=precision)
        assert result["validation"]["passed"]


def test_onnx_op_outside_the_tensorrt_allow_list_fails(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Det", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 2])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(ValidationError, match="allow-list.*Det"):
        check_onnx_graph(path)


def test_validate_cli_fails_beyond_tolerance(checkpoints, tmp_path):
    export_artifact(checkpoints["pretrain"], "energy", "onnx", tmp_path, validate=False)
    ok = run_cli("validate", str(tmp_path / "energy.onnx"), "--checkpoint",
                 checkpoints["pretrain"])
    assert "passed: True" in ok.stdout
    bad = run_cli("validate", str(tmp_path / "energy.onnx"), "--checkpoint",
                  checkpoints["pretrain"], "--tolerance", "1e-12", check=False)
    assert bad.returncode == 2 and "differs from PyTorch" in bad.stderr


def test_validation_runs_the_artifact_through_the_runtime_session(checkpoints, tmp_path,
                                                                  monkeypatch):
    """Validation opens the artifact with the session enfold.runtime.load uses, so a bug in
    that session's pre-processing (here: normalisation forgotten) fails validation."""
    import numpy as np

    from enfold.artifact.session import InferenceSession
    from enfold.export.validate import validate_artifact

    ckpt = checkpoints["finetune"]
    artifact = export_artifact(ckpt, "classifier", "onnx", tmp_path, validate=False)["artifact"]
    assert validate_artifact(artifact, ckpt, batches=(1, 3))["passed"]

    def forgets_to_normalise(self, images):
        return np.ascontiguousarray(np.asarray(images), dtype=np.float32)

    monkeypatch.setattr(InferenceSession, "_check", forgets_to_normalise)
    with pytest.raises(ValidationError, match="differs from PyTorch"):
        validate_artifact(artifact, ckpt, batches=(1, 3))
