"""Free-form holes: strokes, blobs and boxes of any shape, not aligned to any patch grid.

Photos people want inpainted have scratches, blemishes and objects to remove, not a checkerboard
of patches. :class:`FreeFormHoles` draws such holes; ``corrupt.mask.freeform`` (a probability)
trains the mask restorer on a per-sample mix of these and the patch holes of
:class:`enfold.corrupt.mask.MaskPatches`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.errors import ConfigError

MAX_SHAPES = 64  # bounds the drawing loop whatever the target coverage


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator).item()


def _stroke(yy: torch.Tensor, xx: torch.Tensor, h: int, w: int,
            generator: torch.Generator) -> torch.Tensor:
    """A brush stroke: 1 to 4 connected segments of one random thickness."""
    half = _uniform(generator, 0.5, max(1.0, min(h, w) / 12))
    y, x = _uniform(generator, 0, h), _uniform(generator, 0, w)
    out = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(1 + int(torch.randint(4, (), generator=generator))):
        angle = _uniform(generator, 0, 2 * torch.pi)
        length = _uniform(generator, min(h, w) / 8, min(h, w) / 2)
        y2 = min(max(y + length * float(torch.sin(torch.tensor(angle))), 0.0), h - 1.0)
        x2 = min(max(x + length * float(torch.cos(torch.tensor(angle))), 0.0), w - 1.0)
        # distance of every pixel centre to the segment (y, x) -> (y2, x2)
        dy, dx = y2 - y, x2 - x
        t = (((yy - y) * dy + (xx - x) * dx) / max(dy * dy + dx * dx, 1e-9)).clamp(0, 1)
        dist2 = (yy - (y + t * dy)) ** 2 + (xx - (x + t * dx)) ** 2
        out |= dist2 <= half * half
        y, x = y2, x2
    return out


def _blob(yy: torch.Tensor, xx: torch.Tensor, h: int, w: int,
          generator: torch.Generator) -> torch.Tensor:
    """A rotated ellipse."""
    cy, cx = _uniform(generator, 0, h), _uniform(generator, 0, w)
    ry = _uniform(generator, 1.0, max(1.5, h / 5))
    rx = _uniform(generator, 1.0, max(1.5, w / 5))
    theta = torch.tensor(_uniform(generator, 0, torch.pi))
    c, s = float(torch.cos(theta)), float(torch.sin(theta))
    u, v = (yy - cy) * c + (xx - cx) * s, -(yy - cy) * s + (xx - cx) * c
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1


def _box(yy: torch.Tensor, xx: torch.Tensor, h: int, w: int,
         generator: torch.Generator) -> torch.Tensor:
    """An axis-aligned rectangle at any pixel offset."""
    bh = _uniform(generator, 1.0, max(1.5, h / 3))
    bw = _uniform(generator, 1.0, max(1.5, w / 3))
    y0, x0 = _uniform(generator, -bh / 2, h - bh / 2), _uniform(generator, -bw / 2, w - bw / 2)
    return (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)


SHAPES = (_stroke, _blob, _box)


def freeform_holes(h: int, w: int, coverage: float, generator: torch.Generator
                   ) -> torch.Tensor:
    """A ``(1, H, W)`` float mask, 1 in the holes: random strokes, blobs and boxes drawn until
    about ``coverage`` of the pixels are covered (at most :data:`MAX_SHAPES` shapes, at least
    one hole pixel)."""
    yy = torch.arange(h, dtype=torch.float32).view(h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, w) + 0.5
    holes = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(MAX_SHAPES):
        shape = SHAPES[int(torch.randint(len(SHAPES), (), generator=generator))]
        holes |= shape(yy, xx, h, w, generator)
        if holes.float().mean().item() >= coverage:
            break
    if not holes.any():  # a tiny image whose shapes all fell between pixel centres
        holes[int(torch.randint(h, (), generator=generator)),
              int(torch.randint(w, (), generator=generator))] = True
    return holes.float()[None]


@dataclass
class FreeFormHoles:
    """Free-form holes covering about ``ratio`` of the image (drawn uniformly from half to all
    of it per sample), filled like the patch holes: zeros, noise or the data mean."""

    ratio: float
    fill: str
    mean: list[float]
    name: str = "mask"

    def __post_init__(self) -> None:
        check_hole_ratio(self.ratio)

    def __call__(self, img: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, h, w = img.shape
        coverage = self.ratio * _uniform(generator, 0.5, 1.0)
        weight = freeform_holes(h, w, coverage, generator)
        return fill_holes(img, weight, self.fill, self.mean, generator), img, weight


def check_hole_ratio(ratio: float) -> None:
    """The share of an image the holes cover must leave something visible and hide something."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"corrupt.mask.ratio must be in (0, 1), got {ratio}")


def fill_holes(img: torch.Tensor, weight: torch.Tensor, fill: str, mean: list[float],
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``img`` with the pixels where ``weight`` is 1 replaced by ``fill`` (zero, noise or the
    data ``mean``); ``(C, H, W)`` with a ``(1, H, W)`` weight."""
    c = img.shape[0]
    if fill == "zero":
        value = torch.zeros_like(img)
    elif fill == "noise":
        value = torch.rand(img.shape, generator=generator)
    else:  # "mean": the normalisation mean, i.e. zero after normalisation
        value = torch.tensor(mean[:c], dtype=img.dtype).view(c, 1, 1).expand_as(img)
    return torch.where(weight.bool(), value, img)
