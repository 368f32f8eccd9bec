"""Corrupt a batch of images, each with its own seeded generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from enfold.corrupt.registry import Corrupted, Corruption


def corrupt_batch(corruption: Corruption, images: torch.Tensor | Sequence[torch.Tensor],
                  seed: int) -> Corrupted:
    """``(corrupted, clean, weight)`` batches for ``images`` (``(N, C, H, W)`` or a list of
    ``(C, H, W)``, pixel space [0, 1]). Image ``i`` gets the generator of sample ``(seed, 0,
    i)``, so the same images and seed always corrupt the same way."""
    from enfold.data import sample_generator  # one seeding rule for samples and batches

    parts = [corruption(img, sample_generator(seed, 0, i)) for i, img in enumerate(images)]
    corrupted, clean, weight = (torch.stack(t) for t in zip(*parts, strict=True))
    return corrupted, clean, weight
