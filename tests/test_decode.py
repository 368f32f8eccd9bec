"""``enfold.data.decode``: every common mode decodes to its real range, a reduced decode for small
views, and the work budget refused from the header before pixels are decoded."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from enfold.artifact.sidecar import Sidecar
from enfold.data.decode import IMAGE_EXTENSIONS, decode, open_image, read_header
from enfold.errors import EnfoldError, LimitError
from enfold.runtime.blend import blend_tiles
from enfold.runtime.budget import WorkBudget, tile_count
from enfold.runtime.images import decode_image, decode_view, list_images

RAMP = np.linspace(0.0, 1.0, 48 * 40).reshape(40, 48)  # mean exactly 0.5 before quantising


def save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def ramp_scaled(top: float, dtype: type) -> tuple[np.ndarray, float]:
    """The ramp at the type's scale and its true mean in [0, 1] after rounding to the type."""
    arr = (RAMP * top).round().astype(dtype)
    return arr, float(arr.astype(np.float64).mean() / top)


# mode name -> (bytes of an image of that mode, its true mean in [0, 1])
def mode_cases() -> dict[str, tuple[bytes, float]]:
    cases: dict[str, tuple[bytes, float]] = {}
    u8, m8 = ramp_scaled(255, np.uint8)
    cases["L-png"] = (save(Image.fromarray(u8), "PNG"), m8)
    cases["RGB-jpeg-gray-content"] = (save(Image.fromarray(u8).convert("RGB"), "JPEG",
                                           quality=100), m8)
    u16, m16 = ramp_scaled(65535, np.uint16)
    cases["I;16-png"] = (save(Image.fromarray(u16), "PNG"), m16)
    cases["I;16-tiff"] = (save(Image.fromarray(u16), "TIFF"), m16)
    cases["I-32bit-tiff"] = (save(Image.fromarray(u16.astype(np.int32)), "TIFF"),
                             float(u16.astype(np.float64).mean() / (2.0**32 - 1)))
    f32 = RAMP.astype(np.float32)
    cases["F-tiff-unit-range"] = (save(Image.fromarray(f32), "TIFF"), float(f32.mean()))
    # float outside [0, 1]: stretched by its own range, so a ramp keeps its mean of 0.5
    cases["F-tiff-wide-range"] = (save(Image.fromarray(f32 * 4000 - 1000), "TIFF"), 0.5)
    pal = Image.fromarray(u8).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    cases["P-png"] = (save(pal, "PNG"), float(np.asarray(pal.convert("L")).mean() / 255))
    rgba = Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 7)]), "RGBA")
    cases["RGBA-png"] = (save(rgba, "PNG"), m8)
    cases["1-png"] = (save(Image.fromarray(u8 >= 128), "PNG"), float((u8 >= 128).mean()))
    return cases


CASES = mode_cases()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_each_mode_decodes_to_its_true_mean(case, in_chans):
    data, mean = CASES[case]
    img = decode(data, in_chans, case)
    assert img.dtype == torch.float32 and img.shape == (in_chans, 40, 48)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    tol = 0.01 if "jpeg" in case else 2e-3
    assert float(img.mean()) == pytest.approx(mean, abs=tol), case


def test_16_bit_png_is_not_clipped_to_white(tmp_path):
    # The old decoders went through Pillow's convert("L"), which clips 16-bit values at 255:
    # mean 0.995 for a ramp whose mean is 0.5. Training folders decode the same way.
    data, mean = CASES["I;16-png"]
    assert float(decode_image(data, 1).mean()) == pytest.approx(mean, abs=1e-3)
    path = tmp_path / "ramp16.png"
    path.write_bytes(data)
    as_uint8 = open_image(path)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (3, 40, 48)
    assert float(as_uint8.float().div(255).mean()) == pytest.approx(mean, abs=3e-3)


def test_non_finite_float_image_is_a_clear_error():
    f32 = RAMP.astype(np.float32)
    f32[3, 4] = np.nan
    with pytest.raises(EnfoldError, match="NaN or infinite"):
        decode(save(Image.fromarray(f32), "TIFF"), 3, "nan.tif")


def test_header_is_read_without_decoding_and_budget_refuses_before_pixels():
    thin = save(Image.new("L", (100_000, 1)), "PNG")  # a few hundred bytes
    assert len(thin) < 1000
    assert read_header(thin).width == 100_000
    start = time.perf_counter()
    with pytest.raises(LimitError, match="aspect ratio of 100000:1") as exc:
        decode_image(thin, 3, "thin.png")
    assert exc.value.limit == "max_aspect" and "--max-aspect" in str(exc.value)
    big = save(Image.new("RGB", (2000, 2000)), "PNG")
    with pytest.raises(LimitError, match=f"{tile_count(2000, 2000, 8):,} tiles") as exc:
        decode_image(big, 3, "big.png", tile_size=8)
    assert exc.value.limit == "max_tiles"
    with pytest.raises(LimitError, match="max_pixels"):
        decode_image(big, 3, "big.png", budget=WorkBudget(max_pixels=1_000_000))
    assert time.perf_counter() - start < 1.0  # refused from the header, no pixels decoded


def test_the_budget_check_sees_the_header_before_the_pixels():
    seen = []

    def check(width: int, height: int) -> None:
        seen.append((width, height))
        raise LimitError("no", "max_pixels")

    with pytest.raises(LimitError):
        decode(CASES["L-png"][0], 3, check=check)
    assert seen == [(48, 40)]


def test_jpeg_views_decode_at_reduced_scale():
    photo = Image.fromarray((np.random.default_rng(0).random((1600, 2400, 3)) * 255)
                            .astype(np.uint8))
    data = save(photo, "JPEG", quality=90)
    seen = []
    small = decode(data, 3, min_side=64, check=lambda w, h: seen.append((w, h)))
    assert seen == [(300, 200)]  # 1/8 DCT scaling: 200 >= 64 on the shorter side
    assert small.shape[1:] == (67, 100)  # then reduced by 3 (edges kept) without going below 64
    full = decode(data, 3)
    assert full.shape[1:] == (1600, 2400)
    # the reduced decode is the same picture: the means agree
    assert float(small.mean()) == pytest.approx(float(full.mean()), abs=0.01)
    # the budget counts what is decoded, so a photo above max_pixels still gives a small view
    meta = Sidecar("onnx", "encoder", 16, 3, (0.5,) * 3, (0.5,) * 3)
    view = decode_view(data, meta, budget=WorkBudget(max_pixels=100_000))
    assert view.shape == (3, 16, 16)


def test_tile_count_matches_the_restorers_tiles():
    for h, w, size in [(13, 21, 8), (5, 6, 8), (1, 9, 4), (37, 50, 16), (8, 8, 8)]:
        seen: list[int] = []

        def run(tiles, _corners, seen=seen):
            seen.append(len(tiles))
            return tiles

        blend_tiles(torch.rand(3, h, w), size, run)
        assert tile_count(h, w, size) == sum(seen), (h, w, size)


def test_budget_options_are_checked():
    for bad in ({"max_pixels": 0}, {"max_aspect": float("nan")}, {"max_tiles": -1},
                {"max_aspect": 0.5}):
        with pytest.raises(EnfoldError, match="--max-"):
            WorkBudget(**bad)


def test_one_extension_list(tmp_path):
    for ext in IMAGE_EXTENSIONS:
        (tmp_path / f"a{ext}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert {p.suffix for p in list_images([tmp_path])} == set(IMAGE_EXTENSIONS)
