"""The image-source contract: a finite, indexable collection of clean images.

Every source yields float32 ``(C, H, W)`` tensors in [0, 1] at ``img_size`` x ``img_size`` with
``in_chans`` channels. ``image(index, generator)`` is the one entry point: with ``generator=None``
the result is a pure function of ``index`` (evaluation); with a generator, augmentation draws its
randomness from that generator only, never from the global RNG, so a training sample can be
reproduced from its seed in any process.
"""

from __future__ import annotations

import abc

import torch

from enfold.data.transforms import check_in_chans, to_channels
from enfold.errors import EnfoldError


class ImageSource(torch.utils.data.Dataset, abc.ABC):
    """A finite, indexable collection of clean images.

    Subclasses implement ``__len__`` and ``_load(index, generator)``; ``image`` checks the index
    and converts channels. ``labels``/``classes`` are ``None`` for unlabelled sources.
    """

    img_size: int
    in_chans: int
    labels: list[int] | None = None
    classes: list[str] | None = None

    def __init__(self, img_size: int, in_chans: int) -> None:
        check_in_chans(in_chans)
        if img_size < 1:
            raise EnfoldError(f"model.img_size must be positive, got {img_size}")
        self.img_size = int(img_size)
        self.in_chans = int(in_chans)
        self.labels = None
        self.classes = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        """Image ``index`` as ``(C, img_size, img_size)``, augmented from ``generator`` if any."""

    def image(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image ``index`` as float32 ``(in_chans, img_size, img_size)`` in [0, 1].

        ``generator=None`` gives the deterministic view; otherwise augmentation (if the source
        has any) draws from ``generator`` only.
        """
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a source of {n} images")
        img = to_channels(self._load(int(index), generator), self.in_chans)
        return img.to(torch.float32).contiguous()

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.image(index, None)
