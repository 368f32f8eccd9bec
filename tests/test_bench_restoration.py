"""benchmarks/restoration.py: the goals table is computed from the measurements, the ablation
list builds valid configs."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import restoration  # noqa: E402
import restoration_runs  # noqa: E402


def _rows(task: str, **psnr: float | None) -> list[dict]:
    return [{"task": task, "method": m, "psnr": v} for m, v in psnr.items()]


def _all_rows(**noise: float | None) -> list[dict]:
    return [*_rows("noise", **noise), *_rows("sr", input=25.0, enfold=28.5, bicubic=27.0),
            *_rows("sr4", input=20.0, enfold=20.5, bicubic=21.0),
            *_rows("mask", input=10.0, enfold=9.0, biharmonic=5.0),
            *_rows("gray", input=16.0, enfold=19.5), *_rows("shuffle", input=12.0, enfold=14.0)]


def test_goals_follow_the_measurements():
    goals = {g["task"]: g for g in restoration.goal_rows(
        _all_rows(input=20.0, enfold=31.5, tv=29.0, nl_means=30.0, bm3d=None))}
    # BM3D not installed: the best classical anchor is the best of those measured
    assert goals["noise"]["anchor"] == "nl_means" and goals["noise"]["met"]
    assert abs(goals["noise"]["gap"] - 0.5) < 1e-9
    assert goals["sr"]["met"] and not goals["sr4"]["met"]
    assert abs(goals["sr4"]["gap"] - (20.5 - 22.0)) < 1e-9
    # never below the degraded input, even when the classical anchor is worse than it
    assert goals["mask"]["goal"] == 10.0 and not goals["mask"]["met"]
    assert goals["gray"]["met"] and not goals["shuffle"]["met"]


def test_ablations_build_configs():
    names = set()
    for ab in restoration.ABLATIONS:
        cfg = restoration.task_config(ab.task, [*ab.overrides, "train.max_steps=5"])
        assert cfg.train.max_steps == 5 and ab.dirname not in names
        names.add(ab.dirname)
        assert set(ab.scored or (ab.task,)) <= set(restoration.TASKS)
    mixed = restoration.task_config("mixed", restoration.ABLATIONS[-1].overrides)
    assert sorted(mixed.corrupt.tasks) == sorted(restoration.ALL)



def test_step_scale_calibration_picks_the_best_factor_and_restores_the_model(monkeypatch):
    import math

    import torch

    crops = torch.rand(8, 3, 8, 8)
    monkeypatch.setattr(restoration_runs, "training_crops", lambda cfg, count: crops)
    model = torch.nn.Module()
    model.log_step_sizes = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    before = model.log_step_sizes.detach().clone()

    def restore(model_, cfg, corrupted, weight):
        # the error grows with the distance of the first step size from exp(0.3) * 1.2
        off = abs(float(model_.log_step_sizes[0]) - (0.3 + math.log(1.2)))
        return crops + (0.01 + off) * torch.ones_like(crops)

    monkeypatch.setattr(restoration_runs, "restore_torch", restore)
    scale = restoration.calibrate_step_scale(model, restoration.task_config("noise"), "noise")
    assert scale == 1.2
    assert torch.equal(model.log_step_sizes.detach(), before)
    assert restoration.ABLATIONS[-1].per_task_steps


def _ablation(task: str, variant: str, psnr: float, trained: str | None = None) -> dict:
    return {"task": task, "variant": variant, "psnr": psnr, "trained": trained or task}


def test_seed_table_groups_seeds_and_compares_seed_by_seed():
    results = [_ablation("noise", "600 steps", 30.0), _ablation("noise", "600 steps, seed 1", 30.2),
               _ablation("noise", "600 steps, seed 2", 29.9),
               _ablation("noise", "linear energy head", 30.5),
               _ablation("noise", "linear energy head, seed 1", 30.3),
               _ablation("noise", "linear energy head, seed 2", 30.6),
               _ablation("noise", "L1 loss", 31.0),  # one seed: no group
               _ablation("sr", "one model", 20.0, trained="mixed"),
               _ablation("sr", "one model, seed 1", 21.0, trained="mixed")]
    groups = restoration.seed_groups(results)
    assert groups == {("noise", "600 steps"): {0: 30.0, 1: 30.2, 2: 29.9},
                      ("noise", "linear energy head"): {0: 30.5, 1: 30.3, 2: 30.6}}
    rows = restoration.seed_table(results)
    linear = next(r for r in rows if "linear energy head" in r)
    # per-seed differences +0.5, +0.1, +0.7: mean +0.43, from +0.10 to +0.70
    assert "| 30.47 |" in linear and "+0.43 (+0.10 - +0.70; 3 seeds)" in linear
    baseline = next(r for r in rows if "| 600 steps |" in r)
    assert baseline.endswith("| - |")


def test_seed_zero_of_the_shipped_recipe_is_the_shipped_restorer():
    shipped = [{**_ablation("gray", f"{restoration.SHIPPED}, seed {s}", v), "shipped_psnr": 22.0}
               for s, v in ((1, 22.2), (2, 21.9))]
    off = [_ablation("gray", "consistency off", 22.5),
           _ablation("gray", "consistency off, seed 1", 22.3)]
    groups = restoration.seed_groups([*shipped, *off])
    assert groups[("gray", restoration.SHIPPED)] == {1: 22.2, 0: 22.0, 2: 21.9}
    row = next(r for r in restoration.seed_table([*shipped, *off]) if "consistency off" in r)
    # against the shipped recipe seed by seed: +0.5 (seed 0), +0.1 (seed 1)
    assert "+0.30 (+0.10 - +0.50; 2 seeds)" in row
