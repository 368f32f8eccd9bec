"""The learned peers (``model.restorer: direct_vit | dncnn``) exported like the energy restorer:
their one forward pass as the graph, the same inputs (images, sigma for a noise-level peer) and
sidecar fields, validated against PyTorch, run by ``enfold.runtime.load``; what a one-pass peer
cannot be asked for (more steps, grid shifts, the energy) is refused with the fix."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DIGITS_TINY, TINY, run_cli, train

from enfold.errors import EnfoldError, SidecarError

# a few real training steps, so the residual head has moved off its zero start
NOISE_LEVEL = [*TINY, "train.max_steps=4", "eval.every=0", "corrupt.tasks=[noise]",
               "corrupt.noise.sigma=0.02", "corrupt.noise.sigma_max=0.2",
               "model.noise_level_input=true"]
PEERS = ("direct_vit", "dncnn")


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    """Each peer's checkpoint with its validated ONNX and TorchScript restorers."""
    from enfold.export.export import export_artifact

    root = tmp_path_factory.mktemp("peer-export")
    out = {}
    for peer in PEERS:
        ckpt = train("pretrain", DIGITS_TINY, root / peer, [*NOISE_LEVEL,
                                                              f"model.restorer={peer}"])
        art = root / f"{peer}-art"
        out[peer] = {"ckpt": ckpt,
                     "onnx": export_artifact(str(ckpt), "restorer", "onnx", art, batch="1:4:8"),
                     "ts": export_artifact(str(ckpt), "restorer", "torchscript", art,
                                           batch="1:4:8")}
    return out


@pytest.mark.parametrize("peer", PEERS)
def test_a_peer_exports_its_one_pass_with_the_energy_restorers_inputs(peers, peer):
    import onnx

    for fmt in ("onnx", "ts"):
        report = peers[peer][fmt]["validation"]
        assert report["passed"] and report["max_abs_error"] <= report["tolerance"]
    side = json.loads(open(peers[peer]["onnx"]["sidecar"]).read())
    assert side["restorer"] == peer and side["steps"] == side["trained_steps"] == 1
    assert side["restorer_inputs"] == ["sigma"] and side["noise_ref"] > 0
    assert "step_sizes" not in side and "grid_shifts" not in side
    assert peers[peer]["onnx"]["artifact"].endswith("restorer-k1.onnx")
    graph = onnx.load(peers[peer]["onnx"]["artifact"]).graph
    assert [i.name for i in graph.input] == ["images", "sigma"]
    assert [o.name for o in graph.output] == ["restored"]
    # one forward pass: no input gradient, so no backward ops in the graph
    assert not [n for n in graph.node if "Grad" in n.op_type]
    card = (peers[peer]["onnx"]["artifact"].rsplit("/", 1)[0]) + "/README.md"
    assert f"learned peer `{peer}`" in open(card).read()


def test_enfold_validate_passes_on_an_exported_peer(peers):
    proc = run_cli("validate", peers["direct_vit"]["onnx"]["artifact"], "--checkpoint",
                   peers["direct_vit"]["ckpt"], "--batches", "1,4")
    assert proc.returncode == 0 and "passed: True" in proc.stdout


@pytest.mark.parametrize("peer", PEERS)
def test_the_runtime_runs_the_exported_peer_as_pytorch_does(peers, peer):
    from enfold.checkpoint.load import load_energy_model
    from enfold.data import denormalize, normalize
    from enfold.runtime import load

    model, cfg = load_energy_model(peers[peer]["ckpt"])
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.02, 0.05, 0.1, 0.15, 0.2])
    with torch.no_grad():
        want = denormalize(model.restore(normalize(x, cfg.data.mean, cfg.data.std),
                                         sigma=sigma), cfg.data.mean, cfg.data.std).clamp(0, 1)
    assert (want - x).abs().max() > 1e-3  # trained off the identity: the check can fail
    for fmt, backend in (("onnx", "onnxruntime"), ("ts", "torchscript")):
        session = load(peers[peer][fmt]["artifact"], backend=backend, device="cpu")
        assert session.restorer_inputs == ["sigma"]
        # the TorchScript restorer runs at its traced batch (4): the session pads and cuts
        got = session.restore(x, sigma=sigma.numpy())
        assert torch.allclose(got, want, atol=1e-4), (fmt, (got - want).abs().max())
        with pytest.raises(EnfoldError, match="noise level sigma"):
            session.raw("restorer", x)


def test_a_peer_refuses_steps_grid_shifts_and_the_energy_naming_the_fix(peers, tmp_path):
    ckpt = peers["dncnn"]["ckpt"]
    base = ["export", "--checkpoint", ckpt, "--format", "onnx", "--out", tmp_path / "out"]
    refused = {("--target", "restorer", "--steps", "3"): "drop --steps",
               ("--target", "restorer", "--grid-shifts", "4"): "drop --grid-shifts",
               ("--target", "energy"): "export --target restorer",
               ("--target", "encoder"): "export --target restorer"}
    for extra, fix in refused.items():
        proc = run_cli(*base, *extra, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "dncnn peer" in proc.stderr and fix in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_sidecar_claiming_a_peer_with_several_steps_is_refused(peers, tmp_path):
    from enfold.artifact.sidecar import Sidecar

    side = json.loads(open(peers["direct_vit"]["onnx"]["sidecar"]).read())
    Sidecar.from_dict(side)  # as written: fine
    with pytest.raises(SidecarError, match="one forward pass"):
        Sidecar.from_dict({**side, "steps": 3})
    with pytest.raises(SidecarError, match="restorer must name"):
        Sidecar.from_dict({**side, "restorer": 1})


def test_an_energy_restorer_records_its_kind(tmp_path):
    from enfold.artifact.targets import torch_target

    ckpt = train("pretrain", DIGITS_TINY, tmp_path / "energy",
                 [*NOISE_LEVEL, "train.max_steps=1"])
    meta = torch_target(ckpt, "restorer").metadata
    assert meta["restorer"] == "energy" and len(meta["step_sizes"]) == meta["steps"]


def test_the_descent_benchmark_times_an_exported_peer(peers, tmp_path):
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from descent import timing_report
    from onnx_timing import time_restorer

    timing = time_restorer(peers["dncnn"]["ckpt"], tmp_path / "onnx", batch=4, threads=1,
                           warmup=1, repeats=3)
    assert timing.restorer == "dncnn" and timing.steps == 1 and timing.img_size == 8
    assert timing.max_abs_error <= 1e-4 and timing.nodes > 0
    assert 0 < timing.ms_spread[0] <= timing.ms_per_image <= timing.ms_spread[1]
    text = timing_report("noise", 0, {"dncnn": timing}, 4, 1, 3, 1.0)
    assert "| dncnn | dncnn | 1 |" in text and "ms per image (ONNX Runtime, 1 thread)" in text
