"""Seamless restoration of images of any size: overlapping tiles blended with a smooth window.

A restorer sees one model-sized tile at a time, and its output is a little worse near the tile's
edges (the energy there sees no context on one side). Cut into abutting tiles, the picture shows
those edges as a quilt. Here the tiles overlap (``stride`` below the tile size), each tile's
output is weighted by a window that ramps from near 0 at its edges to 1 inside (a raised cosine;
Hann for a half-tile stride), and every pixel is the weighted mean of the tiles over it. Where a
tile touches the image border it has no neighbour to hand over to, so its window stays 1 up to
that border. Tiles are run in batches and accumulated into one output and one weight buffer, so
memory is the image plus one batch of tiles, whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from enfold.errors import EnfoldError

# Tiles restored per call: bounds memory for very large images.
TILE_BATCH = 64
# The smallest weight a window gives (its ramp never quite reaches 0): keeps the normalising sum
# positive everywhere.
WINDOW_FLOOR = 1e-3

# (tiles (N, C, s, s), their top-left corners [(y, x), ...]) -> restored tiles (N, C, s, s)
TileRunner = Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor]
# (tiles done, tiles in all) after every batch
Progress = Callable[[int, int], None]


def default_stride(size: int, align: int = 1, patch: int = 1) -> int:
    """Pixels between tile corners when none is given, a multiple of ``align``.

    Tiles that must sit on the ``patch`` grid (``align`` a multiple of it) step half a tile.
    Tiles free of that grid step about two thirds of a tile, by a step sharing as small a
    factor with the patch size as ``align`` allows (21 for 32-pixel tiles of 4-pixel patches):
    successive tiles then see the ViT's patch grid at every offset, so its residue averages out
    instead of showing, and fewer tiles run (benchmarks/full_photo.py measures it against
    half-tile steps on the grid).
    """
    if align % patch == 0:
        return max(align, (size // 2) // align * align)
    stride = (size * 11 // 16) // align * align
    least = math.gcd(align, patch)
    while stride > align and math.gcd(stride, patch) != least:
        stride -= align
    return max(align, stride)


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Where tiles of ``size`` start along an axis of ``length >= size`` pixels, ``stride``
    apart; the last one ends at the far edge."""
    if length < size:
        raise EnfoldError(f"an axis of {length} pixels is shorter than one {size}-pixel tile")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def window_1d(size: int, ramp: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """A tile's weight along one axis: a raised-cosine ramp of ``ramp`` pixels up from each
    edge, 1 between; no ramp on a side that lies on the image border (``at_start``,
    ``at_end``). With ``ramp`` = size - stride the ramps of neighbouring tiles sum to 1."""
    w = torch.ones(size)
    if ramp > 0:
        t = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
        up = torch.sin(t * math.pi / 2).pow(2).clamp_min(WINDOW_FLOOR)
        if not at_start:
            w[:ramp] = up
        if not at_end:
            w[size - ramp:] = torch.minimum(w[size - ramp:], up.flip(0))
    return w


def pad_to(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, H, W)`` padded at the far edges to ``height`` x ``width`` by reflection (edge
    replication where the image is too small to reflect)."""
    c, h, w = img.shape
    ph, pw = height - h, width - w
    if ph <= 0 and pw <= 0:
        return img
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(img[None], (0, max(pw, 0), 0, max(ph, 0)), mode=mode)[0]


def blend_tiles(img: torch.Tensor, size: int, run: TileRunner, stride: int | None = None,
                align: int = 1, batch: int = TILE_BATCH, progress: Progress | None = None
                ) -> torch.Tensor:
    """Restore ``img`` ``(C, H, W)`` of any size with overlapping ``size`` tiles blended by
    :func:`window_1d`; returns ``(C', H, W)`` with the channels ``run`` returns (``img`` may
    carry extra channels ``run`` reads, such as a hole mask).

    ``run`` restores a batch of tiles given their top-left corners (so a caller can cut the
    matching piece of a mask); at most ``batch`` tiles are alive at once. Tile corners are
    multiples of ``align`` (the super-resolution factor, or the patch size where the input
    itself has that grid). ``stride`` defaults to half a tile (:func:`default_stride`). The
    image is
    padded by reflection to a multiple of ``align`` and at least one tile each way; the padding
    is cut off again. ``progress(done, total)`` is called after each batch.
    """
    if size % align:
        raise EnfoldError(f"tile size {size} is not a multiple of the alignment {align}")
    stride = stride or default_stride(size, align)
    if stride % align or not 0 < stride <= size:
        raise EnfoldError(f"tile stride {stride} must be a positive multiple of {align} and at "
                          f"most the tile size {size}")
    if batch < 1:
        raise EnfoldError(f"the tile batch must be at least 1, got {batch}")
    _, h, w = img.shape
    hp = max(size, -(-h // align) * align)
    wp = max(size, -(-w // align) * align)
    padded = pad_to(img, hp, wp)
    ys, xs = tile_starts(hp, size, stride), tile_starts(wp, size, stride)
    corners = [(y, x) for y in ys for x in xs]
    ramp = size - stride
    wy = {y: window_1d(size, ramp, y == 0, y == ys[-1]) for y in ys}
    wx = {x: window_1d(size, ramp, x == 0, x == xs[-1]) for x in xs}
    out: torch.Tensor | None = None  # as many channels as the restorer returns
    total = torch.zeros(1, hp, wp)
    for start in range(0, len(corners), batch):
        part = corners[start:start + batch]
        tiles = torch.stack([padded[:, y:y + size, x:x + size] for y, x in part])
        restored = torch.as_tensor(run(tiles, part)).float()
        del tiles
        if out is None:
            out = torch.zeros(restored.shape[1], hp, wp)
        for (y, x), tile in zip(part, restored, strict=True):
            win = wy[y][:, None] * wx[x][None, :]  # (s, s)
            out[:, y:y + size, x:x + size] += tile * win
            total[:, y:y + size, x:x + size] += win
        if progress is not None:
            progress(min(start + batch, len(corners)), len(corners))
    assert out is not None  # at least one tile always runs
    del padded
    return out.div_(total)[:, :h, :w]  # in place: one full-size buffer fewer


def blend_tile_count(height: int, width: int, size: int, stride: int | None = None,
                     align: int = 1) -> int:
    """Tiles :func:`blend_tiles` runs for a ``height`` x ``width`` image."""
    stride = stride or default_stride(size, align)
    hp = max(size, -(-height // align) * align)
    wp = max(size, -(-width // align) * align)
    return len(tile_starts(hp, size, stride)) * len(tile_starts(wp, size, stride))


def seam_ratio(restored: torch.Tensor, clean: torch.Tensor, tile: int,
               stride: int | None = None, phase: int | None = None,
               more: Sequence[tuple[int, int]] = ()) -> float:
    """Squared error on the rows and columns next to tile boundaries (the image's own border
    is no seam) over the squared error elsewhere.

    Without ``stride`` the boundaries are a fixed ``tile`` grid from the top-left corner; with
    it, the first and last rows and columns of every tile :func:`blend_tiles` runs at that
    ``stride`` (:func:`tile_starts`). About 1 for an output without seams there; plain tiling
    shows its quilt as a ratio well above 1. ``restored`` and ``clean`` are ``(C, H, W)`` or
    ``(B, C, H, W)``.

    ``phase``: compare the boundary rows and columns only with the interior rows and columns
    of the same position modulo ``phase``. Super-resolution by a factor ``phase`` has an error
    that repeats with the low-resolution pixel grid, and tile boundaries of such a restorer lie
    on that grid; this ratio leaves that pattern out and keeps what the tiles add.

    ``more``: further ``(tile, stride)`` tilings whose boundaries count as well (with
    ``stride``), in the output's pixels: a restoration in several passes ran all of them.
    """
    if restored.shape != clean.shape:
        raise EnfoldError(f"seam_ratio needs images of one shape, got {tuple(restored.shape)} "
                          f"and {tuple(clean.shape)}")
    err = (restored.float() - clean.float()).pow(2)
    h, w = err.shape[-2:]
    if h <= tile and w <= tile:
        raise EnfoldError(f"a {h}x{w} image holds no boundary of {tile}-pixel tiles")

    def near_seam(n: int) -> torch.Tensor:
        i = torch.arange(n)
        if stride is None or n < tile:
            return ((i % tile == 0) & (i > 0)) | ((i % tile == tile - 1) & (i < n - 1))
        edges = torch.tensor([e for t, step in ((tile, stride), *more)
                              for s in tile_starts(n, t, step)
                              for e in (s, s - 1, s + t - 1, s + t)])
        return torch.isin(i, edges) & (i > 0) & (i < n - 1)

    def same_phase(seam_1d: torch.Tensor) -> torch.Tensor:
        i = torch.arange(seam_1d.shape[0])
        return torch.isin(i % phase, torch.unique(i[seam_1d] % phase))

    rows, cols = near_seam(h), near_seam(w)
    seam = rows[:, None] | cols[None, :]  # (H, W)
    rest = ~seam
    if phase is not None:
        rest = rest & (same_phase(rows)[:, None] | same_phase(cols)[None, :])
    seam_err = err[..., seam].mean()
    rest_err = err[..., rest].mean()
    return float(seam_err / rest_err.clamp_min(1e-20))
