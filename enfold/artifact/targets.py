"""What each target computes, in PyTorch eager, and the metadata an artifact of it carries.

Targets: ``classifier`` (logits of a fine-tuned checkpoint), ``encoder`` (pooled features),
``energy`` (one scalar per image) and ``restorer`` (``K`` steps down the energy, or a learned
peer's one forward pass: ``model.restorer: direct_vit | dncnn``). The export
traces these modules; the torch runner runs them as they are, so both start from the same one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from enfold.artifact.target_table import (  # noqa: F401  (re-exported)
    CHECKPOINT_TARGETS,
    TARGET_METHODS,
    TARGETS,
    target_named,
)
from enfold.errors import EnfoldError

if TYPE_CHECKING:
    from enfold.checkpoint.load import CheckpointFile


class TargetModule(nn.Module):
    """Wrap a callable (or a traced GraphModule) as a module with ``forward(x)``.

    ``owner`` (the model the callable belongs to) is registered so its weights travel with the
    module; they are frozen, as deployment graphs take no gradient with respect to them.
    """

    def __init__(self, fn: Any, owner: nn.Module | None = None):
        super().__init__()
        self.fn = fn
        if owner is not None:
            self.owner = owner.eval().requires_grad_(False)
        self.eval()  # exporters check the wrapper's own mode too

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *extra)


@dataclass
class TorchTarget:
    """A target of a checkpoint in PyTorch eager, with what its artifact's sidecar records."""

    target: str
    module: nn.Module  # forward(x: (B, C, H, W) normalised float32) -> one tensor
    model: nn.Module  # the checkpoint's model (EnergyViT or the classifier), eval mode
    img_size: int
    in_chans: int
    metadata: dict[str, Any] = field(default_factory=dict)


def torch_target(checkpoint: str | Path | CheckpointFile, target: str, steps: int | None = None,
                 task: str | None = None, grid_shifts: int | None = None,
                 step_decay: float | None = None) -> TorchTarget:
    """Load ``checkpoint`` (a path, or a file already opened: it is then neither read nor
    hashed again) and wrap what ``target`` computes (``steps`` and ``task``: the restorer's
    number of steps, default the trained K, and the pretext task it is for; ``grid_shifts``:
    the patch grids the energy of a restorer or energy target averages over, default 1;
    ``step_decay``: how an energy restorer shrinks its steps beyond the trained K, default 1)."""
    from enfold.checkpoint.load import load_model, open_checkpoint
    from enfold.checkpoint.store import library_versions
    from enfold.config import to_dict
    from enfold.corrupt import available

    kind = target_named(target)
    opened = open_checkpoint(checkpoint)
    checkpoint = opened.path
    loaded = load_model(opened)
    stage, cfg, model = loaded.stage, loaded.cfg, loaded.model
    versions = library_versions()
    meta: dict[str, Any] = {
        "target": target, "img_size": cfg.model.img_size, "in_chans": cfg.model.in_chans,
        "mean": cfg.data.mean, "std": cfg.data.std, "arch": cfg.model.arch,
        "enfold_version": versions.get("enfold"), "torch_version": versions.get("torch"),
        "checkpoint": str(checkpoint), "checkpoint_sha256": opened.sha256,
        "checkpoint_stage": stage, "patch_size": cfg.model.patch_size,
        # how image files become model inputs, for every runtime backend alike
        "preprocess": "centre square crop, bilinear resize (antialiased) to img_size, "
                      "then (x - mean) / std",
        # the pretext tasks, so `enfold restore` corrupts files exactly as training did
        "tasks": list(cfg.corrupt.tasks),
        "corrupt": {name: to_dict(getattr(cfg.corrupt, name)) for name in available()},
    }
    size, chans = cfg.model.img_size, cfg.model.in_chans
    if grid_shifts not in (None, 1) and not kind.grid_shifts:
        raise EnfoldError(f"--grid-shifts applies to the restorer and energy targets, not "
                          f"{target!r}; drop it")
    if step_decay not in (None, 1) and target != "restorer":
        raise EnfoldError(f"--step-decay applies to the restorer target, not {target!r}; drop it")
    if target == "classifier":
        if stage != "finetune":
            raise EnfoldError(f"--target classifier needs a finetune checkpoint; {checkpoint} "
                              f"is a '{stage}' checkpoint (run `enfold finetune` first)")
        meta["class_names"] = loaded.classes
        return TorchTarget(target, TargetModule(model, model), model, size, chans, meta)
    if target == "encoder" and stage == "finetune":
        return TorchTarget(target, TargetModule(model.features, model), model, size, chans, meta)
    if stage != "pretrain":
        raise EnfoldError(f"--target {target} needs a pretrain checkpoint; {checkpoint} is a "
                          f"'{stage}' checkpoint")
    if cfg.model.restorer != "energy":  # a learned peer: one forward pass, no energy
        if step_decay not in (None, 1):
            raise EnfoldError(f"--step-decay shrinks the steps down an energy; a "
                              f"{cfg.model.restorer} restorer has one forward pass: drop it")
        return _peer_restorer(loaded, target, steps, task, grid_shifts, meta)
    if target == "encoder":
        return TorchTarget(target, TargetModule(model.pooled_features, model), model, size,
                           chans, meta)
    model.set_grid_shifts(grid_shifts or 1)
    meta["grid_shifts"] = model.grid_shifts
    if target == "energy":
        return TorchTarget(target, TargetModule(model.energy, model), model, size, chans, meta)
    steps = steps or model.num_steps
    if steps < 1:
        raise EnfoldError(f"--steps must be at least 1, got {steps}")
    model.set_step_decay(1.0 if step_decay is None else step_decay)
    if model.step_decay != 1:  # absent otherwise, as in sidecars written before it existed
        meta["step_decay"] = model.step_decay
    meta.update(steps=steps, trained_steps=model.num_steps, restorer="energy",
                step_sizes=[float(a) for a in model.step_sizes(steps).detach()])
    return _restorer_target(loaded, steps, task, meta)


