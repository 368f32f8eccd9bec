"""Real colour photos that install with their files: the restorer's training and held-out scenes.

Two sources:

* ``photos`` (:class:`PhotosSource`): the photo collection below, seen through crops at native or
  mildly reduced resolution, so a crop holds texture and edges (the regime in which restoration
  matters; a 32x32 crop of a whole photo shrunk 20x is a blur that no method can fail on).
* ``photos:bundled`` (:class:`BundledPhotosSource`): the ten photos bundled with scikit-image and
  scikit-learn, seen through random resized crops of the whole photo; kept for quick configs and
  tests because it needs no system package.

Whole photos are split into train and held-out by file (stereo pairs and other views of one
scene stay on one side), so the held-out score measures unseen scenes, not unseen crops.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from enfold.data.decode import open_image
from enfold.data.image_source import ImageSource
from enfold.data.transforms import augment_crop, check_split, crop_resize, index_generator
from enfold.errors import EnfoldError

# ----------------------------------------------------------------------------- the collection

OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
LOMIRI_DIR = Path("/usr/share/backgrounds")
PLASMA_DIR = Path("/usr/share/wallpapers")


@dataclass(frozen=True)
class Photo:
    """One photo of the collection: where it comes from and which side of the split it is on."""

    name: str  # "<collection>:<stem>", unique
    package: str  # what installs it ("scikit-image", "opencv-doc", ...)
    path: Path | None  # None for photos loaded through scikit-image / scikit-learn
    heldout: bool


def _opencv(stem: str, suffix: str = ".jpg", heldout: bool = False) -> Photo:
    return Photo(f"opencv:{stem}", "opencv-doc", OPENCV_DIR / f"{stem}{suffix}", heldout)


def _lomiri(stem: str, heldout: bool = False) -> Photo:
    return Photo(f"lomiri:{stem}", "lomiri-wallpapers-16.04", LOMIRI_DIR / f"{stem}.jpg", heldout)


def _plasma(stem: str, heldout: bool = False) -> Photo:
    path = PLASMA_DIR / stem / "contents" / "images" / "2560x1600.jpg"
    return Photo(f"plasma:{stem}", "plasma-workspace-wallpapers", path, heldout)


def _bundled(stem: str, heldout: bool = False) -> Photo:
    return Photo(f"bundled:{stem}", "scikit-image/scikit-learn", None, heldout)


# Every photo in use, and every file of those packages left out, with the reason. Only colour
# photographs of real scenes are used. Left out of opencv-doc: renders (Blender_Suzanne1/2,
# HappyFish, LinuxLogo, WindowsLogo, opencv-logo*, ml, templ, tmpl, mask), synthetic patterns and
# charts (chessboard, gradient, pic1-6, detect_blob, ellipses, cards, pca_test1, notes,
# alphabet_*), text and documents (imageTextN/R, text_defocus, text_motion, sudoku, digits), a
# painting (starry_night), a disparity map (aloeGT), a deliberately tampered copy
# (ela_modified), an artificially motion-blurred plate (licenseplate_motion), a composited
# product shot on white (smarties) and gray-only photos (basketball1/2, box, box_in_scene,
# blox, left*/right* calibration shots). Left out of
# lomiri-wallpapers-16.04: two abstract images (analogpattern_by_Peter_Nerlich,
# umang_by_Abhishek_Mudgal). Of plasma-workspace-wallpapers only the eleven photographs are used;
# the rest (Altai, Autumn, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui, Honeywave,
# IceCold, Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna) is
# digital art.
PHOTOS: tuple[Photo, ...] = (
    # opencv-doc: classic test photos (BSD-3-Clause, with OpenCV)
    _opencv("aero1"),
    _opencv("aero3"),  # another view of aero1's scene: same side of the split
    _opencv("aloeL"),
    _opencv("aloeR"),  # stereo pair
    _opencv("apple"),
    _opencv("board"),
    _opencv("chicky_512", ".png"),
    _opencv("ela_original"),
    _opencv("graf1", ".png"),
    _opencv("graf3", ".png"),
    _opencv("home"),
    _opencv("leuvenA"),
    _opencv("leuvenB"),
    _opencv("messi5"),
    _opencv("orange"),
    _opencv("rubberwhale1", ".png"),
    _opencv("rubberwhale2", ".png"),
    _opencv("squirrel_cls"),
    _opencv("stuff"),
    _opencv("baboon", heldout=True),
    _opencv("building", heldout=True),
    _opencv("butterfly", heldout=True),
    _opencv("fruits", heldout=True),
    # lomiri-wallpapers-16.04: photographs, CC-BY / CC-BY-SA
    _lomiri("Bridge_by_Sander_Klootwijk"),
    _lomiri("Dragonfly_by_Bolly"),
    _lomiri("Picture_0B_by_freespace"),
    _lomiri("Picture_1A_by_freespace"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi"),
    _lomiri("free_by_Peter_Nerlich"),
    _lomiri("friends_by_Aitzol_Berasategi"),
    _lomiri("greentock_by_Peter_Nerlich"),
    _lomiri("picosdeeuropa_by_Aitzol_Berasategi"),
    _lomiri("seeding_by_Clements_Engelhardt"),
    _lomiri("sunset_by_Aitzol_Berasategi"),
    _lomiri("life_by_Aitzol_Berasategi", heldout=True),
    _lomiri("Wine_by_Jakkub_Mede", heldout=True),
    # plasma-workspace-wallpapers: photographs, GPL/LGPL/CC-BY-SA per wallpaper
    _plasma("BytheWater"),
    _plasma("ColdRipple"),
    _plasma("DarkestHour"),
    _plasma("EveningGlow"),
    _plasma("Grey"),
    _plasma("Kite"),
    _plasma("OneStandsOut"),
    _plasma("summer_1am"),
    _plasma("ColorfulCups", heldout=True),
    _plasma("FallenLeaf", heldout=True),
    _plasma("Path", heldout=True),
    # scikit-image and scikit-learn (installed with enfold)
    _bundled("astronaut"),
    _bundled("china"),
    _bundled("hubble_deep_field"),
    _bundled("immunohistochemistry"),
    _bundled("retina"),
    _bundled("rocket"),
    _bundled("stereo_motorcycle"),
    _bundled("chelsea", heldout=True),
    _bundled("coffee", heldout=True),
    _bundled("flower", heldout=True),
)
PHOTO_PACKAGES: tuple[str, ...] = (
    "opencv-doc",
    "lomiri-wallpapers-16.04",
    "plasma-workspace-wallpapers",
)

# The bundled-only source keeps its original names and split.
PHOTO_NAMES: tuple[str, ...] = tuple(
    p.name.split(":", 1)[1] for p in PHOTOS if p.package == "scikit-image/scikit-learn"
)
HELDOUT_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "flower")
TRAIN_PHOTOS: tuple[str, ...] = tuple(n for n in PHOTO_NAMES if n not in HELDOUT_PHOTOS)

# Held-out and other deterministic crops depend on the index only (not on the config), so the
# held-out set stays the same when training settings change.
PHOTO_EVAL_SEED = 20240607
PHOTO_EVAL_SCALE_MIN = 0.35


def photo_split(split: str) -> tuple[Photo, ...]:
    """The collection's photos of ``split`` ("train" or "heldout"), in the fixed order above."""
    check_split(split, ("train", "heldout"), "photos")
    return tuple(p for p in PHOTOS if p.heldout == (split == "heldout"))


