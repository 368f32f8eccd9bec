"""Pixel geometry shared by every image source and the runtime.

Channel conversion, random-resized crop boxes drawn from an explicit generator, crop-and-resize
over an image pyramid (so a small crop of a large photo resamples few pixels), and the
deterministic centre view used for evaluation and inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from enfold.errors import EnfoldError

_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL uses for "L"


def check_in_chans(in_chans: int) -> None:
    """Raise unless ``in_chans`` is 1 (gray) or 3 (RGB)."""
    if in_chans not in (1, 3):
        raise EnfoldError(f"model.in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")


def check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    """Raise unless ``split`` is one of ``allowed``; ``what`` names the source in the error."""
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


def resize_square(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of a float ``(C, h, w)`` image to ``(C, size, size)``, clamped to [0, 1]."""
    if x.shape[-2:] == (size, size):
        return x.clamp(0.0, 1.0)  # out of place: never hand out a view of cached pixels
    out = F.interpolate(
        x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )[0]
    return out.clamp_(0.0, 1.0)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """A float copy of ``x`` in [0, 1] (uint8 is divided by 255)."""
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


def crop_resize(
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
    return resize_square(as_float(img[:, t0:t1, l0:l1]), size)


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
    out = crop_resize(levels, box, size)
    if hflip and float(torch.rand(1, generator=generator)) < 0.5:
        out = out.flip(-1)
    return out


def center_resize(levels: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Deterministic evaluation view: centre square crop resized to ``size`` x ``size``."""
    box = center_square(levels[0].shape[-2], levels[0].shape[-1])
    return crop_resize(levels, box, size)


def index_generator(seed: int, index: int) -> torch.Generator:
    """A generator seeded from ``(seed, index)`` alone: deterministic evaluation views."""
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
