"""Hostile image files at the one decoder (enfold.data.decode, used by the CLI, the server and
training folders): a JPEG stored sideways with an EXIF orientation is seen upright; a truncated
or corrupt file is an error naming it, never pixels made up from one flat colour."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from enfold.artifact.sidecar import Sidecar
from enfold.data.decode import decode, open_image
from enfold.errors import EnfoldError
from enfold.runtime.images import decode_view


def upright_picture() -> Image.Image:
    """24 wide, 16 high, dark left and bright right, with a gray ramp down: no symmetry."""
    x = np.linspace(0, 1, 24)[None, :] * 200 + np.linspace(0, 1, 16)[:, None] * 55
    return Image.fromarray(x.astype(np.uint8)).convert("RGB")


def jpeg(img: Image.Image, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95, **kw)
    return out.getvalue()


def with_orientation(img: Image.Image, orientation: int, stored: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(stored, exif=exif.tobytes())


@pytest.mark.parametrize("orientation, stored", [
    (6, Image.Transpose.ROTATE_90),  # stored turned left: viewers turn it right
    (8, Image.Transpose.ROTATE_270),
    (3, Image.Transpose.ROTATE_180),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_exif_orientation_is_applied(orientation, stored, tmp_path):
    img = upright_picture()
    want = decode(jpeg(img), 3)
    data = with_orientation(img, orientation, img.transpose(stored))
    got = decode(data, 3)
    assert got.shape == want.shape == (3, 16, 24)
    assert (got - want).abs().mean() < 0.02
    path = tmp_path / "sideways.jpg"
    path.write_bytes(data)
    # training folders and the model's view decode through the same path
    assert open_image(path).shape == (3, 16, 24)
    meta = Sidecar("onnx", "encoder", 8, 3, (0.5,) * 3, (0.5,) * 3)
    view, upright_view = decode_view(data, meta), decode_view(jpeg(img), meta)
    assert (view - upright_view).abs().mean() < 0.02


def test_orientation_is_applied_before_the_budget_check():
    img = upright_picture()
    data = with_orientation(img, 6, img.transpose(Image.Transpose.ROTATE_90))
    seen = []
    decode(data, 3, check=lambda w, h: seen.append((w, h)))
    assert seen == [(24, 16)]


def header_claims_8000(data: bytes) -> bytes:
    """The JPEG with its frame header edited to claim 8000 x 8000 pixels."""
    out = bytearray(data)
    at = max(out.find(b"\xff\xc0"), out.find(b"\xff\xc2"))
    struct.pack_into(">HH", out, at + 5, 8000, 8000)
    return bytes(out)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_header_claiming_more_pixels_than_the_data_holds_is_refused(progressive, tmp_path):
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    bad = header_claims_8000(jpeg(small, progressive=progressive))
    path = tmp_path / "claims-8000.jpg"
    path.write_bytes(bad)
    for min_side in (0, 64):  # full and reduced (the model's view) decodes alike
        with pytest.raises(EnfoldError, match="truncated or corrupt image data") as exc:
            decode(path, 3, min_side=min_side)
        assert str(path) in str(exc.value)


def test_large_flat_jpegs_are_not_mistaken_for_truncated_ones():
    """The bound is tight: a flat 2000 x 2000 JPEG is close to 2 bits per block."""
    flat = Image.new("RGB", (2000, 2000), (10, 200, 30))
    for kw in ({}, {"optimize": True}, {"progressive": True, "optimize": True}):
        assert decode(jpeg(flat, **kw), 3, min_side=64).shape[0] == 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_errors_even_if_pillow_was_told_to_accept_them(fmt, tmp_path,
                                                                           monkeypatch):
    rng = np.random.default_rng(1)
    out = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(out, format=fmt)
    cut = out.getvalue()[: len(out.getvalue()) // 2]
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(cut)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # another library's choice
    with pytest.raises(EnfoldError, match="truncated or corrupt image data") as exc:
        decode(path, 3)
    assert str(path) in str(exc.value)
    with pytest.raises(EnfoldError, match="truncated or corrupt image data"):
        decode(cut, 3, name="upload.bin")
    assert isinstance(decode(out.getvalue(), 3), torch.Tensor)
