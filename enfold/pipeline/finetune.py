"""The finetune stage: classification from an energy-pretrained (or fresh) ViT.

Modes: ``full`` (fine-tune everything, layer-wise lr decay, label smoothing, mixup/cutmix),
``linear`` (frozen backbone, batch norm + linear head) and ``knn`` (no training). The first two
run on the shared training core; ``knn`` only extracts features.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torch import nn

from enfold.checkpoint.load import build_classifier, load_classifier
from enfold.config import Config, save_config
from enfold.data import LabeledDataset, build_source, build_train_loader, select_per_class
from enfold.errors import EnfoldError
from enfold.pipeline.classification_eval import classification_metrics, predict, report
from enfold.pipeline.distributed import DistInfo, init_distributed, shutdown
from enfold.pipeline.knn import extract_features, knn_scores
from enfold.pipeline.progress import MetricsLog
from enfold.pipeline.run_lock import run_lock
from enfold.pipeline.trainer import StageParts, fit, param_groups


class SupervisedObjective(nn.Module):
    """Cross-entropy on hard labels (with label smoothing) or on mixup's soft targets."""

    def __init__(self, net: nn.Module, label_smoothing: float):
        super().__init__()
        self.net = net
        self.label_smoothing = label_smoothing

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        vit = self.net.vit if hasattr(self.net, "vit") else self.net.backbone.vit
        vit.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor, target: torch.Tensor):
        logits = self.net(x)  # (B, classes)
        if target.dtype.is_floating_point:  # soft targets from mixup / cutmix
            loss = torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        return loss, {}


def labelled_sets(cfg: Config) -> tuple[LabeledDataset, LabeledDataset]:
    """Training (optionally N per class) and held-out labelled sets for the config's source."""
    train_source = build_source(cfg.data.source, "train", cfg.model, cfg.data)
    heldout_source = build_source(cfg.data.source, "heldout", cfg.model, cfg.data)
    train_all = LabeledDataset(train_source, cfg.data.mean, cfg.data.std, cfg.train.seed, True)
    indices = None
    if cfg.data.labels_per_class is not None:
        indices = select_per_class(train_all.labels, cfg.data.labels_per_class, cfg.train.seed)
    train = LabeledDataset(train_source, cfg.data.mean, cfg.data.std, cfg.train.seed,
                           augment=True, indices=indices)
    heldout = LabeledDataset(heldout_source, cfg.data.mean, cfg.data.std, cfg.train.seed,
                             augment=False)
    if heldout.classes != train.classes:
        raise EnfoldError(f"training classes {train.classes} differ from held-out classes "
                          f"{heldout.classes}; train/ and val/ need the same class folders")
    return train, heldout


def _layer_decay_groups(cfg: Config, objective: SupervisedObjective, weight_decay: float):
    vit = objective.net.vit
    return param_groups_layer_decay(vit, weight_decay, no_weight_decay_list=vit.no_weight_decay(),
                                    layer_decay=cfg.finetune.layer_decay)


