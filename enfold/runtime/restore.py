"""Restoring image files of any size: corrupt as the pretext task says, restore tile by tile.

An image larger than the model is cut into model-sized tiles (far edges padded by reflection),
each tile is corrupted with its own seeded generator and restored, and the tiles are stitched
back. With ``degraded=True`` the file is taken as already corrupted: no clean image, no PSNR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from enfold.errors import EnfoldError
from enfold.runtime.images import tile, untile
from enfold.runtime.session import InferenceSession

TILE_BATCH = 64  # tiles restored per call: bounds memory for very large images


@dataclass
class Restoration:
    """One restored image; every tensor is ``(C, H, W)`` (weight ``(1, H, W)``) in [0, 1]."""

    degraded: torch.Tensor
    restored: torch.Tensor
    clean: torch.Tensor | None = None
    weight: torch.Tensor | None = None  # 1 where the task corrupted the image

    def psnr(self) -> dict[str, float]:
        """PSNR (dB) of the degraded and restored image against the clean one, on the region."""
        from enfold.pipeline.restoration_eval import region_psnr

        if self.clean is None or self.weight is None:
            return {}
        clean, w = self.clean[None], self.weight[None]
        return {"psnr_input": float(region_psnr(self.degraded[None], clean, w)[0]),
                "psnr_restored": float(region_psnr(self.restored[None], clean, w)[0])}


def task_corruption(meta: dict[str, Any], task: str):
    """The corruption callable for ``task``, rebuilt from the artifact's metadata."""
    from enfold.config import CorruptConfig, from_dict
    from enfold.corrupt import CorruptionContext, build_one

    settings = meta.get("corrupt")
    if not settings:
        raise EnfoldError("this artifact's metadata has no corruption settings (exported by an "
                          "older enfold); re-export it, or pass --degraded with a degraded image")
    if task not in settings:
        raise EnfoldError(f"unknown task {task!r}; choose one of {', '.join(sorted(settings))}")
    cfg = from_dict(CorruptConfig, {task: settings[task]})
    return build_one(task, getattr(cfg, task), CorruptionContext.from_metadata(meta))


def fit_min_side(img: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale (bilinear) an image whose shorter side is below ``size``; larger ones are tiled."""
    h, w = img.shape[-2:]
    if min(h, w) >= size:
        return img
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(img[None], size=new, mode="bilinear", align_corners=False)[0].clamp(0, 1)


def corrupt_tiles(img: torch.Tensor, size: int, corruption: Callable | None, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple]:
    """One image -> (image at model scale, corrupted ``(N, C, size, size)`` tiles, corruption
    weight ``(1, H, W)`` or None when ``corruption`` is None (already degraded), tile layout).
    Each tile gets its own seeded generator, so the same image and seed corrupt the same way."""
    from enfold.corrupt import corrupt_batch

    img = fit_min_side(img, size)
    tiles, layout = tile(img, size)
    if corruption is None:
        return img, tiles, None, layout
    corrupted, _, weight = corrupt_batch(corruption, tiles, seed)
    return img, corrupted, untile(weight, layout), layout


def assemble(img: torch.Tensor, corrupted: torch.Tensor, restored: torch.Tensor,
             weight: torch.Tensor | None, layout: tuple, keep_known: bool = True
             ) -> Restoration:
    """Stitch restored tiles into one :class:`Restoration`. With ``keep_known`` the pixels the
    corruption left untouched (weight 0) are taken from the input: they are exact there, and a
    gradient step down the energy moves them too."""
    degraded, out = untile(corrupted, layout), untile(restored, layout)
    if keep_known and weight is not None:
        out = weight * out + (1 - weight) * degraded
    return Restoration(degraded=degraded, restored=out,
                       clean=None if weight is None else img, weight=weight)


def restore_image(session: InferenceSession, img: torch.Tensor, task: str | None = None,
                  seed: int = 0, degraded: bool = False, keep_known: bool = True
                  ) -> Restoration:
    """Corrupt ``img`` (``(C, H, W)`` in [0, 1]) with ``task`` unless ``degraded``, then restore
    it tile by tile (see :func:`assemble` for ``keep_known``)."""
    corruption = None if degraded else task_corruption(
        session.metadata, task or session.metadata["task"])
    img, corrupted, weight, layout = corrupt_tiles(img, session.img_size, corruption, seed)
    restored = torch.cat([torch.as_tensor(session.restore(corrupted[i:i + TILE_BATCH]))
                          for i in range(0, corrupted.shape[0], TILE_BATCH)])
    return assemble(img, corrupted, restored, weight, layout, keep_known)