def missing_photo_packages() -> list[str]:
    """The Debian packages of the collection whose files are not on this machine."""
    missing = []
    for package in PHOTO_PACKAGES:
        files = [p.path for p in PHOTOS if p.package == package and p.path is not None]
        if any(not f.is_file() for f in files):
            missing.append(package)
    return missing


# ----------------------------------------------------------------------------- loading


def _bundled_loaders() -> dict[str, Callable[[], Any]]:
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
    """One bundled photo (e.g. ``"chelsea"``) as a uint8 ``(3, H, W)`` tensor, cached."""
    loaders = _bundled_loaders()
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


def shrink_to_short_side(img: torch.Tensor, short_side: int) -> torch.Tensor:
    """``img`` (uint8 ``(3, H, W)``) reduced with antialiasing so its shorter side is at most
    ``short_side``; smaller photos are kept at native resolution (never enlarged)."""
    h, w = img.shape[-2:]
    if min(h, w) <= short_side:
        return img
    scale = short_side / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True,
                        align_corners=False)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


@functools.cache
def load_collection_photo(name: str, short_side: int) -> torch.Tensor:
    """Photo ``name`` of :data:`PHOTOS` as uint8 ``(3, H, W)``, shorter side <= ``short_side``."""
    photo = next((p for p in PHOTOS if p.name == name), None)
    if photo is None:
        raise EnfoldError(f"unknown photo {name!r}; `python -m enfold.data photos` lists them")
    if photo.path is None:
        img = load_photo(name.split(":", 1)[1])
    else:
        if not photo.path.is_file():
            raise EnfoldError(
                f"photo {photo.path} is missing: install the Debian package {photo.package} "
                "(`make data`), or train on your own photos with data.source=folder:PATH"
            )
        try:
            # A reduced JPEG decode (1/2 .. 1/8) keeps at least 2x the pixels that are kept.
            img = open_image(photo.path, min_side=2 * short_side)
        except Exception as exc:  # PIL raises assorted types on damaged files
            raise EnfoldError(f"cannot decode photo {photo.path}: {exc}") from exc
    return shrink_to_short_side(img, short_side)


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


