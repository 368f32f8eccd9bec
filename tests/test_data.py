"""Tests for enfold.data: sources, the stream sampler and the corrupted dataset."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from enfold.config import DataConfig, ModelConfig
from enfold.data import (
    DIGITS_TEST_INDICES,
    DIGITS_TRAIN_INDICES,
    HELDOUT_PHOTOS,
    TRAIN_PHOTOS,
    BundledPhotosSource,
    CorruptedDataset,
    DigitsSource,
    FolderSource,
    StreamSampler,
    build_eval_loader,
    build_source,
    build_train_loader,
    denormalize,
    normalize,
)
from enfold.errors import EnfoldError

# ----------------------------------------------------------------------------- helpers


def _png(path: Path, color: tuple[int, ...], size: tuple[int, int] = (20, 14), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image at all" * 10)


def identity(img: torch.Tensor, generator: torch.Generator):
    return img, img, torch.ones(1, *img.shape[1:])


def noisy(img: torch.Tensor, generator: torch.Generator):
    """A corruption that consumes the generator, to check per-sample seeding."""
    noise = torch.rand(img.shape, generator=generator) * 0.1
    return (img + noise).clamp(0, 1), img, torch.ones(1, *img.shape[1:])


# ----------------------------------------------------------------------------- digits


def test_digits_split_shapes_labels():
    train = DigitsSource("train", 16, 3)
    test = DigitsSource("test", 16, 1)
    assert (len(train), len(test)) == (1437, 360)
    assert set(DIGITS_TRAIN_INDICES.tolist()).isdisjoint(DIGITS_TEST_INDICES.tolist())
    assert len(set(DIGITS_TRAIN_INDICES.tolist()) | set(DIGITS_TEST_INDICES.tolist())) == 1797
    x = train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert torch.equal(x[0], x[1])  # gray repeated to RGB
    assert test[5].shape == (1, 16, 16)
    native = DigitsSource("test", 8, 1)  # no resize: must still hand out a copy
    native[0].zero_()
    assert native[0].max() > 0
    assert train.classes == [str(d) for d in range(10)]
    assert len(train.labels) == 1437 and set(train.labels) == set(range(10))
    # Fixed split and no augmentation: a generator changes nothing.
    again = DigitsSource("train", 16, 3)
    assert again.labels == train.labels
    assert torch.equal(train.image(3, torch.Generator().manual_seed(1)), again.image(3, None))


# ----------------------------------------------------------------------------- photos


def test_photos_split_and_fixed_heldout():
    assert set(TRAIN_PHOTOS).isdisjoint(HELDOUT_PHOTOS) and len(HELDOUT_PHOTOS) >= 2
    train = BundledPhotosSource("train", 32, 3, crops=8)
    held = BundledPhotosSource("heldout", 32, 3, crops=6)
    assert set(train.photo_names).isdisjoint(held.photo_names)
    assert len(train) == 8 and len(held) == 6
    a = torch.stack([held[i] for i in range(6)])
    # A second construction (even with other crop settings) gives the same held-out crops.
    other = BundledPhotosSource("heldout", 32, 3, crops=6, crop_scale_min=0.9)
    b = torch.stack([other[i] for i in range(6)])
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.equal(a[0], a[1])  # different indices, different crops
    assert BundledPhotosSource("heldout", 24, 1, crops=2)[0].shape == (1, 24, 24)


def test_photo_augmentation_uses_only_the_generator():
    src = BundledPhotosSource("train", 32, 3, crops=4)
    torch.manual_seed(0)
    x1 = src.image(2, torch.Generator().manual_seed(7))
    torch.manual_seed(99)  # the global RNG must not matter
    x2 = src.image(2, torch.Generator().manual_seed(7))
    x3 = src.image(2, torch.Generator().manual_seed(8))
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)


# ----------------------------------------------------------------------------- folder


def test_folder_imagefolder_layout(tmp_path: Path):
    for cls, color in (("dog", (200, 10, 10)), ("cat", (10, 200, 10))):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", color)
    _png(tmp_path / "cat" / "gray.PNG", (128,), mode="L")
    _png(tmp_path / "dog" / "alpha.png", (1, 2, 3, 4), mode="RGBA")
    src = FolderSource(tmp_path, "train", 16, 3, holdout_fraction=0.0)
    assert src.classes == ["cat", "dog"]
    assert len(src) == 8 and sorted(set(src.labels)) == [0, 1]
    for i in range(len(src)):
        expected = "cat" if "cat/" in src.rel_paths[i] else "dog"
        assert src.classes[src.labels[i]] == expected
        assert src[i].shape == (3, 16, 16)
    aug = torch.Generator().manual_seed(3)
    assert src.image(0, aug).shape == (3, 16, 16)
    assert FolderSource(tmp_path, "train", 8, 1, holdout_fraction=0.0)[0].shape == (1, 8, 8)


def test_folder_hash_split_and_train_val(tmp_path: Path):
    flat = tmp_path / "flat"
    for i in range(20):
        _png(flat / f"img{i:02d}.jpg", (i * 10, 0, 0))
    train = FolderSource(flat, "train", 8, 3, holdout_fraction=0.3)
    held = FolderSource(flat, "heldout", 8, 3, holdout_fraction=0.3)
    assert train.labels is None and train.classes is None
    assert set(train.rel_paths).isdisjoint(held.rel_paths)
    assert len(train) + len(held) == 20 and len(held) >= 1
    assert held.rel_paths == FolderSource(flat, "heldout", 8, 3, holdout_fraction=0.3).rel_paths

    tv = tmp_path / "tv"
    _png(tv / "train" / "a" / "1.png", (1, 1, 1))
    _png(tv / "train" / "b" / "1.png", (2, 2, 2))
    _png(tv / "val" / "b" / "9.png", (3, 3, 3))
    val = FolderSource(tv, "heldout", 8, 3)
    assert val.classes == ["a", "b"] and val.labels == [1] and len(val) == 1
    assert len(FolderSource(tv, "train", 8, 3)) == 2


def test_folder_skips_unreadable(tmp_path: Path):
    _garbage(tmp_path / "a_broken.png")
    _png(tmp_path / "b.png", (0, 0, 255))
    _png(tmp_path / "c.png", (255, 0, 0))
    with pytest.warns(UserWarning, match="a_broken.png"):
        src = FolderSource(tmp_path, "train", 8, 3, holdout_fraction=0.0)
    assert src.unreadable == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file, not on every access
        x = src[0]  # the broken file is replaced by the next readable one
    assert torch.allclose(x, src[1])
    assert src.unreadable == 1


def test_folder_errors_name_the_folder(tmp_path: Path):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(EnfoldError, match="empty_dir"):
        FolderSource(empty, "train", 8, 3)
    bad = tmp_path / "only_garbage"
    _garbage(bad / "x.png")
    _garbage(bad / "y.jpg")
    with pytest.warns(UserWarning), pytest.raises(EnfoldError, match="only_garbage"):
        FolderSource(bad, "train", 8, 3, holdout_fraction=0.0)
    with pytest.raises(EnfoldError, match="does_not_exist"):
        FolderSource(tmp_path / "does_not_exist", "train", 8, 3)


def test_build_source_forms(tmp_path: Path):
    model, data = ModelConfig(img_size=16, in_chans=3), DataConfig(crops_per_epoch=5)
    assert len(build_source("digits", "heldout", model, data)) == 360
    assert len(build_source("photos:bundled", "train", model, data)) == 5
    assert len(build_source("photos:bundled", "heldout", model, data, heldout_count=3)) == 3
    _png(tmp_path / "one.png", (9, 9, 9))
    _png(tmp_path / "two.png", (9, 9, 9))
    assert len(build_source(f"folder:{tmp_path}", "train", model, data)) >= 1
    with pytest.raises(EnfoldError, match="folder:PATH"):
        build_source("imagenet", "train", model, data)


# ----------------------------------------------------------------------------- sampler


def test_sampler_ranks_disjoint_and_match_distributed_sampler():
    n = 10
    r0, r1 = StreamSampler(n, 2, 0, seed=5), StreamSampler(n, 2, 1, seed=5)
    e0, e1 = r0.epoch_indices(0), r1.epoch_indices(0)
    assert len(e0) == len(e1) == 5 and set(e0).isdisjoint(e1) and set(e0) | set(e1) == set(range(n))
    ref = torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=1, seed=5)
    ref.set_epoch(3)
    assert r1.epoch_indices(3) == list(ref)
    # Padding as DistributedSampler: 7 items on 2 ranks -> 4 each.
    assert len(StreamSampler(7, 2, 1, seed=0).epoch_indices(0)) == 4


def test_sampler_stream_crosses_epochs_and_resumes():
    s = StreamSampler(6, 1, 0, seed=1)
    it = iter(s)
    head = [next(it) for _ in range(20)]
    assert [e for e, _ in head[:6]] == [0] * 6 and head[6][0] == 1 and head[-1][0] == 3
    assert sorted(i for _, i in head[:6]) == list(range(6))
    assert [i for _, i in head[:6]] != [i for _, i in head[6:12]]  # reshuffled each epoch
    for start in (0, 4, 6, 13):
        resumed = iter(StreamSampler(6, 1, 0, seed=1, start_sample=start))
        assert [next(resumed) for _ in range(20 - start)] == head[start:]


# ----------------------------------------------------------------------------- dataset


def test_corrupted_dataset_deterministic_and_normalised():
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    src = BundledPhotosSource("train", 16, 3, crops=4)
    ds = CorruptedDataset(src, identity, mean, std, seed=0, augment=True)
    c1, k1, w1 = ds[(2, 1)]
    c2, k2, w2 = ds[(2, 1)]
    assert torch.equal(c1, c2) and torch.equal(k1, k2) and torch.equal(w1, w2)
    assert c1.shape == (3, 16, 16) and w1.shape == (1, 16, 16)
    assert not torch.allclose(denormalize(k1, mean, std), src.image(1, None))  # augmented
    assert not torch.equal(ds[(3, 1)][1], k1)  # another epoch, another crop
    # Int keys: evaluation view, no augmentation, normalised.
    ce, ke, _ = ds[1]
    assert torch.allclose(ke, normalize(src.image(1, None), mean, std))
    assert torch.allclose(denormalize(ke, mean, std), src.image(1, None), atol=1e-6)
    assert ke.min() >= -2.0 - 1e-6 and ke.max() <= 2.0 + 1e-6
    # The corruption's randomness comes from (seed, epoch, index) too.
    nd = CorruptedDataset(src, noisy, mean, std, seed=0, augment=False)
    other_seed = CorruptedDataset(src, noisy, mean, std, seed=1, augment=False)
    first = nd[(0, 1)][0]
    assert torch.equal(first, nd[(0, 1)][0])
    assert not torch.equal(first, nd[(1, 1)][0])
    assert not torch.equal(first, other_seed[(0, 1)][0])
    with pytest.raises(EnfoldError, match="in_chans"):
        CorruptedDataset(DigitsSource("test", 8, 1), identity, mean, std, seed=0, augment=False)


def test_loaders():
    mean, std = [0.5], [0.5]
    ds = CorruptedDataset(DigitsSource("test", 8, 1), identity, mean, std, seed=0, augment=True)
    loader = build_train_loader(ds, 16, 0, num_replicas=1, rank=0, seed=0)
    it = iter(loader)
    batches = [next(it) for _ in range(25)]  # 25 * 16 > 360: crosses an epoch boundary
    assert batches[0][0].shape == (16, 1, 8, 8) and batches[-1][2].shape == (16, 1, 8, 8)
    resumed = next(iter(build_train_loader(ds, 16, 0, 1, 0, 0, start_sample=16 * 24)))
    assert torch.equal(resumed[0], batches[24][0])
    ev = list(build_eval_loader(ds, 100))
    assert [b[0].shape[0] for b in ev] == [100, 100, 100, 60]
    expected = normalize(ds.source[101], mean, std)
    assert torch.allclose(ev[1][1][1], expected)
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(denormalize(normalize(x, mean, std), mean, std), x)
    assert np.isclose(float(normalize(torch.ones(1, 2, 2), mean, std).mean()), 1.0)
