"""Fashion-MNIST: 60,000 training and 10,000 test 28x28 gray images of clothing, 10 classes.

The four standard idx files (``train-images-idx3-ubyte.gz`` and friends, gzip or plain) are read
from the Debian package ``dataset-fashion-mnist`` (MIT) or from a folder the user names with
``data.source=fashion-mnist:PATH``, e.g. torchvision's ``FashionMNIST/raw``. The official
train/test split is kept: "train" is the 60,000, "heldout"/"test" the 10,000.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from enfold.data.image_source import ImageSource
from enfold.data.transforms import check_split, resize_square
from enfold.errors import EnfoldError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
# idx magic numbers: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801
_HOW_TO_GET = (
    "install the Debian package dataset-fashion-mnist (`make data`), or point "
    "data.source=fashion-mnist:PATH at a folder holding the four idx files (for example "
    "torchvision's FashionMNIST/raw)"
)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise EnfoldError(f"Fashion-MNIST file {root / (stem + '.gz')} not found: {_HOW_TO_GET}")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (gzip or plain) as a uint8 array of the shape its header gives.

    Raises :class:`EnfoldError` naming the file when the magic number is wrong or the file is
    shorter than its header says.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        reason = str(exc) or type(exc).__name__
        raise EnfoldError(f"cannot read {path}: {reason}; {_HOW_TO_GET}") from exc
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise EnfoldError(
            f"{path} is not an idx file of this kind (magic number 0x{found:08x}, expected "
            f"0x{magic:08x}); {_HOW_TO_GET}"
        )
    if len(raw) < header:
        raise EnfoldError(
            f"{path} is truncated ({len(raw)} bytes, no full idx header); {_HOW_TO_GET}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header < count:
        raise EnfoldError(
            f"{path} is truncated: its header promises {count} bytes of data, it holds "
            f"{len(raw) - header}; {_HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


@functools.cache
def load_fashion_mnist(root: str, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """Split "train" or "test" from ``root``: uint8 images ``(N, 28, 28)`` and int64 labels."""
    images_stem, labels_stem, expected = _FILES[split]
    base = Path(root).expanduser()
    if not base.is_dir():
        raise EnfoldError(f"Fashion-MNIST folder {base} not found: {_HOW_TO_GET}")
    images = read_idx(_find(base, images_stem), _MAGIC_IMAGES)
    labels = read_idx(_find(base, labels_stem), _MAGIC_LABELS)
    if images.shape[0] != labels.shape[0]:
        raise EnfoldError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels in "
            f"{base}; {_HOW_TO_GET}"
        )
    if images.shape[0] != expected:
        raise EnfoldError(
            f"Fashion-MNIST {split} in {base} holds {images.shape[0]} images, expected "
            f"{expected}: these are not the standard files; {_HOW_TO_GET}"
        )
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise EnfoldError(f"Fashion-MNIST {split} labels in {base} go up to {labels.max()}, "
                          f"expected 0-9; {_HOW_TO_GET}")
    return torch.from_numpy(images.copy()), labels.astype(np.int64)


class FashionMNISTSource(ImageSource):
    """Fashion-MNIST, labelled, with the official split.

    ``split`` "train" (60,000 images) or "test" (10,000; "heldout" is a synonym). Images are
    resized bilinearly from 28x28 to ``img_size`` when it differs. With a generator the image is
    flipped horizontally with probability 1/2 when ``hflip`` (clothes are left-right symmetric);
    with ``generator=None`` it is returned as stored.
    """

    def __init__(
        self,
        split: str,
        img_size: int,
        in_chans: int = 1,
        root: str | Path = FASHION_MNIST_DIR,
        hflip: bool = False,
    ) -> None:
        super().__init__(img_size, in_chans)
        check_split(split, ("train", "test", "heldout"), "fashion-mnist")
        self.split = "test" if split == "heldout" else split
        self.root = Path(root)
        self.hflip = bool(hflip)
        images, labels = load_fashion_mnist(str(self.root), self.split)
        self._images = images
        self.labels = labels.tolist()
        self.classes = list(FASHION_MNIST_CLASSES)

    def __len__(self) -> int:
        return self._images.shape[0]

    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        img = self._images[index][None].float().div_(255.0)  # (1, 28, 28)
        if img.shape[-1] != self.img_size:
            img = resize_square(img, self.img_size, antialias=self.img_size < img.shape[-1])
        if generator is not None and self.hflip and float(torch.rand(1, generator=generator)) < 0.5:
            img = img.flip(-1)
        return img
