"""Image files in and out of the runtime: decode, convert to the model's view, tile, encode.

Every backend sees the same pixels for the same file because the conversion depends only on the
artifact's metadata (``img_size``, ``in_chans``, ``mean``, ``std``), never on the backend.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from enfold.data.decode import IMAGE_EXTENSIONS, decode
from enfold.errors import EnfoldError
from enfold.runtime.budget import DEFAULT_BUDGET, WorkBudget

if TYPE_CHECKING:
    from enfold.artifact.sidecar import Sidecar


def list_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the given directories.

    Anything that exists and is not a folder is listed, FIFOs and devices included: the decoder
    refuses those without opening them (a FIFO would block the read forever), so they become
    that file's error ("not a regular file") instead of hanging or stopping the batch."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
        elif path.exists():
            found.append(path)
        else:
            raise EnfoldError(f"{path} does not exist (pass image files or directories)")
    if not found:
        raise EnfoldError(f"no images found in {', '.join(map(str, paths))} "
                          f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
    return found


def decode_image(data: bytes | str | Path, in_chans: int, name: str | None = None,
                 budget: WorkBudget | None = DEFAULT_BUDGET, tile_size: int | None = None,
                 min_side: int = 0) -> torch.Tensor:
    """Decode a file or bytes to a float ``(C, H, W)`` image in [0, 1] with ``in_chans`` channels.

    The header's size is checked against ``budget`` before the pixels are decoded (its tiles
    too when ``tile_size`` is given: restorations); ``min_side`` allows a reduced decode (see
    :func:`enfold.data.decode.decode`). Raises :class:`EnfoldError` naming the file when it is
    not a readable image, :class:`LimitError` when it is over budget.
    """
    label = name or (str(data) if isinstance(data, (str, Path)) else "image")

    def check(width: int, height: int) -> None:
        if budget is not None:
            budget.check(width, height, label, tile_size)

    return decode(data, in_chans, label, min_side=min_side, check=check)


def decode_view(data: bytes | str | Path, meta: Sidecar, name: str | None = None,
                budget: WorkBudget | None = DEFAULT_BUDGET) -> torch.Tensor:
    """A file or bytes straight to the model's view ``(C, S, S)``, decoding only as many pixels
    as the view needs (twice its size on the shorter side)."""
    size = meta.img_size
    return model_view(decode_image(data, meta.in_chans, name, budget,
                                   min_side=2 * size), meta)


def model_view(img: torch.Tensor, meta: Sidecar) -> torch.Tensor:
    """The model's view of an image: centre square crop resized to ``img_size`` (as in eval)."""
    from enfold.data.transforms import center_resize

    return center_resize((img,), meta.img_size)


def load_images(paths: Iterable[str | Path], meta: Sidecar) -> torch.Tensor:
    """Image files -> a ``(B, C, H, W)`` float32 batch in [0, 1] at the model's size."""
    return torch.stack([decode_view(p, meta) for p in paths])


def tile(img: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Split ``(C, H, W)`` into ``size`` tiles, padding the far edges by reflection.

    Returns the tiles ``(N, C, size, size)`` (row-major) and ``(rows, cols, H, W)`` for
    :func:`untile`.
    """
    c, h, w = img.shape
    rows, cols = -(-h // size), -(-w // size)
    pad_h, pad_w = rows * size - h, cols * size - w
    padded = img
    if pad_h or pad_w:
        # reflect needs the pad below the side; replicate covers the tiny-image corner case
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        padded = F.pad(img[None], (0, pad_w, 0, pad_h), mode=mode)[0]
    tiles = padded.reshape(c, rows, size, cols, size).permute(1, 3, 0, 2, 4)
    return tiles.reshape(rows * cols, c, size, size), (rows, cols, h, w)


def untile(tiles: torch.Tensor, layout: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`tile`: stitch ``(N, C, s, s)`` tiles and cut the padding away."""
    rows, cols, h, w = layout
    _, c, s, _ = tiles.shape
    full = tiles.reshape(rows, cols, c, s, s).permute(2, 0, 3, 1, 4).reshape(c, rows * s,
                                                                            cols * s)
    return full[:, :h, :w]


def encode_png(img: torch.Tensor, scale: int = 1) -> bytes:
    """A ``(C, H, W)`` image in [0, 1] as PNG bytes (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    arr = (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    arr = arr.astype(np.uint8)
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return out.getvalue()


def side_by_side(images: list[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Images of equal height next to each other with white gaps: one ``(C, H, W)`` panel."""
    c, h, _ = images[0].shape
    spacer = torch.ones(c, h, gap)
    parts: list[torch.Tensor] = []
    for i, img in enumerate(images):
        parts += [spacer] if i else []
        parts.append(img.clamp(0, 1))
    return torch.cat(parts, dim=2)
