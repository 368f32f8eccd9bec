"""Checkpoint -> model: the one place that turns an enfold checkpoint into a model.

A pretrain checkpoint becomes the :class:`EnergyViT`, a finetune checkpoint the classifier
(:class:`ViTClassifier`, or :class:`LinearProbe` for ``--mode linear``). Every stage, the pictures,
the export and the runtime's PyTorch backend load through here, so a change of checkpoint layout
is made once. Models come back in eval mode on the CPU.

:func:`open_checkpoint` reads a file once (:class:`CheckpointFile`: its contents, config and
sha256); a runtime session or an export passes that along, so serving three targets of one
checkpoint, or exporting and validating it, reads and hashes the file once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enfold.checkpoint.store import load_checkpoint
from enfold.config import Config, config_from_checkpoint
from enfold.digest import file_sha256
from enfold.errors import EnfoldError
from enfold.model import EnergyViT, build_energy_model
from enfold.model.classifier import (
    LinearProbe,
    ViTClassifier,
    load_backbone_weights,
    vit_state_from_pretrain,
)

# the fine-tune stage trains its classifier inside an objective module stored under this name
_CLASSIFIER_PREFIX = "net."


@dataclass(frozen=True)
class CheckpointFile:
    """One checkpoint file, read once (weights only, checked finite): its contents, and its
    config and sha256, each worked out on first use and then kept."""

    path: Path
    state: dict[str, Any]

    @property
    def stage(self) -> Any:
        """``"pretrain"``, ``"finetune"``, or what a foreign file says (checked by the users)."""
        return self.state.get("stage")

    @cached_property
    def cfg(self) -> Config:
        """The run's resolved config."""
        return config_from_checkpoint(self.state["config"])

    @cached_property
    def sha256(self) -> str:
        """The file's SHA-256, hashed once."""
        return file_sha256(self.path)


def open_checkpoint(checkpoint: str | Path | CheckpointFile,
                    sha256: str | None = None) -> CheckpointFile:
    """Read an enfold checkpoint once; an already opened one is passed through as it is.
    ``sha256``: the file's digest when the caller has just computed it (to check the file
    before reading it), so it is not hashed again."""
    if isinstance(checkpoint, CheckpointFile):
        return checkpoint
    opened = CheckpointFile(Path(checkpoint), load_checkpoint(checkpoint))
    if sha256 is not None:
        opened.__dict__["sha256"] = sha256  # the cached_property's own slot
    return opened


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model with what was saved beside it."""

    stage: str  # "pretrain" or "finetune"
    model: nn.Module  # EnergyViT (pretrain) or the classifier (finetune), eval mode, CPU
    cfg: Config
    classes: list[str] | None  # finetune only
    versions: dict[str, str]


def load_model(checkpoint: str | Path | CheckpointFile) -> LoadedCheckpoint:
    """Any enfold checkpoint (a path, or one already opened) -> its model, config, class names
    and library versions. Each call builds a model of its own."""
    opened = open_checkpoint(checkpoint)
    checkpoint, state, stage, cfg = opened.path, opened.state, opened.stage, opened.cfg
    versions = dict(state.get("versions", {}))
    if stage == "pretrain":
        model = build_energy_model(cfg)
        model.load_state_dict(state["model"])
        return LoadedCheckpoint(stage, model.eval(), cfg, None, versions)
    if stage == "finetune":
        classes = list(state["classes"])
        net = build_classifier(cfg, len(classes), None)
        weights = {k[len(_CLASSIFIER_PREFIX):]: v for k, v in state["model"].items()
                   if k.startswith(_CLASSIFIER_PREFIX)}
        if len(weights) != len(state["model"]):
            raise EnfoldError(f"{checkpoint}: a finetune checkpoint whose weights are not all "
                              f"under '{_CLASSIFIER_PREFIX}'; re-run `enfold finetune`")
        net.load_state_dict(weights)
        return LoadedCheckpoint(stage, net.eval(), cfg, classes, versions)
    raise EnfoldError(f"{checkpoint} is a '{stage}' checkpoint; pass the checkpoint-last.pt of "
                      "an `enfold pretrain` or `enfold finetune` run")


def load_energy_model(checkpoint: str | Path | CheckpointFile) -> tuple[EnergyViT, Config]:
    """The energy ViT and its config from a pretrain checkpoint (eval mode, CPU)."""
    opened = open_checkpoint(checkpoint)
    loaded = load_model(opened)
    if loaded.stage != "pretrain":
        raise EnfoldError(f"{opened.path} is a '{loaded.stage}' checkpoint; "
                          "pass a pretrain checkpoint")
    return loaded.model, loaded.cfg


def load_classifier(checkpoint: str | Path | CheckpointFile
                    ) -> tuple[nn.Module, Config, list[str]]:
    """A fine-tuned classifier (eval mode, CPU) with its config and class names."""
    opened = open_checkpoint(checkpoint)
    loaded = load_model(opened)
    if loaded.stage != "finetune":
        raise EnfoldError(f"{opened.path} is a '{loaded.stage}' checkpoint; pass the "
                          "checkpoint of an `enfold finetune` run")
    return loaded.model, loaded.cfg, loaded.classes or []


def pretrained_vit_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ViT weights of a pretrain checkpoint, for a classifier to start from."""
    state = load_checkpoint(path)
    if state.get("stage") != "pretrain":
        raise EnfoldError(f"--pretrained {path} is a '{state.get('stage')}' checkpoint; pass the "
                          "checkpoint-last.pt of an `enfold pretrain` run")
    return vit_state_from_pretrain(state["model"])


def build_classifier(cfg: Config, num_classes: int, pretrained: str | Path | None) -> nn.Module:
    """The classifier of the configured fine-tune mode, with pretrained ViT weights when given."""
    classifier = ViTClassifier(cfg.model, num_classes)
    if pretrained is not None:
        load_backbone_weights(classifier.vit, pretrained_vit_state(pretrained), str(pretrained))
    if cfg.finetune.mode == "linear":
        return LinearProbe(classifier, num_classes)
    return classifier
