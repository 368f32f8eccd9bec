"""Any folder of images: ImageFolder-style class folders, train/ and val/, or a flat tree."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import torch

from enfold.data.decode import IMAGE_EXTENSIONS, open_image
from enfold.data.image_source import ImageSource
from enfold.data.transforms import augment_crop, center_resize, check_split
from enfold.errors import EnfoldError


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
        check_split(split, ("train", "heldout"), "folder")
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
            return open_image(self.files[index], self._decode_min_side)
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
