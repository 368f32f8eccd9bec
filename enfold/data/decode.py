"""The one image decoder: files or bytes -> pixels in [0, 1], with a budget checked first.

Training folders, ``enfold predict/restore/score`` and ``enfold serve`` all decode here, so a
file gives the same pixels everywhere. Decoding is header first: Pillow reads the size without
the pixels, the caller's ``check`` sees that size (and may refuse it) before any pixel is
decoded, and a caller that needs only a small view (``min_side``) gets a JPEG decoded at a
reduced scale (1/2 .. 1/8) and other formats reduced by an integer factor straight after
decoding, so a large photo costs what the model needs, not what the file claims.

High bit depths are scaled by their real range: 16-bit gray PNG/TIFF by 65535, 32-bit integer
TIFF by its bits per sample, float images as they are when they lie in [0, 1] and by their own
minimum and maximum otherwise (non-finite values are an error). Pillow's ``convert("L")`` would
clip them instead (a 16-bit image turns almost white, a float one black).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enfold.errors import EnfoldError, LimitError

# Every suffix the decoder is asked to read, for folders of training images and for the
# runtime's image folders alike.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)

# Pillow modes whose samples are wider than 8 bits, decoded through numpy, never convert().
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
FORMAT_HINT = "use PNG, JPEG or another format Pillow reads"

Source = bytes | str | Path
SizeCheck = Callable[[int, int], None]


@dataclass(frozen=True)
class ImageHeader:
    """What a file says about itself before its pixels are decoded."""

    width: int
    height: int
    format: str
    mode: str


def _check_regular(path: Path, name: str) -> None:
    """Refuse anything but a regular file (links followed) before opening it: opening a FIFO
    blocks until a writer appears, and a device can be read forever."""
    mode = os.stat(path).st_mode  # OSError (missing, no permission) is the caller's to report
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "not a file")
        raise EnfoldError(f"{name} is not a regular file ({kind}); skipped without opening it")


def _open(source: Source, name: str) -> Any:
    """A lazily decoding Pillow image (header read, pixels not), or a clear error."""
    from PIL import Image, UnidentifiedImageError

    try:
        if not isinstance(source, bytes):
            _check_regular(Path(source), name)
        handle = io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")
    except OSError as exc:
        raise EnfoldError(f"cannot read {name}: {exc.strerror or exc}") from exc
    try:
        return Image.open(handle)
    except UnidentifiedImageError as exc:
        handle.close()
        raise EnfoldError(f"{name} is not a readable image (Pillow does not recognise its "
                          f"format); {FORMAT_HINT}") from exc
    except Image.DecompressionBombError as exc:
        handle.close()
        raise LimitError(f"{name} claims more pixels than Pillow's decompression-bomb limit "
                         f"({exc})", "max_pixels") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        handle.close()
        raise EnfoldError(f"{name} is not a readable image ({type(exc).__name__}: {exc}); "
                          f"{FORMAT_HINT}") from exc


def _name(source: Source, name: str | None) -> str:
    return name or (str(source) if not isinstance(source, bytes) else "image")


def read_header(source: Source, name: str | None = None) -> ImageHeader:
    """Size, format and mode of an image file or bytes, read without decoding the pixels."""
    name = _name(source, name)
    with _open(source, name) as img:
        return ImageHeader(img.width, img.height, img.format or "?", img.mode)


def _bits(img: Any, arr: np.ndarray) -> int:
    """Bits per sample of an integer image: the TIFF tag when present, else from the type."""
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 258 in tags:
        value = tags[258]
        return int(value[0] if isinstance(value, tuple) else value)
    if img.mode.startswith("I;16"):
        return 16
    return 16 if arr.min() >= 0 and arr.max() <= 65535 else 32


def _high_depth(img: Any, name: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float gray image as float32 ``(H, W)`` in [0, 1]."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise EnfoldError(f"{name} is a float image with NaN or infinite pixels; "
                              "save it with finite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr
        # Outside [0, 1] the range is the image's own: stretch it (a constant image is gray 0)
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    bits = _bits(img, arr)
    out = arr.astype(np.float64)
    if out.min() < 0:  # signed samples: shift the type's range to start at zero
        out += 2.0 ** (bits - 1)
    return (out / (2.0**bits - 1)).clip(0.0, 1.0).astype(np.float32)


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W, C)`` float averaged over ``factor`` x ``factor`` blocks (edges dropped)."""
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    arr = arr[: h * factor, : w * factor]
    return arr.reshape(h, factor, w, factor, arr.shape[2]).mean(axis=(1, 3))


