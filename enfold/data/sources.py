"""Image sources: where clean images come from, before any corruption.

Every source yields float32 ``(C, H, W)`` tensors in [0, 1] at ``img_size`` x ``img_size`` with
``in_chans`` channels. ``image(index, generator)`` is the one entry point: with ``generator=None``
the result is a pure function of ``index`` (evaluation); with a generator, augmentation draws its
randomness from that generator only, never from the global RNG, so a training sample can be
reproduced from its seed in any process.

Three sources exist, all usable offline:

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, labelled 0-9).
* ``photos``: colour photos bundled with scikit-image and scikit-learn, seen through random crops;
  a few photos are held out entirely so evaluation measures generalisation to unseen scenes.
* ``folder:PATH``: any folder of images, ImageFolder-style (class subfolders) or not.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from enfold.errors import EnfoldError

# ----------------------------------------------------------------------------- constants

# The digits split is fixed once and for all: fine-tuning and linear probes reuse it, so a model
# pretrained on "train" is never evaluated on images it saw.
DIGITS_COUNT = 1797
DIGITS_TEST_COUNT = 360
DIGITS_SPLIT_SEED = 0
DIGITS_PERMUTATION: np.ndarray = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(DIGITS_COUNT)
DIGITS_TRAIN_INDICES: np.ndarray = np.sort(DIGITS_PERMUTATION[:-DIGITS_TEST_COUNT])
DIGITS_TEST_INDICES: np.ndarray = np.sort(DIGITS_PERMUTATION[-DIGITS_TEST_COUNT:])

# Colour photos that load from the installed packages with no network access (checked against
# scikit-image 0.26: entries such as "lily", "eagle" or "kidney" need a pooch download and are left
# out; "cat" is the same picture as "chelsea"; "colorwheel" and "logo" are synthetic).
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "china",
    "coffee",
    "flower",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "stereo_motorcycle",
)
# Whole photos held out, so the held-out score measures unseen scenes, not unseen crops.
HELDOUT_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "flower")
TRAIN_PHOTOS: tuple[str, ...] = tuple(n for n in PHOTO_NAMES if n not in HELDOUT_PHOTOS)

# Held-out and other deterministic photo crops depend on the index only (not on the config), so
# the held-out set stays the same when training settings change.
PHOTO_EVAL_SEED = 20240607
PHOTO_EVAL_SCALE_MIN = 0.35

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
)

_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL uses for "L"


# ----------------------------------------------------------------------------- pixel helpers


def _check_in_chans(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise EnfoldError(f"model.in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")


def _check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    if split not in allowed:
        raise EnfoldError(f"{what} split must be one of {list(allowed)}, got {split!r}")


def to_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Convert a ``(C, H, W)`` image to ``in_chans`` channels.

    Alpha is dropped (RGBA -> RGB, LA -> L), gray is repeated to RGB, and RGB becomes luma when a
    single channel is wanted.
    """
    c = x.shape[0]
    if c == 4:
        x = x[:3]
    elif c == 2:
        x = x[:1]
    c = x.shape[0]
    if c == in_chans:
        return x
    if c == 1 and in_chans == 3:
        return x.expand(3, -1, -1).clone()
    if c == 3 and in_chans == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(dim=0, keepdim=True)
    raise EnfoldError(f"cannot convert an image with {c} channels to {in_chans} channels")