def _peer_restorer(loaded: Any, target: str, steps: int | None, task: str | None,
                   grid_shifts: int | None, meta: dict[str, Any]) -> TorchTarget:
    """The restorer of a learned peer (``model.restorer: direct_vit | dncnn``): its one forward
    pass, recorded as one step; the energy, the encoder, more steps and grid shifts are refused,
    as a peer has no energy to step down or average."""
    kind, where = loaded.cfg.model.restorer, meta["checkpoint"]
    if target != "restorer":
        raise EnfoldError(f"--target {target}: {where} is a {kind} peer, which restores in one "
                          "forward pass and has no energy or encoder; export --target restorer")
    if steps not in (None, 1):
        raise EnfoldError(f"--steps {steps}: a {kind} peer restores in one forward pass, with "
                          "no energy steps to unroll; drop --steps (or pass --steps 1)")
    if grid_shifts not in (None, 1):
        raise EnfoldError(f"--grid-shifts {grid_shifts} averages the energy over patch grids; "
                          f"a {kind} peer has no energy: drop --grid-shifts")
    meta.update(steps=1, trained_steps=1, restorer=kind)
    return _restorer_target(loaded, 1, task, meta)


def _restorer_target(loaded: Any, steps: int, task: str | None,
                     meta: dict[str, Any]) -> TorchTarget:
    """``model.restore_steps`` for ``steps`` steps on the restorer's ``task``, taking the
    restorer's other inputs (:func:`restorer_inputs`) after the images."""
    cfg, model = loaded.cfg, loaded.model
    task = task or cfg.corrupt.tasks[0]
    if task not in cfg.corrupt.tasks:
        raise EnfoldError(f"--task {task!r}: this model was trained on {cfg.corrupt.tasks}")
    meta["task"] = task
    inputs = restorer_inputs(model)
    if inputs:
        meta["restorer_inputs"] = inputs
    if model.noise_level_input:
        meta["noise_ref"] = float(model.noise_ref)

    def restore(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        given = dict(zip(inputs, extra, strict=True))
        return model.restore_steps(x, steps, weight=given.get("mask"),
                                   sigma=given.get("sigma"))[-1]

    return TorchTarget("restorer", TargetModule(restore, model), model, cfg.model.img_size,
                       cfg.model.in_chans, meta)


def restorer_inputs(model: nn.Module) -> list[str]:
    """A restorer's inputs besides the images: ``"sigma"`` ((B,) noise level in pixels) for a
    noise-level restorer (``model.noise_level_input``), ``"mask"`` ((B, 1, H, W), 1 in the
    holes) for a mask restorer that keeps the visible pixels (``model.consistency``), so holes
    of any shape are known exactly."""
    inputs = []
    if getattr(model, "noise_level_input", False):
        inputs.append("sigma")
    if getattr(getattr(model, "consistency", None), "task", None) == "mask":
        inputs.append("mask")
    return inputs
