"""Fashion-MNIST and the photo collection: the idx reader on files the tests write, and both
sources on the real packaged files (installed by `make data`; skipped, naming the package, where
they are absent)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from enfold.config import DataConfig, ModelConfig
from enfold.data import build_source
from enfold.data.fashion_mnist import (
    _MAGIC_IMAGES,
    _MAGIC_LABELS,
    FASHION_MNIST_DIR,
    FashionMNISTSource,
    load_fashion_mnist,
    read_idx,
)
from enfold.data.photos import (
    PHOTOS,
    PhotosSource,
    describe_photos,
    missing_photo_packages,
    photo_split,
    texture_crop_box,
)
from enfold.errors import EnfoldError

HAVE_FMNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed (`make data`)"
)
needs_photos = pytest.mark.skipif(
    bool(missing_photo_packages()),
    reason=f"photo packages not installed: {missing_photo_packages()} (`make data`)",
)


def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _write_split(root: Path, prefix: str, n: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for stem, magic, arr in (
        (f"{prefix}-images-idx3-ubyte", _MAGIC_IMAGES, images),
        (f"{prefix}-labels-idx1-ubyte", _MAGIC_LABELS, labels),
    ):
        data = _idx_bytes(magic, arr)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)
    return images, labels


# ----------------------------------------------------------------------------- idx reader


def test_read_idx_header_and_counts(tmp_path: Path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(_MAGIC_IMAGES, arr)))
    (tmp_path / "a").write_bytes(_idx_bytes(_MAGIC_IMAGES, arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", _MAGIC_IMAGES), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a", _MAGIC_IMAGES), arr)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    (tmp_path / "l").write_bytes(_idx_bytes(_MAGIC_LABELS, labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "l", _MAGIC_LABELS), labels)


def test_read_idx_rejects_wrong_magic_and_truncation(tmp_path: Path):
    arr = np.zeros((4, 28, 28), dtype=np.uint8)
    labels_file = tmp_path / "labels"
    labels_file.write_bytes(_idx_bytes(_MAGIC_LABELS, np.zeros(4, dtype=np.uint8)))
    with pytest.raises(EnfoldError, match=r"labels.*magic number 0x00000801.*fashion-mnist"):
        read_idx(labels_file, _MAGIC_IMAGES)
    full = _idx_bytes(_MAGIC_IMAGES, arr)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(full[:-100]))
    with pytest.raises(EnfoldError, match=r"cut\.gz is truncated.*fashion-mnist:PATH"):
        read_idx(cut, _MAGIC_IMAGES)
    header_only = tmp_path / "header"
    header_only.write_bytes(full[:6])
    with pytest.raises(EnfoldError, match="no full idx header"):
        read_idx(header_only, _MAGIC_IMAGES)
    broken_gzip = tmp_path / "broken.gz"
    noisy = _idx_bytes(_MAGIC_IMAGES, np.random.default_rng(0).integers(0, 256, (4, 28, 28)))
    broken_gzip.write_bytes(gzip.compress(noisy)[:50])
    with pytest.raises(EnfoldError, match=r"cannot read .*broken\.gz"):
        read_idx(broken_gzip, _MAGIC_IMAGES)


def test_fashion_mnist_folder_checks_counts_and_names_missing_files(tmp_path: Path):
    # A user's folder (plain files, as torchvision leaves them) with the wrong number of images.
    _write_split(tmp_path, "t10k", 20, gz=False)
    load_fashion_mnist.cache_clear()
    with pytest.raises(EnfoldError, match="holds 20 images, expected 10000"):
        FashionMNISTSource("test", 28, 1, root=tmp_path)
    with pytest.raises(EnfoldError, match=r"train-images-idx3-ubyte\.gz not found.*make data"):
        FashionMNISTSource("train", 28, 1, root=tmp_path)
    with pytest.raises(EnfoldError, match="folder .*nope not found"):
        FashionMNISTSource("train", 28, 1, root=tmp_path / "nope")
    with pytest.raises(EnfoldError, match="needs a folder"):
        build_source("fashion-mnist:", "train", ModelConfig(), DataConfig())


# ----------------------------------------------------------------------------- real files


@needs_fmnist
def test_fashion_mnist_real_files_official_split():
    model = ModelConfig(img_size=28, in_chans=1)
    train = build_source("fashion-mnist", "train", model, DataConfig())
    test = build_source(f"fashion-mnist:{FASHION_MNIST_DIR}", "heldout", model, DataConfig())
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes is not None and train.classes[9] == "Ankle boot"
    img = test.image(0)
    assert img.shape == (1, 28, 28) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    # The training set's pixel mean, which configs/pretrain/fmnist-tiny.yaml normalises with.
    images, _ = load_fashion_mnist(str(FASHION_MNIST_DIR), "train")
    assert abs(images.float().mean().item() / 255 - 0.286) < 1e-3
    # Resized and 3-channel views for other model shapes.
    assert FashionMNISTSource("test", 32, 3).image(5).shape == (3, 32, 32)


@needs_photos
def test_photo_collection_split_is_by_file_and_fixed():
    train, held = photo_split("train"), photo_split("heldout")
    assert len(train) >= 40 and len(held) >= 10
    assert not {p.name for p in train} & {p.name for p in held}
    assert not {p.path for p in train if p.path} & {p.path for p in held if p.path}
    assert len({p.name for p in PHOTOS}) == len(PHOTOS)
    rows = describe_photos()
    assert all(r["native"] != "missing" for r in rows)
    model, data = ModelConfig(img_size=32), DataConfig(crops_per_epoch=7)
    src = build_source("photos", "heldout", model, data, heldout_count=5)
    assert isinstance(src, PhotosSource) and len(src) == 5
    again = build_source("photos", "heldout", model, data, heldout_count=5)
    for i in range(5):
        assert torch.equal(src.image(i), again.image(i))  # fixed held-out crops
    assert len(build_source("photos", "train", model, data)) == 7


@needs_photos
def test_photo_crops_keep_texture_scale():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = texture_crop_box(300, 500, 32, 1.5, gen)
        assert h == w and 32 <= h <= 48 and 0 <= top <= 300 - h and 0 <= left <= 500 - w
    src = PhotosSource("train", 32, 3, crops=4, short_side=256)
    assert all(min(p.shape[-2:]) <= 256 for p in src.photos)
    with pytest.raises(EnfoldError, match="photo_short_side"):
        PhotosSource("train", 64, 3, short_side=32)
    with pytest.raises(EnfoldError, match="crop_max_zoom"):
        PhotosSource("train", 32, 3, max_zoom=0.5)


def test_photos_without_packages_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    import enfold.data.photos as photos

    monkeypatch.setattr(photos, "missing_photo_packages", lambda: ["opencv-doc"])
    with pytest.raises(EnfoldError, match=r"opencv-doc.*make data.*photos:bundled.*folder:PATH"):
        photos.PhotosSource("train", 32, 3)
