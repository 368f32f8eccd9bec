"""Runtime: one inference API over PyTorch, TorchScript and ONNX Runtime; predict, restore, score
and bench from the CLI, on a digits-tiny model exported to every CPU format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli, train

from enfold.errors import EnfoldError
from enfold.export.export import export_artifact
from enfold.runtime import load
from enfold.runtime.images import decode_image, encode_png, tile, untile

FINETUNE_TINY = ROOT / "configs" / "finetune" / "digits-tiny.yaml"
CPU_BACKENDS = ("torch", "torchscript", "onnxruntime")


@pytest.fixture(scope="module")
def exported(digits_tiny_run, tmp_path_factory):
    """The 100-step digits-tiny model, a classifier fine-tuned from it, both exported to
    TorchScript and ONNX, and held-out digits written as PNG files."""
    from enfold.data.sources import DigitsSource

    root = tmp_path_factory.mktemp("runtime")
    pre = digits_tiny_run / "checkpoint-last.pt"
    ft = train("finetune", FINETUNE_TINY, root / "ft", ["train.max_steps=60", "eval.every=0"],
               pretrained=pre)
    art = root / "artifacts"
    for fmt in ("onnx", "torchscript"):
        export_artifact(str(pre), "restorer", fmt, art, steps=2, validate=False)
        export_artifact(str(ft), "classifier", fmt, art, validate=False)
    export_artifact(str(pre), "energy", "onnx", art, validate=False)
    images = root / "images"
    images.mkdir()
    source = DigitsSource("test", 16)
    for i in range(12):
        (images / f"digit{i:02d}.png").write_bytes(encode_png(source.image(i)))
    return {"pretrain": pre, "finetune": ft, "art": art, "images": images, "root": root}


def test_predict_gives_the_same_top1_on_every_backend(exported):
    labels = {}
    for backend in CPU_BACKENDS:
        proc = run_cli("predict", str(exported["images"]), "--model",
                       str(exported["art"] / "classifier.onnx"), "--backend", backend,
                       "--json", "--top-k", "3")
        results = json.loads(proc.stdout)
        assert len(results) == 12 and all(len(r["top_k"]) == 3 for r in results)
        assert f"on {backend}" in proc.stderr  # the session says which backend ran
        labels[backend] = [r["label"] for r in results]
    assert labels["torchscript"] == labels["torch"] == labels["onnxruntime"]
    assert set(labels["torch"]) <= {str(d) for d in range(10)}


def test_restore_writes_pngs_that_beat_the_degraded_input(exported, tmp_path):
    out = tmp_path / "restored"
    files = sorted(exported["images"].glob("*.png"))[:6]
    run_cli("restore", *map(str, files), "--model", str(exported["art"] / "restorer-k2.onnx"),
            "--task", "mask", "--out", str(out), "--seed", "3", "--simulate")
    report = json.loads((out / "restore.json").read_text())["results"]
    assert len(report) == 6
    for r in report:
        assert r["psnr_restored"] > r["psnr_input"], r
        restored = decode_image(r["restored"], 3)
        assert restored.shape == (3, 16, 16)
        panel = decode_image(r["panel"], 3)
        assert panel.shape[2] > 3 * panel.shape[1] - 1  # clean | degraded | restored, enlarged
    # the same seed gives the same corruption, so every backend restores the same pixels
    torch_out = tmp_path / "restored-torch"
    run_cli("restore", *map(str, files), "--model", str(exported["art"] / "restorer-k2.onnx"),
            "--task", "mask", "--out", str(torch_out), "--seed", "3", "--backend", "torch",
            "--simulate")
    again = json.loads((torch_out / "restore.json").read_text())["results"]
    for a, b in zip(report, again, strict=True):
        assert a["psnr_input"] == b["psnr_input"]
        assert a["psnr_restored"] == pytest.approx(b["psnr_restored"], abs=0.05)


def test_restore_tiles_a_large_image_and_keeps_its_size(exported, tmp_path):
    big = torch.rand(3, 37, 50, generator=torch.Generator().manual_seed(0))
    src = tmp_path / "big.png"
    src.write_bytes(encode_png(big))
    out = tmp_path / "out"
    run_cli("restore", str(src), "--model", str(exported["art"] / "restorer-k2.ts"), "--out",
            str(out), "--task", "noise")
    assert decode_image(out / "big.png", 3).shape == (3, 37, 50)
    degraded = tmp_path / "degraded"
    run_cli("restore", str(src), "--model", str(exported["art"] / "restorer-k2.onnx"), "--out",
            str(degraded))
    result = json.loads((degraded / "restore.json").read_text())["results"][0]
    assert "psnr_input" not in result and result["task"] == "mask"  # the restorer's own


def test_restore_keeps_the_pixels_the_mask_left_visible(exported):
    from enfold.data.sources import DigitsSource
    from enfold.runtime.restore import restore_image

    session = load(exported["art"] / "restorer-k2.onnx")
    img = DigitsSource("test", 16).image(0)
    kept = restore_image(session, img, "mask", seed=1, simulate=True)
    raw = restore_image(session, img, "mask", seed=1, simulate=True, keep_known=False)
    visible = (kept.weight == 0).expand_as(img)
    assert 0 < visible.sum() < img.numel()
    assert torch.equal(kept.restored[visible], img[visible])  # exact: taken from the input
    assert not torch.allclose(raw.restored[visible], img[visible], atol=1e-3)  # the step moved them
    assert torch.equal(kept.restored[~visible], raw.restored[~visible])  # the holes are the model's
    assert kept.psnr() == raw.psnr()  # PSNR is measured on the holes only


def test_tiles_stitch_back_exactly():
    img = torch.rand(3, 21, 34)
    tiles, layout = tile(img, 8)
    assert tiles.shape == (3 * 5, 3, 8, 8)
    assert torch.equal(untile(tiles, layout), img)


def test_score_gives_clean_digits_lower_energy_than_masked_ones(exported, tmp_path):
    from enfold.runtime.restore import task_corruption

    session = load(exported["pretrain"])
    corruption = task_corruption(session.metadata, "mask")
    masked = tmp_path / "masked"
    masked.mkdir()
    for path in sorted(exported["images"].glob("*.png")):
        img = decode_image(path, 3)
        (masked / path.name).write_bytes(
            encode_png(corruption(img, torch.Generator().manual_seed(1))[0]))
    model = str(exported["art"] / "energy.onnx")
    clean = json.loads(run_cli("score", str(exported["images"]), "-m", model, "--json").stdout)
    bad = json.loads(run_cli("score", str(masked), "-m", model, "--json").stdout)
    clean_e = np.mean([r["energy"] for r in clean])
    bad_e = np.mean([r["energy"] for r in bad])
    assert np.isfinite(clean_e) and clean_e < bad_e


def test_every_backend_returns_the_same_answer_for_the_same_array(exported):
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    outs = {b: load(exported["art"] / "restorer-k2.onnx", backend=b).restore(x)
            for b in CPU_BACKENDS}
    # the TorchScript restorer is traced at batch 8: the session pads 5 rows to 8 and drops 3
    for b in ("torchscript", "onnxruntime"):
        assert torch.allclose(outs[b], outs["torch"], atol=1e-4)
    probs = load(exported["art"] / "classifier.ts").classify(x.numpy())
    assert isinstance(probs, np.ndarray) and probs.shape == (5, 10)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_arrays_with_the_wrong_shape_or_dtype_get_a_clear_error(exported):
    session = load(exported["art"] / "classifier.onnx")
    with pytest.raises(EnfoldError, match="float32.*divide uint8 images by 255"):
        session.classify(np.zeros((1, 3, 16, 16), np.uint8))
    with pytest.raises(EnfoldError, match=r"\(B, 3, 16, 16\).*images\[None\]"):
        session.classify(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(EnfoldError, match=r"got \(2, 1, 16, 16\)"):
        session.classify(torch.zeros(2, 1, 16, 16))
    with pytest.raises(EnfoldError, match="serves classifier, not the restorer"):
        session.restore(np.zeros((1, 3, 16, 16), np.float32))


def test_unavailable_backends_and_providers_fail_clearly(exported):
    onnx_model = exported["art"] / "classifier.onnx"
    with pytest.raises(EnfoldError, match="CUDAExecutionProvider is not available"):
        load(onnx_model, backend="onnxruntime", provider="cuda")
    with pytest.raises(EnfoldError, match="unknown backend 'openvino'"):
        load(onnx_model, backend="openvino")
    with pytest.raises(EnfoldError, match="only the torch backend runs"):
        load(exported["pretrain"], backend="onnxruntime")
    with pytest.raises(EnfoldError, match="export it beside"):
        load(exported["art"] / "energy.onnx", backend="torchscript")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EnfoldError, match="pip install 'enfold\\[tensorrt\\]'"):
            load(onnx_model, backend="tensorrt", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(EnfoldError, match="no CUDA GPU"):
            load(exported["art"] / "classifier.ts", backend="torchscript", device="cuda")
    # the CLI says the same in one line and exits 2
    proc = run_cli("predict", str(exported["images"]), "-m", str(onnx_model), "--backend",
                   "onnxruntime", "--provider", "cuda", check=False)
    assert proc.returncode == 2 and "CUDAExecutionProvider" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_files_are_reported_after_the_readable_ones(exported, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((exported["images"] / "digit00.png").read_bytes())
    (folder / "broken.png").write_bytes(b"this is not a png")
    proc = run_cli("predict", str(folder), "-m", str(exported["art"] / "classifier.onnx"),
                   check=False)
    assert proc.returncode == 1
    assert "a.png:" in proc.stdout
    assert "broken.png" in proc.stderr and "not a readable image" in proc.stderr


def test_bench_prints_onnxruntime_vs_eager_for_restorer_and_classifier(exported, tmp_path):
    for name in ("restorer-k2.onnx", "classifier.onnx"):
        out = tmp_path / f"{name}.json"
        proc = run_cli("bench", "--model", str(exported["art"] / name), "--batch", "1,8",
                       "--seconds", "0.2", "--out", str(out))
        report = json.loads(out.read_text())
        rows = {(r["backend"], r["batch"]): r for r in report["rows"]}
        for batch in (1, 8):
            for backend in CPU_BACKENDS:  # the .ts sibling is found and measured too
                row = rows[(backend, batch)]
                assert row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"]
            assert rows[("torch", batch)]["speedup_vs_torch"] == 1.0
            assert rows[("onnxruntime", batch)]["speedup_vs_torch"] > 0
        assert "vs eager" in proc.stdout and "onnxruntime" in proc.stdout
        assert "tensorrt" in report["skipped"] or torch.cuda.is_available()


@pytest.mark.gpu
def test_cuda_backends_agree_with_the_cpu(exported):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = load(exported["art"] / "restorer-k2.onnx", backend="torch", device="cpu").restore(x)
    for backend in ("torch", "torchscript"):
        out = load(exported["art"] / "restorer-k2.onnx", backend=backend,
                   device="cuda").restore(x)
        assert torch.allclose(out, ref, atol=1e-3), backend
    from enfold.artifact.ort import ort_providers_available

    if "cuda" in ort_providers_available():
        session = load(exported["art"] / "restorer-k2.onnx", backend="onnxruntime",
                       provider="cuda")
        assert "CUDAExecutionProvider" in session.describe()
        assert torch.allclose(session.restore(x), ref, atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_serves_the_same_labels(exported, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU")
    export_artifact(str(exported["finetune"]), "classifier", "tensorrt", tmp_path,
                    batch="1:4:8", validate=False)
    engine = load(tmp_path / "classifier.engine", backend="tensorrt")
    x = torch.rand(11, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # 8 + 3 rows
    ref = load(exported["art"] / "classifier.onnx", backend="onnxruntime", device="cpu")
    assert torch.equal(engine.classify(x).argmax(1), ref.classify(x).argmax(1))
