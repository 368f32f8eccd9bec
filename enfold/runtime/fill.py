"""A smooth first guess for the holes of a whole photo, before it is cut into tiles.

The mask restorer starts its steps from a fill of the holes computed inside each 32-pixel tile
(``model.fill_holes``, ``model.fill_biharmonic``). A hole that crosses a tile, or is wider than
the fill's reach, is then guessed from that tile's own edge alone, differently in each tile.
Filling the holes of the whole image first, by push-pull (the image halved with the holes left
out of every average until nothing is missing, then enlarged back into the holes level by
level), gives every tile the same smooth start from the whole photo. It costs a few passes over
the image and a pyramid a third of its size, whatever the holes' size and shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def push_pull_fill(img: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """``img`` ``(C, H, W)`` with the pixels where ``holes`` ``(1, H, W)`` is 1 replaced by a
    smooth interpolation of the others; the others are returned unchanged. Where no pixel is
    known the holes are left as they are."""
    known = 1 - holes.to(img.dtype)
    if not bool((known > 0).any()):
        return img
    return _fill(img, known)


def _fill(img: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    if bool((known > 0).all()) or min(h, w) <= 1:
        return img
    # push: halve, each coarse pixel the mean of its known children (none known: still a hole)
    k = F.avg_pool2d(known[None], 2, ceil_mode=True)[0]  # (1, h/2, w/2)
    s = F.avg_pool2d((img * known)[None], 2, ceil_mode=True)[0]
    coarse = torch.where(k > 0, s / k.clamp_min(1e-12), torch.zeros_like(s))
    coarse = _fill(coarse, (k > 0).to(img.dtype))
    # pull: the filled coarse level, enlarged, goes into this level's holes
    up = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return torch.where(known > 0, img, up)  # known is 0 or 1: one buffer, not three