def _mixup(cfg: Config, num_classes: int):
    ft = cfg.finetune
    if ft.mode != "full" or (ft.mixup <= 0 and ft.cutmix <= 0):
        return None
    from timm.data import Mixup

    if cfg.data.batch_size % 2:
        raise EnfoldError("mixup/cutmix need an even data.batch_size")
    mixer = Mixup(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, prob=ft.mixup_prob,
                  label_smoothing=ft.label_smoothing, num_classes=num_classes)

    def transform(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        x, y = batch
        return list(mixer(x, y))

    return transform


def build_finetune_parts(cfg: Config, out_dir: Path, dist: DistInfo,
                         pretrained: str | Path | None) -> StageParts:
    """Build classifier, data, optimizer groups and evaluation of the finetune stage."""
    torch.manual_seed(cfg.train.seed)
    train, heldout = labelled_sets(cfg)
    classes = train.classes
    objective = SupervisedObjective(build_classifier(cfg, len(classes), pretrained),
                                    cfg.finetune.label_smoothing)
    groups = None
    if cfg.finetune.mode == "full" and cfg.finetune.layer_decay < 1.0:
        groups = partial(_layer_decay_groups, cfg)
    loader = partial(_loader, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
                     num_replicas=dist.world_size, rank=dist.rank, seed=cfg.train.seed)

    def evaluate(model: SupervisedObjective, step: int) -> dict[str, float]:
        scores, labels = predict(model.net, heldout, dist.device, cfg.eval.batch_size)
        metrics = classification_metrics(scores, labels, classes)
        return report(metrics, out_dir, f"{cfg.finetune.mode} fine-tune, step {step}")

    return StageParts(
        stage="finetune", model=objective, train_dataset=train, build_loader=loader,
        evaluate=evaluate, param_groups=groups or param_groups,
        batch_transform=_mixup(cfg, len(classes)),
        extra_state={"classes": classes, "finetune_mode": cfg.finetune.mode,
                     "pretrained": str(pretrained) if pretrained else None},
    )


def _loader(dataset, start_sample: int, **kw):
    return build_train_loader(dataset, start_sample=start_sample, **kw)


def run_knn(cfg: Config, out_dir: Path, pretrained: str | Path | None,
            device: torch.device) -> dict[str, Any]:
    """kNN accuracy of frozen features: index the labelled training set, classify held-out."""
    train, heldout = labelled_sets(cfg)
    net = build_classifier(cfg, len(train.classes), pretrained).to(device).eval()
    train_feats, train_labels = extract_features(net.features, train, device)
    test_feats, test_labels = extract_features(net.features, heldout, device)
    scores = knn_scores(train_feats, train_labels, test_feats, len(train.classes),
                        cfg.finetune.knn_k, cfg.finetune.knn_temperature)
    metrics = classification_metrics(scores, test_labels, train.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    scalars = report(metrics, out_dir, f"kNN (k={cfg.finetune.knn_k})")
    save_config(cfg, out_dir / "config.yaml")
    MetricsLog(out_dir / "metrics.jsonl").write({"step": 0, **scalars,
                                                 "train_images": len(train)})
    return metrics


def run_finetune(cfg: Config, out_dir: str | Path, pretrained: str | Path | None = None,
                 resume: bool = False) -> Path | dict[str, Any]:
    """Fine-tune (full or linear) and return the checkpoint path, or run kNN and its metrics."""
    dist = init_distributed(cfg.train.device)
    try:
        # one run per folder: rank 0 holds OUT/.lock until the run ends
        with run_lock(out_dir) if dist.is_main else nullcontext():
            if cfg.finetune.mode == "knn":
                if dist.distributed:
                    raise EnfoldError("--mode knn runs in one process; launch it without "
                                      "torchrun")
                return run_knn(cfg, Path(out_dir), pretrained, dist.device)
            parts = build_finetune_parts(cfg, Path(out_dir), dist, pretrained)
            return fit(cfg, parts, out_dir, dist, resume=resume)
    finally:
        shutdown(dist)


def evaluate_checkpoint(checkpoint: str | Path, data: str | None, out_dir: str | Path | None,
                        batch_size: int = 256) -> dict[str, Any]:
    """Top-1/top-5/per-class accuracy of a fine-tuned checkpoint on held-out labelled images."""
    net, cfg, classes = load_classifier(checkpoint)
    source = build_source(data or cfg.data.source, "heldout", cfg.model, cfg.data)
    heldout = LabeledDataset(source, cfg.data.mean, cfg.data.std, cfg.train.seed, augment=False)
    if heldout.classes != classes:
        raise EnfoldError(f"the data's classes {heldout.classes[:10]} differ from the classes "
                          f"the checkpoint was trained on {classes[:10]}")
    scores, labels = predict(net, heldout, torch.device("cpu"), batch_size)
    metrics = classification_metrics(scores, labels, classes)
    report(metrics, Path(out_dir) if out_dir else None, f"evaluate {Path(checkpoint).name}")
    return metrics