def _resize(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of a float ``(C, h, w)`` image to ``(C, size, size)``, clamped to [0, 1]."""
    if x.shape[-2:] == (size, size):
        return x.clamp(0.0, 1.0)  # out of place: never hand out a view of cached pixels
    out = F.interpolate(
        x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )[0]
    return out.clamp_(0.0, 1.0)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def crop_box(
    height: int,
    width: int,
    scale_min: float,
    generator: torch.Generator,
    aspect: tuple[float, float] = _ASPECT_RANGE,
) -> tuple[int, int, int, int]:
    """A random-resized-crop box ``(top, left, h, w)``, drawn only from ``generator``.

    Same recipe as torchvision's ``RandomResizedCrop.get_params`` (area share in
    ``[scale_min, 1]``, log-uniform aspect ratio, ten tries, then a centred fallback), but with an
    explicit generator so the crop is reproducible.
    """
    area = height * width
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(10):
        u = torch.rand(2, generator=generator)
        target = area * (scale_min + (1.0 - scale_min) * float(u[0]))
        ratio = math.exp(log_lo + (log_hi - log_lo) * float(u[1]))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback: the whole image, trimmed to the allowed aspect range.
    in_ratio = width / height
    if in_ratio < aspect[0]:
        w, h = width, int(round(width / aspect[0]))
    elif in_ratio > aspect[1]:
        h, w = height, int(round(height * aspect[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def center_square(height: int, width: int) -> tuple[int, int, int, int]:
    """The centred square box ``(top, left, side, side)``.

    Cropping it and resizing to ``size`` equals "resize the shorter side to ``size``, then
    centre-crop", up to rounding, while only resampling the pixels that are kept.
    """
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def _crop_resize(
    levels: Sequence[torch.Tensor], box: tuple[int, int, int, int], size: int
) -> torch.Tensor:
    """Crop ``box`` (full-resolution coordinates) and resize it to ``size`` x ``size``.

    ``levels`` is an image pyramid (``levels[0]`` full resolution, each next level half the
    size). The coarsest level that still has at least two pixels per output pixel is used, so a
    32-pixel crop of a 1400-pixel photo converts and filters a few thousand pixels, not millions;
    antialiased resizing does the rest.
    """
    top, left, h, w = box
    level = 0
    while level + 1 < len(levels) and min(h, w) / 2 ** (level + 1) >= 2 * size:
        level += 1
    img, f = levels[level], 2**level
    height, width = img.shape[-2:]
    t0, l0 = min(int(round(top / f)), height - 1), min(int(round(left / f)), width - 1)
    t1 = min(max(int(round((top + h) / f)), t0 + 1), height)
    l1 = min(max(int(round((left + w) / f)), l0 + 1), width)
    return _resize(_as_float(img[:, t0:t1, l0:l1]), size)


def augment_crop(
    levels: Sequence[torch.Tensor],
    size: int,
    scale_min: float,
    hflip: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random resized crop (+ optional horizontal flip) of an image given as a pyramid.

    ``levels[0]`` is the uint8 or float ``(C, H, W)`` image; pass ``(img,)`` when there is no
    pyramid.
    """
    box = crop_box(levels[0].shape[-2], levels[0].shape[-1], scale_min, generator)
    out = _crop_resize(levels, box, size)
    if hflip and float(torch.rand(1, generator=generator)) < 0.5:
        out = out.flip(-1)
    return out


