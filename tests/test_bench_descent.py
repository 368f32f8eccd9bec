"""benchmarks/descent.py: the re-estimated rows give the first step the true sigma and every
later step the noise estimated in the image it starts from; the fixed rows never estimate."""

from __future__ import annotations

import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import descent  # noqa: E402

import enfold.corrupt.noise as noise_module  # noqa: E402
from enfold.config import load_config  # noqa: E402
from enfold.model import build_energy_model  # noqa: E402

NOISE_LEVEL = ["model.img_size=8", "model.patch_size=2", "model.depth=2", "model.embed_dim=32",
               "model.num_heads=2", "corrupt.tasks=[noise]", "corrupt.noise.sigma=0.05",
               "corrupt.noise.sigma_max=0.2", "model.noise_level_input=true", "model.steps=1"]


def test_reestimated_rows_estimate_before_every_later_step(monkeypatch):
    torch.manual_seed(0)
    cfg = load_config(None, NOISE_LEVEL)
    model = build_energy_model(cfg).eval()
    clean = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    view = (noisy, clean, torch.ones(2, 1, 8, 8), 0.1)
    calls: list[float] = []

    def fake_estimate(img: torch.Tensor) -> float:
        calls.append(float(img.std()))
        return 0.02

    monkeypatch.setattr(noise_module, "estimate_sigma", fake_estimate)
    fixed = descent.psnr_by_k(model, cfg, view)
    assert calls == []
    again = descent.psnr_by_k(model, cfg, view, reestimate=True)
    # restore(x, k) for each K: k - 1 later steps, one estimate per image each
    assert len(calls) == 2 * sum(k - 1 for k in descent.KS)
    assert again[0] == fixed[0]  # K=1 is the given sigma in both
    assert again[1:] != fixed[1:]  # the later steps were told another level


def test_each_view_is_anchored_by_its_input_and_the_tasks_classical_method(tmp_path):
    # smooth images: the classical methods must beat the degraded input by a clear margin
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    clean = torch.stack([torch.stack([xx, yy, (xx + yy) / 2])] * 2)  # (2, 3, 16, 16)
    holes = torch.zeros(2, 1, 16, 16)
    holes[:, :, 5:9, 3:12] = 1  # a free-form-ish bar, not on a patch grid
    mask_view = (clean * (1 - holes), clean, holes, None)
    got = descent.anchor_psnr("mask-freeform", mask_view, tmp_path)
    assert set(got) == {"input", "biharmonic"} and got["biharmonic"] > got["input"] + 10

    small = torch.nn.functional.interpolate(clean, size=(4, 4), mode="area")
    up = torch.nn.functional.interpolate(small, size=(16, 16), mode="nearest")
    sr_view = (up, clean, torch.ones(2, 1, 16, 16), None)
    got = descent.anchor_psnr("sr4", sr_view, tmp_path)
    assert set(got) == {"input", "bicubic"} and got["bicubic"] > got["input"]
    assert set(descent.anchor_psnr("gray", sr_view, tmp_path)) == {"input"}


def test_mask_views_pass_their_holes_to_the_restorer():
    # free-form holes cannot be found by their fill value: the scoring must hand them over
    cfg = load_config(None, [*NOISE_LEVEL[:5], "corrupt.tasks=[mask]", "model.consistency=true",
                             "model.steps=1"])
    model = build_energy_model(cfg).eval()
    clean = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    holes = torch.zeros(2, 1, 8, 8)
    holes[:, :, 1:4, 2:7] = 1
    corrupted = clean * (1 - holes) + 0.3 * holes  # not the fill value: only the weight tells
    seen = []
    real = model.restore_steps

    def spy(x, steps=None, *args, weight=None, **kw):
        seen.append(weight)
        return real(x, steps, *args, weight=weight, **kw)

    model.restore_steps = spy
    descent.psnr_by_k(model, cfg, (corrupted, clean, holes, None))
    assert len(seen) == len(descent.KS) and all(w is holes for w in seen)


def test_a_run_of_added_arms_is_headed_by_its_arms():
    # --section writes a table of its own; its heading must not repeat the full table's
    curves = {"dncnn_small": {"v": [[20.0] * len(descent.KS)] * 2}}
    args = ("noise", ["dncnn_small"], [0, 1], {"dncnn_small": 5}, curves,
            {"dncnn_small": [1.0, 1.0]}, 60.0, 4, {"v": {"input": 19.0}})
    full = descent.report(*args)
    added = descent.report(*args, heading="noise: dncnn_small").splitlines()[0]
    assert full.splitlines()[0].endswith("(noise)") and added.endswith("(noise: dncnn_small)")
    assert "| dncnn_small |" in full and "| input |" in full
