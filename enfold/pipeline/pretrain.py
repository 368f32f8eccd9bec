"""The pretrain stage: energy ViT + pretext tasks + held-out restoration eval -> shared core."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

from enfold.config import Config
from enfold.corrupt import CorruptionContext, build_corruption, build_tasks
from enfold.data import CorruptedDataset, build_source, build_train_loader
from enfold.errors import ConfigError
from enfold.model import EnergyViT, build_energy_model
from enfold.pipeline.distributed import DistInfo, init_distributed, shutdown
from enfold.pipeline.knn import KnnMonitor
from enfold.pipeline.restoration_eval import evaluate_restoration
from enfold.pipeline.run_lock import run_lock
from enfold.pipeline.trainer import StageParts, fit


def describe(model: EnergyViT) -> dict[str, list[float]]:
    """The learned step sizes, shown in the progress bar and the log."""
    if not isinstance(model, EnergyViT):  # a learned peer takes no steps
        return {}
    return {"step_sizes": [round(a, 5) for a in model.step_sizes().tolist()]}


def build_pretrain_parts(cfg: Config, out_dir: Path, dist: DistInfo) -> StageParts:
    """Build the model, data and evaluation of the pretrain stage from the config."""
    if cfg.train.grad_checkpointing and cfg.train.compile:
        raise ConfigError(
            "train.grad_checkpointing needs eager mode: torch.func.grad (used under "
            "torch.compile) does not support activation checkpointing. Set train.compile=false "
            "(or pass --no-compile), or turn checkpointing off."
        )
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_energy_model(cfg)
    context = CorruptionContext.from_config(cfg)
    corruption = build_corruption(cfg.corrupt, context)
    train_source = build_source(cfg.data.source, "train", cfg.model, cfg.data)
    train_set = CorruptedDataset(train_source, corruption, cfg.data.mean, cfg.data.std,
                                 seed=cfg.train.seed, augment=True)
    loader = partial(
        _loader, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
        num_replicas=dist.world_size, rank=dist.rank, seed=cfg.train.seed,
    )
    evaluate = None
    if dist.is_main:
        heldout = build_source(cfg.data.source, "heldout", cfg.model, cfg.data,
                               heldout_count=cfg.eval.num_images)
        tasks = build_tasks(cfg.corrupt, context)
        knn = KnnMonitor(cfg, dist.device) if cfg.eval.knn else None

        def evaluate(m: EnergyViT, step: int) -> dict[str, float]:
            grids = {t: out_dir / "grids" / f"step{step:06d}-{t}.png" for t in tasks}
            metrics = evaluate_restoration(m, tasks, heldout, cfg.data.mean, cfg.data.std,
                                           cfg.eval, dist.device, grids)
            if knn is not None:
                with torch.no_grad():
                    metrics["eval/knn_top1"] = knn(m.pooled_features)
            return metrics

    return StageParts(stage="pretrain", model=model, train_dataset=train_set,
                      build_loader=loader, evaluate=evaluate, describe=describe)


def _loader(dataset, start_sample: int, **kw):
    return build_train_loader(dataset, start_sample=start_sample, **kw)


def run_pretrain(cfg: Config, out_dir: str | Path, resume: bool = False) -> Path:
    """Pretrain an energy ViT as the config says; returns the last checkpoint's path."""
    dist = init_distributed(cfg.train.device)
    try:
        # one run per folder: rank 0 holds OUT/.lock until the run ends
        with run_lock(out_dir) if dist.is_main else nullcontext():
            parts = build_pretrain_parts(cfg, Path(out_dir), dist)
            return fit(cfg, parts, out_dir, dist, resume=resume)
    finally:
        shutdown(dist)