# ----------------------------------------------------------------------------- sources


def texture_crop_box(
    height: int, width: int, size: int, max_zoom: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """A square box ``(top, left, side, side)`` with ``side`` log-uniform in
    ``[size, size * max_zoom]`` (capped by the photo), drawn from ``generator`` only.

    Resizing it to ``size`` keeps the photo at native resolution (zoom 1) or reduces it mildly,
    so crops keep the photo's texture and edges.
    """
    u = torch.rand(3, generator=generator)
    hi = min(size * max_zoom, height, width)
    lo = min(size, hi)
    side = int(round(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(u[0]))))
    side = max(1, min(side, height, width))
    top = int(float(u[1]) * (height - side + 1))
    left = int(float(u[2]) * (width - side + 1))
    return min(top, height - side), min(left, width - side), side, side


class PhotosSource(ImageSource):
    """Crops at texture scale from the real photo collection (:data:`PHOTOS`).

    Each photo is reduced once so its shorter side is at most ``short_side`` pixels (native
    resolution when it is smaller). Item ``index`` picks a photo uniformly (area weighting would
    let the largest wallpapers dominate) and a square crop whose side is log-uniform in
    ``[img_size, img_size * max_zoom]`` photo pixels, resized to ``img_size``; with a generator
    it may also be flipped. With ``generator=None`` the crop is seeded by ``index`` alone (no
    flip), so the held-out set is identical across runs and configs with the same scale settings.
    """

    def __init__(
        self,
        split: str,
        img_size: int,
        in_chans: int = 3,
        crops: int = 4096,
        short_side: int = 512,
        max_zoom: float = 1.5,
        hflip: bool = True,
    ) -> None:
        super().__init__(img_size, in_chans)
        check_split(split, ("train", "heldout"), "photos")
        if crops < 1:
            raise EnfoldError(f"photos need at least one crop per epoch, got {crops}")
        if short_side < img_size:
            raise EnfoldError(
                f"data.photo_short_side={short_side} is below model.img_size={img_size}: "
                "raise data.photo_short_side"
            )
        if not max_zoom >= 1.0:
            raise EnfoldError(
                f"data.crop_max_zoom must be >= 1 (1 = native pixels), got {max_zoom}"
            )
        missing = missing_photo_packages()
        if missing:
            raise EnfoldError(
                f"data.source=photos needs the Debian packages {', '.join(missing)}: run "
                "`make data` (or `sudo apt-get install " + " ".join(missing) + "`), use "
                "data.source=photos:bundled for the photos that ship with scikit-image, or "
                "data.source=folder:PATH for your own photos"
            )
        self.split = split
        self.crops = int(crops)
        self.short_side = int(short_side)
        self.max_zoom = float(max_zoom)
        self.hflip = bool(hflip)
        self.entries: tuple[Photo, ...] = photo_split(split)
        self.photos = [load_collection_photo(p.name, self.short_side) for p in self.entries]

    def __len__(self) -> int:
        return self.crops

    def _load(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        gen = index_generator(PHOTO_EVAL_SEED, index) if generator is None else generator
        photo = self.photos[int(torch.randint(0, len(self.photos), (1,), generator=gen))]
        box = texture_crop_box(photo.shape[-2], photo.shape[-1], self.img_size, self.max_zoom, gen)
        out = crop_resize((photo,), box, self.img_size)
        if generator is not None and self.hflip and float(torch.rand(1, generator=gen)) < 0.5:
            out = out.flip(-1)
        return out


class BundledPhotosSource(ImageSource):
    """Random resized crops of the ten colour photos bundled with scikit-image and scikit-learn.

    ``split`` "train" uses :data:`TRAIN_PHOTOS`, "heldout" uses :data:`HELDOUT_PHOTOS` (disjoint
    photos). The source has ``crops`` items; item ``index`` picks a photo uniformly and takes a
    random resized crop of an area share in ``[crop_scale_min, 1]`` of the whole photo. With a
    generator the crop (and flip, if ``hflip``) comes from it; with ``generator=None`` the crop is
    seeded by ``index`` alone (fixed scale range, no flip), so the held-out set is identical
    across runs and configs.
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
        check_split(split, ("train", "heldout"), "photos")
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
            gen = index_generator(PHOTO_EVAL_SEED, index)
            scale_min, hflip = PHOTO_EVAL_SCALE_MIN, False
        else:
            gen, scale_min, hflip = generator, self.crop_scale_min, self.hflip
        # Uniform over photos: area weighting would let the 1411x1411 retina dominate.
        photo = self.photos[int(torch.randint(0, len(self.photos), (1,), generator=gen))]
        return augment_crop(photo, self.img_size, scale_min, hflip, gen)


def describe_photos(short_side: int | None = None) -> list[dict[str, object]]:
    """One row per photo of the collection: name, split, package, path, native and used size.

    ``short_side`` set: photos are loaded and the size after reduction is reported too.
    """
    from PIL import Image

    rows: list[dict[str, object]] = []
    for p in PHOTOS:
        row: dict[str, object] = {
            "name": p.name,
            "split": "heldout" if p.heldout else "train",
            "package": p.package,
            "path": str(p.path) if p.path else "",
        }
        if p.path is None:
            h, w = load_photo(p.name.split(":", 1)[1]).shape[-2:]
            row["native"] = f"{w}x{h}"
        elif p.path.is_file():
            with Image.open(p.path) as im:
                row["native"] = f"{im.size[0]}x{im.size[1]}"
        else:
            row["native"] = "missing"
        if short_side is not None and row["native"] != "missing":
            h, w = load_collection_photo(p.name, short_side).shape[-2:]
            row["used"] = f"{w}x{h}"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the photo collection: split, name, native and used size, package."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m enfold.data photos", description=main.__doc__)
    parser.add_argument("--short-side", type=int, default=None,
                        help="also load each photo reduced to this shorter side and print its size")
    args = parser.parse_args(argv)
    rows = describe_photos(args.short_side)
    print(f"{'split':8} {'name':45} {'native':>10} {'used':>10}  package")
    for split in ("train", "heldout"):
        for r in rows:
            if r["split"] == split:
                print(f"{split:8} {r['name']:45} {r['native']:>10} {r.get('used', ''):>10}  "
                      f"{r['package']}")
    n_train = sum(r["split"] == "train" for r in rows)
    print(f"{n_train} train photos, {len(rows) - n_train} held-out photos; no file on both sides")
    missing = missing_photo_packages()
    if missing:
        print(f"missing packages: {', '.join(missing)} (run `make data`)")
