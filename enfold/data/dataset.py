"""Corrupted training pairs and the loaders that feed them.

A sample is addressed by ``(epoch, index)`` during training and by a plain ``index`` during
evaluation. One ``torch.Generator`` per sample, seeded from ``(seed, epoch, index)``, drives both
augmentation and corruption, so a sample is identical whichever worker, rank or run computes it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from enfold.data.sampler import StreamSampler
from enfold.data.sources import ImageSource
from enfold.errors import EnfoldError

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
CorruptionFn = Callable[[torch.Tensor, torch.Generator], Sample]


def _stats(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[Any, Any]:
    if x.dim() not in (3, 4):
        raise EnfoldError(
            f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(x.shape)}"
        )
    if len(mean) != len(std):
        raise EnfoldError(f"data.mean has {len(mean)} values but data.std has {len(std)}")
    if x.shape[-3] != len(mean):
        raise EnfoldError(
            f"images have {x.shape[-3]} channels but data.mean/data.std have {len(mean)} values; "
            "give one mean and std per channel (model.in_chans)"
        )
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return m, s


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a ``(C, H, W)`` or ``(B, C, H, W)`` tensor."""
    m, s = _stats(x, mean, std)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean`` per channel (no clamping)."""
    m, s = _stats(x, mean, std)
    return x * s + m


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator for one sample, a pure function of ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class CorruptedDataset(Dataset):
    """Wraps an image source and a corruption into normalised ``(corrupted, clean, weight)``.

    ``dataset[(epoch, index)]`` is a training sample (augmented when ``augment``);
    ``dataset[index]`` is an evaluation sample: epoch 0, never augmented. ``corrupted`` and
    ``clean`` are normalised with ``mean``/``std``; ``weight`` is ``(1, H, W)`` float.
    """

    def __init__(
        self,
        source: ImageSource,
        corruption: CorruptionFn,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        augment: bool,
    ) -> None:
        if len(mean) != len(std):
            raise EnfoldError(f"data.mean has {len(mean)} values but data.std has {len(std)}")
        in_chans = getattr(source, "in_chans", None)
        if in_chans is not None and in_chans != len(mean):
            raise EnfoldError(
                f"model.in_chans is {in_chans} but data.mean/data.std have {len(mean)} values; "
                "give one mean and std per channel"
            )
        if any(s <= 0 for s in std):
            raise EnfoldError(f"data.std values must be positive, got {list(std)}")
        self.source = source
        self.corruption = corruption
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.seed = int(seed)
        self.augment = bool(augment)

    def __len__(self) -> int:
        return len(self.source)

    @staticmethod
    def _parse_key(key: Any) -> tuple[int, int, bool]:
        """``(epoch, index, is_training)`` from a ``(epoch, index)`` pair or an int index."""
        if isinstance(key, (tuple, list)):
            if len(key) != 2:
                raise TypeError(f"expected an (epoch, index) pair, got {key!r}")
            return operator.index(key[0]), operator.index(key[1]), True
        if isinstance(key, torch.Tensor):
            key = int(key)
        return 0, operator.index(key), False

    def __getitem__(self, key: Any) -> Sample:
        epoch, index, training = self._parse_key(key)
        generator = sample_generator(self.seed, epoch, index)
        use_aug = self.augment and training
        img = self.source.image(index, generator if use_aug else None)
        corrupted, clean, weight = self.corruption(img, generator)
        return (
            normalize(corrupted.float(), self.mean, self.std),
            normalize(clean.float(), self.mean, self.std),
            weight.float(),
        )


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    num_replicas: int,
    rank: int,
    seed: int,
    start_sample: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Endless training loader: :class:`StreamSampler` batches of ``(epoch, index)`` keys.

    ``start_sample`` counts samples this rank already consumed (resume). Batches are always full;
    workers persist across the (never-ending) iteration when ``num_workers > 0``.
    """
    if batch_size < 1:
        raise EnfoldError(f"data.batch_size must be positive, got {batch_size}")
    sampler = StreamSampler(len(dataset), num_replicas, rank, seed, start_sample)  # type: ignore[arg-type]
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=True)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def build_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """Ordered evaluation loader over indices ``0 .. len - 1`` (int keys: no augmentation)."""
    if batch_size < 1:
        raise EnfoldError(f"eval batch size must be positive, got {batch_size}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
