"""Which image source ``data.source`` names, built for a split.

Every source yields float32 ``(C, H, W)`` tensors in [0, 1] at ``img_size`` x ``img_size``
(see :mod:`enfold.data.image_source`). All of them work offline:

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, labelled 0-9), embedded.
* ``fashion-mnist`` / ``fashion-mnist:PATH``: Fashion-MNIST's 60,000 + 10,000 labelled images
  (Debian ``dataset-fashion-mnist``, or the four idx files in PATH).
* ``photos``: real colour photos (opencv-doc, lomiri and plasma wallpapers, scikit-image) as crops
  at texture scale; whole photos held out. ``photos:bundled``: only the scikit-image/scikit-learn
  photos, as whole-photo crops.
* ``folder:PATH``: any folder of images, ImageFolder-style (class subfolders) or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enfold.data.decode import IMAGE_EXTENSIONS
from enfold.data.digits import DIGITS_TEST_INDICES, DIGITS_TRAIN_INDICES, DigitsSource
from enfold.data.fashion_mnist import FASHION_MNIST_DIR, FashionMNISTSource
from enfold.data.folder import FolderSource
from enfold.data.image_source import ImageSource
from enfold.data.photos import (
    HELDOUT_PHOTOS,
    PHOTO_NAMES,
    TRAIN_PHOTOS,
    BundledPhotosSource,
    PhotosSource,
    load_photo,
)
from enfold.data.transforms import check_split, to_channels
from enfold.errors import EnfoldError

if TYPE_CHECKING:
    from enfold.config import DataConfig, ModelConfig

__all__ = [
    "DIGITS_TEST_INDICES",
    "DIGITS_TRAIN_INDICES",
    "HELDOUT_PHOTOS",
    "IMAGE_EXTENSIONS",
    "PHOTO_NAMES",
    "SOURCE_FORMS",
    "TRAIN_PHOTOS",
    "BundledPhotosSource",
    "DigitsSource",
    "FashionMNISTSource",
    "FolderSource",
    "ImageSource",
    "PhotosSource",
    "build_source",
    "load_photo",
    "to_channels",
]

SOURCE_FORMS = (
    "digits",
    "fashion-mnist",
    "fashion-mnist:PATH",
    "photos",
    "photos:bundled",
    "folder:PATH",
)


def build_source(
    source: str,
    split: str,
    cfg_model: ModelConfig,
    cfg_data: DataConfig,
    heldout_count: int = 256,
) -> ImageSource:
    """Build the image source named by ``data.source`` for ``split`` ("train" or "heldout").

    ``cfg_model`` supplies ``img_size``/``in_chans``; ``cfg_data`` supplies the crop settings.
    For digits and Fashion-MNIST "heldout" is the fixed test split; for photos it has
    ``heldout_count`` fixed crops of the held-out photos; for folders it is ``root/val`` or the
    hashed held-out share.
    """
    check_split(split, ("train", "heldout"), "data")
    img_size, in_chans = cfg_model.img_size, cfg_model.in_chans
    if source == "digits":
        return DigitsSource("train" if split == "train" else "test", img_size, in_chans)
    if source == "fashion-mnist" or source.startswith("fashion-mnist:"):
        root = source[len("fashion-mnist:") :].strip() if ":" in source else str(FASHION_MNIST_DIR)
        if not root:
            raise EnfoldError(
                "data.source 'fashion-mnist:' needs a folder, "
                "e.g. fashion-mnist:/data/FashionMNIST/raw"
            )
        return FashionMNISTSource(split, img_size, in_chans, root=root, hflip=cfg_data.hflip)
    crops = cfg_data.crops_per_epoch if split == "train" else heldout_count
    if source == "photos":
        return PhotosSource(
            split,
            img_size,
            in_chans,
            crops=crops,
            short_side=cfg_data.photo_short_side,
            max_zoom=cfg_data.crop_max_zoom,
            hflip=cfg_data.hflip,
        )
    if source == "photos:bundled":
        return BundledPhotosSource(
            split,
            img_size,
            in_chans,
            crops=crops,
            crop_scale_min=cfg_data.crop_scale_min,
            hflip=cfg_data.hflip,
        )
    if source.startswith("folder:"):
        path = source[len("folder:") :].strip()
        if not path:
            raise EnfoldError("data.source 'folder:' needs a path, e.g. folder:/data/images")
        return FolderSource(
            path,
            split,
            img_size,
            in_chans,
            holdout_fraction=cfg_data.holdout_fraction,
            crop_scale_min=cfg_data.crop_scale_min,
            hflip=cfg_data.hflip,
        )
    raise EnfoldError(f"unknown data.source {source!r}; valid forms: {', '.join(SOURCE_FORMS)}")