# EXIF orientation (tag 0x0112) -> the transpose that shows the image upright
_ORIENT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
TRUNCATED = "truncated or corrupt image data"


def _orientation(img: Any) -> int:
    """The EXIF orientation (1..8; 1: stored upright), read from the header alone (Pillow's
    ``getexif`` may decode a PNG's pixels to find its EXIF chunk)."""
    from PIL import Image

    try:
        if img.format == "TIFF":
            value = img.tag_v2.get(0x0112, 1)
        elif "exif" in img.info:
            exif = Image.Exif()
            exif.load(img.info["exif"])
            value = exif.get(0x0112, 1)
        else:
            return 1
    except Exception:  # a damaged EXIF block: the pixels are still the pixels
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _upright(img: Any, orientation: int) -> Any:
    """``img`` turned as its EXIF orientation says, so the model sees what viewers show."""
    from PIL import Image

    if orientation not in _ORIENT:
        return img
    return img.transpose(getattr(Image.Transpose, _ORIENT[orientation]))


def _jpeg_frame(f: Any) -> int | None:
    """The start-of-frame marker of a JPEG stream (``0xC0`` .. ``0xCF``), walking the header's
    segments; ``None`` when it cannot be found."""
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        return None
    for _ in range(10_000):
        head = f.read(2)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            f.seek(-1, 1)
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        size = f.read(2)
        if len(size) < 2:
            return None
        f.seek(int.from_bytes(size, "big") - 2, 1)
    return None


