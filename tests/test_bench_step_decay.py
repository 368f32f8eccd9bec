"""benchmarks/step_decay.py: K = 1 .. max from one run of steps equals K separate restorations,
the decay changes only the steps beyond the trained K, and the table reads the curve right."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import step_decay  # noqa: E402

from enfold.config import load_config  # noqa: E402
from enfold.data import denormalize, normalize  # noqa: E402
from enfold.metrics import region_psnr  # noqa: E402
from enfold.model import build_energy_model  # noqa: E402

TINY = ["model.img_size=8", "model.patch_size=2", "model.depth=2", "model.embed_dim=32",
        "model.num_heads=2", "corrupt.tasks=[noise]", "model.steps=2"]


def test_psnr_by_steps_matches_separate_restorations_and_decays_only_extra_steps():
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    model = build_energy_model(cfg).eval()
    clean = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    weight = torch.ones(3, 1, 8, 8)
    full = step_decay.psnr_by_steps(model, cfg, noisy, clean, weight, {}, 4, 1.0)
    x = normalize(noisy, cfg.data.mean, cfg.data.std)
    for k in (1, 3):
        out = denormalize(model.restore(x, k).detach(), cfg.data.mean, cfg.data.std).clamp(0, 1)
        assert full[k - 1] == pytest.approx(float(region_psnr(out, clean, weight).mean()),
                                            abs=1e-4)
    shrunk = step_decay.psnr_by_steps(model, cfg, noisy, clean, weight, {}, 4, 0.25)
    assert shrunk[:2] == pytest.approx(full[:2], abs=1e-6)  # the trained K = 2 steps
    assert shrunk[2:] != pytest.approx(full[2:], abs=1e-6)
    assert float(model.step_sizes(4)[3]) == pytest.approx(float(model.step_sizes(2)[1]) * 0.25 ** 2)


def test_table_says_best_k_and_whether_the_curve_never_falls():
    results = [{"task": "gray", "run": "r", "trained_k": 1, "images": 3,
                "by_decay": {"1": [20.0, 20.5, 19.0, 18.0], "0.25": [20.0, 20.2, 20.3, 20.3]}}]
    rows = step_decay.table(results, 4)[2:]
    assert rows[0].endswith("| 2 | no |") and rows[1].endswith("| 3 | yes |")
