"""scikit-learn's 1,797 handwritten 8x8 digits: the embedded data set of the demo and fast tests."""

from __future__ import annotations

import functools

import numpy as np
import torch

from enfold.data.image_source import ImageSource
from enfold.data.transforms import check_split, resize_square
from enfold.errors import EnfoldError

# The digits split is fixed once and for all: fine-tuning and linear probes reuse it, so a model
# pretrained on "train" is never evaluated on images it saw.
DIGITS_COUNT = 1797
DIGITS_TEST_COUNT = 360
DIGITS_SPLIT_SEED = 0
DIGITS_PERMUTATION: np.ndarray = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(DIGITS_COUNT)
DIGITS_TRAIN_INDICES: np.ndarray = np.sort(DIGITS_PERMUTATION[:-DIGITS_TEST_COUNT])
DIGITS_TEST_INDICES: np.ndarray = np.sort(DIGITS_PERMUTATION[-DIGITS_TEST_COUNT:])


@functools.lru_cache(maxsize=1)
def _digits_array() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)  # (N, 8, 8) in [0, 1]
    if images.shape[0] != DIGITS_COUNT:  # the split constants assume the classic data set
        raise EnfoldError(
            f"scikit-learn's digits data set has {images.shape[0]} images, expected {DIGITS_COUNT}"
        )
    return images, bunch.target.astype(np.int64)


class DigitsSource(ImageSource):
    """scikit-learn's handwritten digits, upsampled bilinearly from 8x8 to ``img_size``.

    ``split`` is "train" (1437 images) or "test" (360; "heldout" is accepted as a synonym). The
    digits are already centred, so there is no augmentation: a generator passed to ``image`` is
    ignored.
    """

    def __init__(self, split: str, img_size: int, in_chans: int = 3) -> None:
        super().__init__(img_size, in_chans)
        check_split(split, ("train", "test", "heldout"), "digits")
        self.split = "test" if split == "heldout" else split
        images, targets = _digits_array()
        idx = DIGITS_TRAIN_INDICES if self.split == "train" else DIGITS_TEST_INDICES
        self.indices = idx
        self._images = images[torch.from_numpy(idx)]
        self.labels = [int(t) for t in targets[idx]]
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        # Upsampling: plain bilinear interpolation (antialiasing only matters when shrinking).
        return resize_square(self._images[index][None], self.img_size, antialias=False)


# ----------------------------------------------------------------------------- photos
