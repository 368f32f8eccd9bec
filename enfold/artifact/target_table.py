"""The table of targets: what an export or a loaded checkpoint serves, and each one's names.

A target is one function of a checkpoint: ``classifier`` (logits), ``encoder`` (pooled
features), ``energy`` (one scalar per image) and ``restorer`` (``K`` steps down the energy).
What each computes in PyTorch is ``enfold.artifact.targets``; this module imports nothing heavy,
so the CLI lists the targets without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from enfold.errors import EnfoldError


@dataclass(frozen=True)
class Target:
    """One target. ``method``: the :class:`InferenceSession` method that runs it (the server
    names its endpoint after it); ``output``: the name of its output tensor in exported graphs;
    ``stages``: the checkpoint stages it is exported from; ``grid_shifts``: whether it computes
    the energy, so ``--grid-shifts`` applies."""

    name: str
    method: str
    output: str
    stages: tuple[str, ...]
    grid_shifts: bool = False
    help: str = ""


TARGET_TABLE: tuple[Target, ...] = (
    Target("classifier", "classify", "logits", ("finetune",),
           help="class logits of a fine-tuned checkpoint"),
    Target("encoder", "features", "features", ("pretrain", "finetune"),
           help="pooled encoder features"),
    Target("energy", "energy", "energy", ("pretrain",), grid_shifts=True,
           help="one energy per image"),
    Target("restorer", "restore", "restored", ("pretrain",), grid_shifts=True,
           help="K gradient steps down the energy"),
)
TARGET_BY_NAME = {target.name: target for target in TARGET_TABLE}
TARGETS = tuple(TARGET_BY_NAME)
# Target -> the InferenceSession method that runs it.
TARGET_METHODS = {target.name: target.method for target in TARGET_TABLE}
# The targets a checkpoint of each stage serves with the torch runner, the one its sidecar-like
# metadata names first.
CHECKPOINT_TARGETS = {"pretrain": ("restorer", "energy", "encoder"),
                      "finetune": ("classifier", "encoder")}


def target_named(name: str, option: str = "--target") -> Target:
    """The target called ``name``, or an error listing the targets."""
    if name not in TARGET_BY_NAME:
        raise EnfoldError(f"unknown {option} {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGET_BY_NAME[name]
