"""Data: image sources, the endless resumable sampler and the corrupted-pair dataset."""

from __future__ import annotations

from enfold.data.dataset import (
    CorruptedDataset,
    build_eval_loader,
    build_train_loader,
    denormalize,
    normalize,
    sample_generator,
)
from enfold.data.labeled import LabeledDataset, require_labels, select_per_class
from enfold.data.sampler import StreamSampler
from enfold.data.sources import (
    DIGITS_TEST_INDICES,
    DIGITS_TRAIN_INDICES,
    HELDOUT_PHOTOS,
    IMAGE_EXTENSIONS,
    PHOTO_NAMES,
    SOURCE_FORMS,
    TRAIN_PHOTOS,
    BundledPhotosSource,
    DigitsSource,
    FashionMNISTSource,
    FolderSource,
    ImageSource,
    PhotosSource,
    build_source,
    load_photo,
    to_channels,
)

__all__ = [
    "DIGITS_TEST_INDICES",
    "DIGITS_TRAIN_INDICES",
    "HELDOUT_PHOTOS",
    "IMAGE_EXTENSIONS",
    "SOURCE_FORMS",
    "PHOTO_NAMES",
    "TRAIN_PHOTOS",
    "CorruptedDataset",
    "BundledPhotosSource",
    "DigitsSource",
    "FashionMNISTSource",
    "FolderSource",
    "ImageSource",
    "LabeledDataset",
    "PhotosSource",
    "StreamSampler",
    "build_eval_loader",
    "build_source",
    "build_train_loader",
    "denormalize",
    "load_photo",
    "normalize",
    "require_labels",
    "sample_generator",
    "select_per_class",
    "to_channels",
]