def center_resize(levels: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Deterministic evaluation view: centre square crop resized to ``size`` x ``size``."""
    box = center_square(levels[0].shape[-2], levels[0].shape[-1])
    return _crop_resize(levels, box, size)


def _index_generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


# ----------------------------------------------------------------------------- base class


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
        _check_in_chans(in_chans)
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


# ----------------------------------------------------------------------------- digits


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
    digits are already centred, so there is no augmentation: ``augment`` is accepted only so all
    sources share a constructor shape, and a generator passed to ``image`` is ignored.
    """

    def __init__(self, split: str, img_size: int, in_chans: int = 3, augment: bool = False) -> None:
        super().__init__(img_size, in_chans)
        _check_split(split, ("train", "test", "heldout"), "digits")
        self.split = "test" if split == "heldout" else split
        self.augment = augment
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
        return _resize(self._images[index][None], self.img_size, antialias=False)


# ----------------------------------------------------------------------------- photos


def _photo_loaders() -> dict[str, Callable[[], Any]]:
    import skimage.data as skd
    from sklearn.datasets import load_sample_image

    return {
        "astronaut": skd.astronaut,
        "chelsea": skd.chelsea,
        "china": lambda: load_sample_image("china.jpg"),
        "coffee": skd.coffee,
        "flower": lambda: load_sample_image("flower.jpg"),
        "hubble_deep_field": skd.hubble_deep_field,
        "immunohistochemistry": skd.immunohistochemistry,
        "retina": skd.retina,
        "rocket": skd.rocket,
        "stereo_motorcycle": lambda: skd.stereo_motorcycle()[0],  # (left, right, disparity)
    }


@functools.cache
def load_photo(name: str) -> torch.Tensor:
    """One bundled photo as a uint8 ``(3, H, W)`` tensor, loaded once per process."""
    loaders = _photo_loaders()
    if name not in loaders:
        raise EnfoldError(f"unknown photo {name!r}; available: {', '.join(PHOTO_NAMES)}")
    try:
        arr = np.asarray(loaders[name]())
    except Exception as exc:  # e.g. a data file missing from a trimmed installation
        raise EnfoldError(f"could not load the bundled photo {name!r}: {exc}") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = np.array(arr[:, :, :3], dtype=np.uint8)  # a writable copy (skimage arrays are read-only)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def image_pyramid(img: torch.Tensor, min_side: int = 16) -> tuple[torch.Tensor, ...]:
    """``img`` followed by 2x average-pooled copies (same dtype) down to ``min_side`` pixels."""
    levels = [img]
    while min(levels[-1].shape[-2:]) // 2 >= min_side:
        pooled = F.avg_pool2d(levels[-1].float()[None], 2)[0]
        levels.append(pooled.round().to(img.dtype) if img.dtype == torch.uint8 else pooled)
    return tuple(levels)


@functools.cache
def photo_pyramid(name: str) -> tuple[torch.Tensor, ...]:
    """The uint8 pyramid of bundled photo ``name``, built once per process."""
    return image_pyramid(load_photo(name))


class PhotosSource(ImageSource):
    """Random crops of colour photos bundled with scikit-image and scikit-learn.

    ``split`` "train" uses :data:`TRAIN_PHOTOS`, "heldout" uses :data:`HELDOUT_PHOTOS` (disjoint
    photos). The source has ``crops`` items; item ``index`` picks a photo uniformly and takes a
    random resized crop. With a generator the crop (and flip, if ``hflip``) comes from it; with
    ``generator=None`` the crop is seeded by ``index`` alone (fixed scale range, no flip), so the
    held-out set is identical across runs and configs.
    """

    def __init__(
        self,
        split: str,
        img_size: int,
        in_chans: int = 3,
        crops: int = 4096,
        crop_scale_min: float = 0.35,
        hflip: bool = True,
    ) -> None:
        super().__init__(img_size, in_chans)
        _check_split(split, ("train", "heldout"), "photos")
        if crops < 1:
            raise EnfoldError(f"photos need at least one crop per epoch, got {crops}")
        if not 0.0 < crop_scale_min <= 1.0:
            raise EnfoldError(f"data.crop_scale_min must be in (0, 1], got {crop_scale_min}")
        self.split = split
        self.crops = int(crops)
        self.crop_scale_min = float(crop_scale_min)
        self.hflip = bool(hflip)
        self.photo_names: tuple[str, ...] = TRAIN_PHOTOS if split == "train" else HELDOUT_PHOTOS
        self.photos = [photo_pyramid(n) for n in self.photo_names]

    def __len__(self) -> int:
        return self.crops

    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            gen = _index_generator(PHOTO_EVAL_SEED, index)
            scale_min, hflip = PHOTO_EVAL_SCALE_MIN, False
        else:
            gen, scale_min, hflip = generator, self.crop_scale_min, self.hflip
        # Uniform over photos: area weighting would let the 1411x1411 retina dominate.
        photo = self.photos[int(torch.randint(0, len(self.photos), (1,), generator=gen))]
        return augment_crop(photo, self.img_size, scale_min, hflip, gen)


# ----------------------------------------------------------------------------- folder


def _scan_images(root: Path) -> list[str]:
    """Relative POSIX paths of all image files under ``root``, sorted (stable across machines)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def _one_level_classes(rel_paths: list[str]) -> bool:
    """True when every image sits exactly one folder deep (``class/file``)."""
    return bool(rel_paths) and all(p.count("/") == 1 for p in rel_paths)


def _hash_fraction(rel_path: str) -> float:
    """A stable number in [0, 1) from a relative path (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / float(16**15)


def _open_image(path: Path, min_side: int = 0) -> torch.Tensor:
    """Decode ``path`` to a uint8 ``(3, H, W)`` tensor; raises on unreadable files.

    JPEGs are decoded at a reduced scale (1/2, 1/4 or 1/8) when the shorter side stays at least
    ``min_side``: decoding dominates the cost of small crops from large photos.
    """
    from PIL import Image

    with Image.open(path) as im:
        if min_side > 0 and im.format == "JPEG":
            im.draft(im.mode, (min_side, min_side))
        if im.mode == "P":  # palette images with transparency must go through RGBA
            im = im.convert("RGBA")
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class FolderSource(ImageSource):
    """Images from a folder: ImageFolder layout (``root/<class>/<image>``) or any tree of images.

    If ``root/train`` and ``root/val`` both exist, "train" reads ``root/train`` and "heldout" reads
    ``root/val``. Otherwise each file goes to "heldout" when a stable hash of its relative path
    falls below ``holdout_fraction`` (at least one file when the fraction is positive and there
    are two or more files). Labels come from class folder names (sorted) when every image is
    exactly one folder deep; otherwise ``labels`` and ``classes`` are ``None``.

    Unreadable files are skipped with one warning each, counted in ``unreadable`` (per process:
    DataLoader workers keep their own count), and replaced by the next readable image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        img_size: int,
        in_chans: int = 3,
        holdout_fraction: float = 0.05,
        crop_scale_min: float = 0.35,
        hflip: bool = True,
    ) -> None:
        super().__init__(img_size, in_chans)
        _check_split(split, ("train", "heldout"), "folder")
        if not 0.0 <= holdout_fraction < 1.0:
            raise EnfoldError(f"data.holdout_fraction must be in [0, 1), got {holdout_fraction}")
        if not 0.0 < crop_scale_min <= 1.0:
            raise EnfoldError(f"data.crop_scale_min must be in (0, 1], got {crop_scale_min}")
        root = Path(root).expanduser()
        if not root.exists():
            raise EnfoldError(f"image folder not found: {root}")
        if not root.is_dir():
            raise EnfoldError(f"image folder {root} is not a directory")
        self.root = root
        self.split = split
        self.crop_scale_min = float(crop_scale_min)
        self.hflip = bool(hflip)
        self.unreadable = 0
        self._bad: set[int] = set()
        # Smallest random crop keeps >= 2 source pixels per output pixel after a reduced decode.
        self._decode_min_side = math.ceil(2 * self.img_size / math.sqrt(0.75 * crop_scale_min))

        exts = " ".join(IMAGE_EXTENSIONS)
        train_dir, val_dir = root / "train", root / "val"
        if train_dir.is_dir() and val_dir.is_dir():
            base = train_dir if split == "train" else val_dir
            rel = _scan_images(base)
            other = _scan_images(val_dir if split == "train" else train_dir)
            # Classes from both halves, so a label means the same class in train and val.
            labelled = _one_level_classes(rel) and (not other or _one_level_classes(other))
            class_paths = rel + other
            where = f"{base} (split '{split}' of {root})"
        else:
            base = root
            everything = _scan_images(root)
            if not everything:
                raise EnfoldError(
                    f"no image files found in {root} (looked recursively for {exts}, any case)"
                )
            rel = self._hash_split(everything, holdout_fraction, split)
            labelled = _one_level_classes(everything)
            class_paths = everything
            where = f"{root} (split '{split}', holdout_fraction={holdout_fraction})"
        if not rel:
            raise EnfoldError(f"no image files found in {where} (looked for {exts}, any case)")

        self.base = base
        self.files = [base / p for p in rel]
        self.rel_paths = rel
        if labelled:
            self.classes = sorted({p.split("/", 1)[0] for p in class_paths})
            lookup = {c: i for i, c in enumerate(self.classes)}
            self.labels = [lookup[p.split("/", 1)[0]] for p in rel]
        self._check_readable(where)

    @staticmethod
    def _hash_split(rel_paths: list[str], fraction: float, split: str) -> list[str]:
        fracs = {p: _hash_fraction(p) for p in rel_paths}
        held = {p for p in rel_paths if fracs[p] < fraction}
        if not held and fraction > 0 and len(rel_paths) >= 2:
            held = {min(rel_paths, key=lambda p: fracs[p])}  # tiny folders still get an eval set
        if split == "heldout":
            return [p for p in rel_paths if p in held]
        return [p for p in rel_paths if p not in held]

    def _mark_bad(self, index: int, exc: BaseException) -> None:
        if index in self._bad:
            return
        self._bad.add(index)
        self.unreadable += 1
        warnings.warn(
            f"skipping unreadable image {self.files[index]}: {exc}", UserWarning, stacklevel=3
        )

    def _try_open(self, index: int) -> torch.Tensor | None:
        if index in self._bad:
            return None
        try:
            return _open_image(self.files[index], self._decode_min_side)
        except Exception as exc:  # PIL raises assorted types (OSError, ValueError, ...) on damage
            self._mark_bad(index, exc)
        return None

    def _check_readable(self, where: str) -> None:
        # Fail at start-up, not hours later inside a DataLoader worker.
        for i in range(len(self.files)):
            if self._try_open(i) is not None:
                return
        raise EnfoldError(
            f"none of the {len(self.files)} image files in {where} could be read "
            f"(PIL failed on every one; {self.unreadable} skipped)"
        )

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        n = len(self.files)
        for step in range(n):
            img = self._try_open((index + step) % n)
            if img is not None:
                break
        else:
            raise EnfoldError(f"no readable image left in {self.base}")
        if generator is None:
            return center_resize((img,), self.img_size)
        return augment_crop((img,), self.img_size, self.crop_scale_min, self.hflip, generator)


# ----------------------------------------------------------------------------- factory

SOURCE_FORMS = ("digits", "photos", "folder:PATH")


def build_source(
    source: str,
    split: str,
    cfg_model: Any,
    cfg_data: Any,
    heldout_count: int = 256,
) -> ImageSource:
    """Build the image source named by ``data.source`` for ``split`` ("train" or "heldout").

    ``cfg_model`` supplies ``img_size``/``in_chans``; ``cfg_data`` supplies the crop settings.
    For digits "heldout" is the fixed test split; for photos it has ``heldout_count`` fixed crops
    of the held-out photos; for folders it is ``root/val`` or the hashed held-out share.
    """
    _check_split(split, ("train", "heldout"), "data")
    img_size, in_chans = cfg_model.img_size, cfg_model.in_chans
    if source == "digits":
        return DigitsSource("train" if split == "train" else "test", img_size, in_chans)
    if source == "photos":
        crops = cfg_data.crops_per_epoch if split == "train" else heldout_count
        return PhotosSource(
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
