"""Labelled images for fine-tuning, linear probes and kNN, with low-label subsets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from enfold.data.dataset import normalize, sample_generator
from enfold.data.sources import ImageSource
from enfold.errors import EnfoldError


def select_per_class(labels: Sequence[int], per_class: int, seed: int) -> list[int]:
    """Indices of exactly ``per_class`` images of every class, drawn with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise EnfoldError(
                f"data.labels_per_class={per_class} but class {cls} has only {len(members)} "
                "labelled images; lower data.labels_per_class"
            )
        chosen.extend(rng.choice(members, size=per_class, replace=False).tolist())
    return sorted(chosen)


def require_labels(source: ImageSource, what: str) -> tuple[list[int], list[str]]:
    """The source's labels and class names, or a clear error if it has none."""
    if source.labels is None or source.classes is None:
        raise EnfoldError(
            f"{what} needs labelled images: use data.source=digits or an ImageFolder-style "
            "folder (one subfolder per class)"
        )
    return source.labels, source.classes


class LabeledDataset(Dataset):
    """``(image_norm, label)`` pairs from a labelled source, optionally a subset of it.

    Keys are ``(epoch, i)`` (training: augmented with a generator seeded from
    ``(seed, epoch, i)``) or an int ``i`` (evaluation: deterministic).
    """

    def __init__(self, source: ImageSource, mean: Sequence[float], std: Sequence[float],
                 seed: int, augment: bool, indices: Sequence[int] | None = None):
        self.labels_all, self.classes = require_labels(source, "classification")
        self.source, self.mean, self.std = source, list(mean), list(std)
        self.seed, self.augment = seed, augment
        self.indices = list(range(len(source))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        return [self.labels_all[i] for i in self.indices]

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            epoch, i = int(key[0]), int(key[1])
            generator = sample_generator(self.seed, epoch, i) if self.augment else None
        else:
            i, generator = int(key), None
        index = self.indices[i]
        img = self.source.image(index, generator)
        return normalize(img, self.mean, self.std), torch.tensor(self.labels_all[index])
