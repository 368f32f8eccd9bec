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
