"""The work budget of one image: decided from its header, before a pixel is decoded.

A 177-byte PNG can claim 100000x1 pixels and a 4 KB one 2000x2000: decoding and restoring them
costs minutes and gigabytes. Every image the runtime decodes (``enfold predict``, ``restore``,
``score``, ``enfold serve``) is checked against three limits first:

* ``max_pixels``: pixels decoded (after a reduced JPEG decode, when the model needs less);
* ``max_aspect``: longer side over shorter side (thin images become many tiles);
* ``max_tiles``: model-sized tiles a restoration would run (restore only; the tiles overlap
  by half, so an image runs about four times its area in tiles).

Over a limit is a :class:`LimitError` that names the limit and the option that raises it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from enfold.errors import EnfoldError, LimitError

# Defaults: a 20-megapixel photo decodes (about 60 MB as 8-bit RGB); a panorama up to 20:1
# passes; a restoration runs at most 1,024 half-overlapping tiles (a 4096x4096 image at
# 256-pixel tiles, 256x256 at 16-pixel ones), seconds to a minute on a CPU. `enfold restore`
# on the user's own files raises these (enfold/cli/app.py); the server keeps them.
MAX_PIXELS = 20_000_000
MAX_ASPECT = 20.0
MAX_TILES = 1024
OPTION = {"max_pixels": "--max-pixels", "max_aspect": "--max-aspect", "max_tiles": "--max-tiles"}


def tile_count(height: int, width: int, size: int) -> int:
    """Model-sized tiles a restoration of a ``height`` x ``width`` image runs at most: at a
    half-tile stride, the closest default of :func:`enfold.runtime.blend.blend_tiles`."""
    from enfold.runtime.blend import blend_tile_count

    return blend_tile_count(height, width, size)


@dataclass(frozen=True)
class WorkBudget:
    """Limits on one image's work; see the module docstring. Checked by :meth:`check`."""

    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT
    max_tiles: int = MAX_TILES

    def __post_init__(self) -> None:
        for key in ("max_pixels", "max_aspect", "max_tiles"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise EnfoldError(f"{OPTION[key]} must be a positive number, got {value}")
        if self.max_aspect < 1:
            raise EnfoldError(f"--max-aspect is longer side over shorter side, at least 1; got "
                              f"{self.max_aspect}")

    def check(self, width: int, height: int, name: str = "image",
              tile_size: int | None = None, tiles: int | None = None) -> None:
        """Raise :class:`LimitError` when a ``width`` x ``height`` image is over budget;
        ``tile_size`` (restorations) also counts its tiles, or takes ``tiles`` as the count
        (a restoration in several passes counts them all)."""
        if width < 1 or height < 1:
            raise LimitError(f"{name} is {width}x{height} pixels: an image needs at least one "
                             "pixel each way", "max_pixels")
        if width * height > self.max_pixels:
            raise LimitError(f"{name} is {width}x{height} = {width * height:,} pixels, above the "
                             f"limit of {self.max_pixels:,} (max_pixels, {OPTION['max_pixels']})",
                             "max_pixels")
        aspect = max(width, height) / min(width, height)
        if aspect > self.max_aspect:
            raise LimitError(f"{name} is {width}x{height} pixels, an aspect ratio of {aspect:g}:1, "
                             f"above the limit of {self.max_aspect:g}:1 (max_aspect, "
                             f"{OPTION['max_aspect']})", "max_aspect")
        if tile_size is not None:
            tiles = tiles if tiles is not None else tile_count(height, width, tile_size)
            if tiles > self.max_tiles:
                raise LimitError(f"{name} is {width}x{height} pixels: restoring it takes {tiles:,} "
                                 f"tiles of {tile_size}x{tile_size}, above the limit of "
                                 f"{self.max_tiles:,} (max_tiles, {OPTION['max_tiles']}); "
                                 "downscale or crop it", "max_tiles")


DEFAULT_BUDGET = WorkBudget()