def _check_jpeg_length(img: Any, source: Source, size: tuple[int, int], name: str) -> None:
    """Refuse a JPEG whose file is too short to hold the blocks its header claims.

    libjpeg fills the blocks missing after an early end-of-image marker with flat gray and only
    warns, which Pillow does not report: a 3 KB file claiming 8000 x 8000 pixels would decode to
    one flat colour. Every Huffman-coded block costs at least 2 bits (1 in a progressive file's
    first DC scan), so fewer bits than that in the whole file cannot be a complete image.
    Arithmetic-coded files (rare) are not bounded this way and are left to the decoder.
    """
    layers = getattr(img, "layer", None)
    if not layers:
        return
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")
    except OSError:
        return
    with handle:
        marker = _jpeg_frame(handle)
        length = handle.seek(0, io.SEEK_END)
    if marker is None or marker in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
        return
    width, height = size

    def ceil_div(a: int, b: int) -> int:
        return -(-a // b)

    def count(hs: list[int], vs: list[int]) -> int:
        return sum(ceil_div(ceil_div(width * h, max(hs)), 8) *
                   ceil_div(ceil_div(height * v, max(vs)), 8) for h, v in zip(hs, vs, strict=True))

    first = [int(layer[1]) or 1 for layer in layers]
    second = [int(layer[2]) or 1 for layer in layers]
    # the fewer blocks of either reading of the sampling factors: a bound that holds either way
    blocks = min(count(first, second), count(second, first))
    least_bits = blocks * (1 if marker in (0xC2, 0xC6) else 2)
    if length * 8 < least_bits:
        raise EnfoldError(f"{name}: {TRUNCATED} (its header claims {width}x{height} pixels, "
                          f"which need at least {least_bits // 8:,} bytes; the file has "
                          f"{length:,}); the file is damaged or was cut short")


def _decode(source: Source, in_chans: int, name: str, min_side: int,
            check: SizeCheck | None, reduce: bool = True) -> np.ndarray:
    """``(H, W, C)`` pixels: uint8 for 8-bit images, float32 in [0, 1] for deeper ones.

    ``reduce=False`` keeps the reduced decode to JPEG's own DCT scaling."""
    from PIL import Image, ImageFile

    if in_chans not in (1, 3):
        raise EnfoldError(f"images are decoded to 1 or 3 channels, not {in_chans}")
    # Truncated data is an error here even if something else in this process told Pillow to
    # accept it (it would decode the missing part as flat gray)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with _open(source, name) as img:
        try:
            orientation = _orientation(img)
            full_size = img.size
            if min_side > 0 and img.format == "JPEG":  # DCT scaling: decode 1/2 .. 1/8 size
                img.draft(img.mode, (min_side, min_side))
            if check is not None:  # before a single pixel is decoded, upright
                turned = orientation in (5, 6, 7, 8)
                check(*((img.height, img.width) if turned else (img.width, img.height)))
            if img.format == "JPEG":
                _check_jpeg_length(img, source, full_size, name)
            factor = min(img.width, img.height) // min_side if min_side > 0 and reduce else 1
            if img.mode in _HIGH_DEPTH:
                img.load()
                img = _upright(img, orientation)
                arr = _high_depth(img, name)[:, :, None]
                if factor >= 2:
                    arr = _block_mean(arr, factor)
                return np.repeat(arr, in_chans, axis=2) if in_chans == 3 else arr
            if img.mode in ("P", "PA"):  # palette transparency must go through RGBA
                img = img.convert("RGBA")
            img = img.convert("L" if in_chans == 1 else "RGB")
            if factor >= 2:
                img = img.reduce(factor)
            img = _upright(img, orientation)
            arr = np.array(img, dtype=np.uint8)  # a copy: torch wants writable memory
        except (EnfoldError, MemoryError):
            raise
        except OSError as exc:
            if "truncated" not in str(exc):
                raise EnfoldError(f"{name} is not a readable image ({type(exc).__name__}: "
                                  f"{exc}); {FORMAT_HINT}") from exc
            raise EnfoldError(f"{name}: {TRUNCATED} ({exc}); the file is damaged or was cut "
                              "short") from exc
        except Image.DecompressionBombError as exc:
            raise LimitError(f"{name} is above Pillow's decompression-bomb limit ({exc})",
                             "max_pixels") from exc
        except Exception as exc:  # Pillow raises assorted types on damaged data
            raise EnfoldError(f"{name} is not a readable image ({type(exc).__name__}: {exc}); "
                              f"{FORMAT_HINT}") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def decode(source: Source, in_chans: int, name: str | None = None, min_side: int = 0,
           check: SizeCheck | None = None) -> torch.Tensor:
    """Decode a file or bytes to a float32 ``(in_chans, H, W)`` image in [0, 1].

    ``check(width, height)`` runs on the header's size (after a reduced JPEG decode is chosen)
    and may raise to refuse the image before its pixels are decoded. ``min_side > 0`` allows a
    reduced decode whose shorter side stays at least ``min_side``. Raises :class:`EnfoldError`
    naming the file when it is not a readable image.
    """
    name = _name(source, name)
    arr = _decode(source, in_chans, name, min_side, check)
    out = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    return out.float().div_(255.0) if arr.dtype == np.uint8 else out.float()


def open_image(path: str | Path, min_side: int = 0) -> torch.Tensor:
    """Decode ``path`` to a uint8 ``(3, H, W)`` tensor (training folders); raises on unreadable
    files. ``min_side`` allows a reduced decode as in :func:`decode`."""
    arr = _decode(path, 3, str(path), min_side, None, reduce=False)
    if arr.dtype != np.uint8:
        arr = (arr * 255.0).round().astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
