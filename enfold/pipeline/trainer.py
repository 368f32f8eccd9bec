"""The shared training core: every stage builds its parts and calls :func:`fit`.

The loop knows nothing about how a loss is made: the stage's model returns ``(loss, parts)`` from
``forward(*batch)``. The core owns optimisation (AdamW, warmup + cosine, accumulation, clipping,
bf16), ``torch.compile``, DDP, logging, evaluation hooks, atomic checkpoints and resume.

Determinism: the data stream position and every random draw are functions of (seed, rank, step),
so a run resumed from ``checkpoint-last.pt`` continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from enfold.checkpoint.store import (
    LAST,
    copy_checkpoint,
    library_versions,
    load_checkpoint,
    save_checkpoint,
    snapshot_path,
)
from enfold.config import Config, TrainConfig, config_from_checkpoint, save_config, to_dict
from enfold.errors import ConfigError, EnfoldError, NonFiniteLossError
from enfold.pipeline.distributed import DistInfo, all_true, barrier
from enfold.pipeline.progress import MetricsLog, Progress
from enfold.pipeline.schedule import lr_at, scaled_floor, scaled_lr

# names of 1-D or embedding parameters that, as in MAE and timm, get no weight decay
_NO_DECAY_SUFFIXES = ("pos_embed", "cls_token", "reg_token", "dist_token", "log_step_sizes")


@dataclass
class StageParts:
    """What a stage hands to the core."""

    stage: str  # "pretrain", "finetune", ...
    model: nn.Module  # forward(*batch) -> (loss, {name: detached tensor})
    train_dataset: torch.utils.data.Dataset  # indexed by (epoch, index) keys
    build_loader: Callable[..., Any]  # (dataset, start_sample) -> iterable of batches
    evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None  # rank 0 only
    describe: Callable[[nn.Module], dict[str, Any]] | None = None  # extra fields for the log
    extra_state: dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint
    # (model, weight_decay) -> optimizer groups; a group's "lr_scale" multiplies the lr
    param_groups: Callable[[nn.Module, float], list[dict]] | None = None
    # applied to each batch on the device before the model (e.g. mixup), seeded per step
    batch_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None


def step_seed(seed: int, rank: int, step: int) -> int:
    """A well-mixed seed for one (run seed, rank, step) triple."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; none on biases, norms, embeddings and step sizes."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(_NO_DECAY_SUFFIXES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _model_fingerprint(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


def write_checkpoint(path: Path, *, stage: str, step: int, model_state: dict[str, Any],
                     cfg: Config, optimizer_state: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None) -> None:
    """Write a stage checkpoint in the one layout every loader reads: stage, step, model
    weights, optimizer state (when resumable), resolved config, library versions, stage extras."""
    payload: dict[str, Any] = {"stage": stage, "step": step, "model": model_state}
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    payload.update(config=to_dict(cfg), versions=library_versions(), **(extra or {}))
    save_checkpoint(path, payload)


def _check_train(tc: TrainConfig) -> None:
    """Training numbers that would silently train nothing or diverge: one clear error each."""
    if tc.max_steps < 1:
        raise ConfigError(f"train.max_steps (--max-steps) must be at least 1, got {tc.max_steps}")
    for key in ("base_lr", "min_lr", "weight_decay"):
        value = getattr(tc, key)
        low_ok = value > 0 if key == "base_lr" else value >= 0
        if not (math.isfinite(value) and low_ok):
            need = "a positive number" if key == "base_lr" else "a number >= 0"
            raise ConfigError(f"train.{key} must be {need}, got {value}")
    if tc.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {tc.warmup_steps}")
    if tc.stop_after is not None and tc.stop_after < 1:
        raise ConfigError(f"train.stop_after must be at least 1 (or null), got {tc.stop_after}")
    outside = [s for s in tc.keep_steps if not 1 <= s <= tc.max_steps]
    if outside:
        raise ConfigError(f"train.keep_steps must lie in 1..train.max_steps={tc.max_steps}, "
                          f"got {outside}")
    if tc.clip_grad is not None and not (math.isfinite(tc.clip_grad) and tc.clip_grad > 0):
        raise ConfigError(f"train.clip_grad must be positive or null, got {tc.clip_grad}")


class Trainer:
    """One training run in one run directory."""

    def __init__(self, cfg: Config, parts: StageParts, out_dir: Path, dist: DistInfo,
                 resume: bool = False):
        self.cfg, self.parts, self.out, self.dist = cfg, parts, Path(out_dir), dist
        self.tc = cfg.train
        if self.tc.accum_steps < 1:
            raise ConfigError(f"train.accum_steps must be >= 1, got {self.tc.accum_steps}")
        _check_train(self.tc)
        self.model = parts.model.to(dist.device)
        if self.tc.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        groups = (parts.param_groups or param_groups)(self.model, self.tc.weight_decay)
        groups = [g for g in groups if g["params"]]
        self.params = [p for g in groups for p in g["params"]]
        self.effective_batch = cfg.data.batch_size * self.tc.accum_steps * dist.world_size
        self.peak_lr = scaled_lr(self.tc.base_lr, self.effective_batch, self.tc.lr_batch_base)
        self.optimizer = torch.optim.AdamW(groups, lr=self.peak_lr, betas=tuple(self.tc.betas))
        self.step = 0
        self.log = MetricsLog(self.out / "metrics.jsonl", enabled=dist.is_main)
        self._maybe_resume(resume)

    # ------------------------------------------------------------------ checkpoints

    @property
    def last_path(self) -> Path:
        return self.out / LAST

    def _maybe_resume(self, resume: bool) -> None:
        if not self.last_path.exists():
            if resume:
                raise EnfoldError(
                    f"--resume given but {self.last_path} does not exist; drop --resume to start "
                    "a new run in this directory"
                )
            return
        state = load_checkpoint(self.last_path)
        if state.get("stage") != self.parts.stage:
            raise EnfoldError(
                f"{self.last_path} is a '{state.get('stage')}' checkpoint, not "
                f"'{self.parts.stage}'; use a new --out directory for this stage"
            )
        # read through the config types, so a field added since the checkpoint was written
        # compares as its default (how that run was trained)
        saved = to_dict(config_from_checkpoint(state["config"]))
        changed = _changed_keys(saved, to_dict(self.cfg))
        if changed:
            raise EnfoldError(
                f"{self.last_path} was trained with a different {', '.join(changed)}; resume "
                "with the same settings (only train.max_steps, lr schedule, logging, evaluation "
                "and device settings may change) or use a new --out directory"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.log.truncate_after(self.step)
        if self.dist.is_main:
            print(f"resuming from {self.last_path} at step {self.step}", flush=True)

    def save(self) -> None:
        """Write ``checkpoint-last.pt`` (rank 0 only) with config, versions and stage state."""
        if self.dist.is_main:
            write_checkpoint(self.last_path, stage=self.parts.stage, step=self.step,
                             model_state=self.model.state_dict(), cfg=self.cfg,
                             optimizer_state=self.optimizer.state_dict(),
                             extra=self.parts.extra_state)
        barrier(self.dist)

    # ------------------------------------------------------------------ the loop

    def _wrapped_model(self) -> nn.Module:
        model: nn.Module = self.model
        if self.dist.distributed:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.tc.compile:
            # The whole loss, second-order restoration included, compiles as one function.
            model = torch.compile(model)
        return model

    def _evaluate(self) -> None:
        # Only rank 0 evaluates; every rank meets at the barrier so collectives stay in step.
        if self.dist.is_main and self.parts.evaluate is not None:
            self.model.eval()
            metrics = self.parts.evaluate(self.model, self.step)
            self.model.train()
            self.log.write({"step": self.step, **metrics})
            shown = {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)}
            self.progress.message(f"eval @ step {self.step}: {shown}")
        barrier(self.dist)

    def fit(self) -> Path:
        """Train to ``train.max_steps``; return the path of the last checkpoint."""
        tc = self.tc
        if self.dist.is_main:
            self._announce()
        self.progress = Progress(tc.max_steps, self.step, enabled=self.dist.is_main)
        end = min(tc.max_steps, tc.stop_after or tc.max_steps)
        if self.step >= end:
            self.progress.message(f"already at step {self.step} >= {end}")
            self.progress.close()
            return self.last_path
        per_step = self.cfg.data.batch_size * tc.accum_steps
        batches = iter(self.parts.build_loader(self.parts.train_dataset, self.step * per_step))
        model = self._wrapped_model()
        self.model.train()
        t_last, n_images = time.perf_counter(), 0
        try:
            while self.step < end:
                lr = self._start_step()
                loss_sum, parts_sum, images = self._accumulate(model, batches)
                n_images += images
                loss_value, grad_norm = self._update(loss_sum)
                self._after_step(loss_value, parts_sum, grad_norm, lr, n_images, t_last)
                if self.step % tc.log_every == 0:
                    t_last, n_images = time.perf_counter(), 0
                every = self.cfg.eval.every  # 0: evaluate at the end only
                if (every > 0 and self.step % every == 0) or self.step == tc.max_steps:
                    self._evaluate()
                keep = self.step in tc.keep_steps
                if keep or self.step % tc.ckpt_every == 0 or self.step in (end, tc.max_steps):
                    self.save()
                if keep and self.dist.is_main:
                    copy_checkpoint(self.last_path, snapshot_path(self.out, self.step))
            self._check_replicas_in_sync()
        finally:
            self.progress.close()
        return self.last_path

    def _announce(self) -> None:
        """Rank 0: the run directory, its config and library versions, and one line saying
        the effective batch, the learning rate and the device."""
        tc, dist = self.tc, self.dist
        self.out.mkdir(parents=True, exist_ok=True)
        # A run already past max_steps trains nothing: its config.yaml keeps describing it
        if self.step < tc.max_steps:
            save_config(self.cfg, self.out / "config.yaml")
        (self.out / "versions.json").write_text(json.dumps(library_versions(), indent=2))
        print(
            f"{self.parts.stage}: effective batch {self.effective_batch} "
            f"({self.cfg.data.batch_size} x {tc.accum_steps} accum x {dist.world_size} procs), "
            f"lr = {tc.base_lr:g} * {self.effective_batch} / {tc.lr_batch_base} = "
            f"{self.peak_lr:.3g}, device {dist.device}, compile {tc.compile}",
            flush=True,
        )

    def _start_step(self) -> float:
        """Seed every generator for this step and set this step's learning rate (returned)."""
        tc = self.tc
        seed = step_seed(tc.seed, self.dist.rank, self.step)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # timm's mixup draws from numpy and random
        random.seed(seed)
        lr = lr_at(self.step, self.peak_lr, tc.max_steps, tc.warmup_steps,
                   scaled_floor(tc.min_lr, tc.base_lr, self.peak_lr))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _accumulate(self, model: nn.Module, batches: Iterator[Any]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """Forward and backward over ``train.accum_steps`` micro-batches (gradients synced
        across processes on the last only): the mean loss, its mean parts, the images seen."""
        tc, dist = self.tc, self.dist
        autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=tc.bf16)
        loss_sum = torch.zeros((), device=dist.device)
        parts_sum: dict[str, torch.Tensor] = {}
        n_images = 0
        for micro in range(tc.accum_steps):
            batch = [t.to(dist.device, non_blocking=True) for t in next(batches)]
            if self.parts.batch_transform is not None:
                batch = self.parts.batch_transform(batch)
            last_micro = micro == tc.accum_steps - 1
            sync = (model.no_sync() if dist.distributed and not last_micro
                    and hasattr(model, "no_sync") else nullcontext())
            with sync, autocast:
                loss, loss_parts = model(*batch)
            with sync:
                (loss / tc.accum_steps).backward()
            loss_sum += loss.detach().float() / tc.accum_steps
            for k, v in loss_parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v.float() / tc.accum_steps
            n_images += batch[0].shape[0]
        return loss_sum, parts_sum, n_images

    def _update(self, loss_sum: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Clip the gradients and take the optimizer step: ``(loss, gradient norm)``. A
        non-finite loss or gradient on any process stops the run before the update."""
        tc = self.tc
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.params, tc.clip_grad if tc.clip_grad else float("inf")
        )
        loss_value = float(loss_sum)
        finite = bool(np.isfinite(loss_value) and torch.isfinite(grad_norm))
        if not all_true(finite, self.dist):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"non-finite loss ({loss_value}) or gradient at step {self.step}; stopped "
                f"before the update, so {self.last_path} still holds the last good "
                "weights. Lower train.base_lr, set train.clip_grad, or check the data."
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value, grad_norm

    def _after_step(self, loss: float, parts: dict, grad_norm: torch.Tensor, lr: float,
                    n_images: int, t_last: float) -> None:
        log_now = self.step % self.tc.log_every == 0 or self.step == self.tc.max_steps
        elapsed = max(1e-9, time.perf_counter() - t_last)
        ips = n_images * self.dist.world_size / elapsed
        extra = self.parts.describe(self.model) if self.parts.describe else {}
        self.progress.update(self.step, {"loss": loss, **extra, "img/s": round(ips)}, log_now)
        if log_now:
            self.log.write({
                "step": self.step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                "images_per_s": ips, **{k: float(v) for k, v in parts.items()}, **extra,
            })

    def _check_replicas_in_sync(self) -> None:
        """Under DDP every rank must end with the same weights; record and enforce it."""
        if not self.dist.distributed:
            return
        import torch.distributed as tdist

        flat = _model_fingerprint(self.model)
        hi, lo = flat.clone(), flat.clone()
        tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
        tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
        spread = float((hi - lo).abs().max())
        self.log.write({"step": self.step, "ddp/world_size": self.dist.world_size,
                        "ddp/max_param_spread": spread})
        if spread > 0:
            raise EnfoldError(f"DDP replicas diverged: max parameter spread {spread:g}")


# What a run learns from: resuming with any of these changed would silently mix two experiments.
RESUME_FIXED = ("model", "loss", "corrupt", "data", "finetune")


def _changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted config keys that differ between a checkpoint's config and the current one, among
    the sections in ``RESUME_FIXED`` and ``train.seed``."""

    def flat(d: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, sub in d.items() for k, v in flat(sub, f"{prefix}.{key}").items()}

    def fixed(cfg: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for s in RESUME_FIXED for k, v in flat(cfg.get(s), s).items()}
        return {**out, "train.seed": cfg.get("train", {}).get("seed")}

    old, new = fixed(saved), fixed(current)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def fit(cfg: Config, parts: StageParts, out_dir: str | Path, dist: DistInfo,
        resume: bool = False) -> Path:
    """Run the shared training loop for a stage; see :class:`Trainer`."""
    return Trainer(cfg, parts, Path(out_dir), dist, resume=resume).fit()
