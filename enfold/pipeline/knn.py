"""Cosine k-nearest-neighbour classification on frozen features (no training)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from enfold.data import build_eval_loader


@torch.no_grad()
def extract_features(features: Callable[[torch.Tensor], torch.Tensor], dataset,
                     device: torch.device, batch_size: int = 256,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features ``(N, D)`` and labels ``(N,)``."""
    feats, labels = [], []
    for x, y in build_eval_loader(dataset, batch_size):
        feats.append(F.normalize(features(x.to(device)).float(), dim=1).cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def knn_scores(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
               num_classes: int, k: int = 20, temperature: float = 0.07,
               chunk: int = 1024) -> torch.Tensor:
    """Class scores ``(N_test, classes)``: neighbours vote with weight exp(cosine / T)."""
    k = min(k, train_feats.shape[0])
    out = []
    for start in range(0, test_feats.shape[0], chunk):
        sim = test_feats[start:start + chunk] @ train_feats.T  # (n, N_train), cosine
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
        out.append(votes)
    return torch.cat(out)


class KnnMonitor:
    """kNN top-1 of a model's frozen features during pretraining (``eval.knn: true``)."""

    def __init__(self, cfg, device: torch.device):
        from enfold.data import LabeledDataset, build_source, select_per_class

        train_src = build_source(cfg.data.source, "train", cfg.model, cfg.data)
        held_src = build_source(cfg.data.source, "heldout", cfg.model, cfg.data)
        train = LabeledDataset(train_src, cfg.data.mean, cfg.data.std, cfg.eval.seed, False)
        per_class = max(1, cfg.eval.knn_train_images // len(train.classes))
        counts = torch.bincount(torch.tensor(train.labels))
        if counts.min() > per_class:  # cap the index on large data sets, same count per class
            train.indices = select_per_class(train.labels, per_class, cfg.eval.seed)
        self.train = train
        self.heldout = LabeledDataset(held_src, cfg.data.mean, cfg.data.std, cfg.eval.seed,
                                      False)
        self.k, self.temperature = cfg.finetune.knn_k, cfg.finetune.knn_temperature
        self.device = device

    def __call__(self, features: Callable[[torch.Tensor], torch.Tensor]) -> float:
        a, la = extract_features(features, self.train, self.device)
        b, lb = extract_features(features, self.heldout, self.device)
        scores = knn_scores(a, la, b, len(self.train.classes), self.k, self.temperature)
        return float((scores.argmax(1) == lb).float().mean())
