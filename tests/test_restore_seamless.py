"""Seamless full-resolution restoration: overlapping tiles blended by a smooth window, in
bounded batches, shared by the CLI, the server and the Python API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DIGITS_TINY, TINY, train

from enfold.runtime.blend import (
    blend_tile_count,
    blend_tiles,
    seam_ratio,
    tile_starts,
    window_1d,
)
from enfold.runtime.images import tile, untile


def _smooth(h: int, w: int, c: int = 3) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = [0.3 + 0.4 * yy, 0.5 + 0.3 * torch.sin(3 * xx), 0.2 + 0.5 * xx * yy]
    return torch.stack(base[:c])


def _blur_restorer(tiles: torch.Tensor, _corners=None) -> torch.Tensor:
    """A 5x5 box-blur denoiser that sees one tile only (zero padding): its output is worse
    near the tile's edges, as a restorer's is where the tile cuts its context off."""
    c = tiles.shape[1]
    kernel = torch.full((c, 1, 5, 5), 1 / 25)
    return F.conv2d(tiles, kernel, padding=2, groups=c)


def test_blended_tiles_have_no_seams_where_plain_tiling_has_them():
    clean = _smooth(96, 136)
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    tiles, layout = tile(noisy, 16)
    plain = untile(_blur_restorer(tiles), layout)
    blended = blend_tiles(noisy, 16, _blur_restorer)
    assert blended.shape == clean.shape
    plain_ratio, blended_ratio = seam_ratio(plain, clean, 16), seam_ratio(blended, clean, 16)
    assert plain_ratio > 3  # the quilt
    assert blended_ratio < 1.5 and blended_ratio < plain_ratio / 3


def test_windows_sum_to_one_and_keep_full_weight_at_the_border():
    w = window_1d(16, 8, at_start=True, at_end=False)
    assert torch.all(w[:8] == 1) and w[-1] < 0.05
    nxt = window_1d(16, 8, at_start=False, at_end=True)
    assert torch.allclose(w[8:] + nxt[:8], torch.ones(8))  # neighbouring ramps hand over
    assert tile_starts(40, 16, 8) == [0, 8, 16, 24]
    assert tile_starts(41, 16, 8) == [0, 8, 16, 24, 25]


def test_identity_restorer_gives_the_image_back_at_any_size():
    img = torch.rand(3, 37, 53)
    out = blend_tiles(img, 16, lambda t, _c: t, align=4)
    assert out.shape == img.shape and torch.allclose(out, img, atol=1e-6)
    small = torch.rand(3, 5, 9)  # smaller than one tile: padded, then cut back
    assert torch.allclose(blend_tiles(small, 16, lambda t, _c: t), small, atol=1e-6)


def test_tiles_stream_in_bounded_batches():
    img = torch.rand(3, 100, 120)
    seen, calls = [], []

    def run(tiles, corners):
        seen.append(tiles.shape[0])
        assert all(y % 4 == 0 and x % 4 == 0 for y, x in corners)  # on the patch grid
        return tiles

    blend_tiles(img, 16, run, align=4, batch=10, progress=lambda d, n: calls.append((d, n)))
    total = blend_tile_count(100, 120, 16, align=4)
    assert max(seen) <= 10 and sum(seen) == total
    assert calls[-1] == (total, total) and len(calls) == -(-total // 10)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_restore_image_is_seamless_with_a_real_model(tmp_path):
    from enfold.runtime import load
    from enfold.runtime.restore import restore_image

    ckpt = train("pretrain", DIGITS_TINY, tmp_path / "run",
                 [*TINY, "train.max_steps=3", "eval.every=0"])
    session = load(ckpt, backend="torch", device="cpu")
    img = _smooth(45, 61, session.in_chans)
    counts = []
    rest = restore_image(session, img, "noise", batch=16,
                         progress=lambda d, n: counts.append((d, n)))
    assert rest.restored.shape == img.shape and rest.clean is None
    done = [0] + [d for d, _ in counts]
    assert counts and all(b - a <= 16 for a, b in zip(done, done[1:], strict=False))
    # the model's own output inside a tile, away from every other tile's ramp
    direct = session.restore(img[None, :, :8, :8].contiguous())[0]
    assert torch.allclose(rest.restored[:, :2, :2], direct[:, :2, :2], atol=1e-5)
    sim = restore_image(session, img, "mask", simulate=True, seed=1)
    assert sim.clean is not None and set(sim.psnr()) == {"psnr_input", "psnr_restored"}
    # pixels outside the holes are the input's own
    keep = sim.weight == 0
    assert torch.equal(sim.restored[keep.expand_as(img)], sim.degraded[keep.expand_as(img)])


def test_default_stride_steps_off_the_patch_grid_unless_tiles_must_sit_on_it():
    from enfold.runtime.blend import default_stride

    assert default_stride(32, align=1, patch=4) == 21  # free tiles: ~2/3, coprime to 4
    assert default_stride(32, align=2, patch=4) == 22  # sr x2: a multiple of the factor
    assert default_stride(32, align=4, patch=4) == 16  # sr x4, shuffle: half a tile on it
    assert default_stride(16, align=1, patch=4) == 11
    assert default_stride(32) == 16  # no patch grid given: half a tile, as before
    starts = tile_starts(200, 32, default_stride(32, 1, 4))
    assert {s % 4 for s in starts} == {0, 1, 2, 3}  # the tiles see the grid at every offset


def test_seam_ratio_at_the_tile_boundaries_of_a_stride():
    clean = _smooth(64, 80)
    out = clean.clone()
    edges = [e for s in tile_starts(80, 32, 22) for e in (s, s + 31) if 0 < e < 79]
    out[:, :, edges] += 0.1  # an error on exactly those columns: a seam at stride 22
    out += 0.01 * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    assert seam_ratio(out, clean, 32, stride=22) > 10
    assert seam_ratio(out, clean, 32, stride=16) < seam_ratio(out, clean, 32, stride=22) / 3


def test_seam_ratio_phase_leaves_out_a_pattern_of_the_low_resolution_grid():
    """An error on every 4th column (a x4 super-resolution phase pattern) sits on the 32 grid's
    boundaries too: the plain ratio calls it a seam, the phase-matched one does not, and a real
    seam on top of the pattern still shows."""
    clean = _smooth(64, 96)
    noise = 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    pattern = clean + noise
    pattern[:, :, ::4] += 0.03  # phase 0 of every low-resolution pixel
    assert seam_ratio(pattern, clean, 32) > 1.3
    assert seam_ratio(pattern, clean, 32, phase=4) == pytest.approx(1.0, abs=0.15)
    seamed = pattern.clone()
    seamed[:, :, [32, 64]] += 0.1
    assert seam_ratio(seamed, clean, 32, phase=4) > 2


def test_seam_ratio_counts_the_tiles_of_every_pass():
    """A seam left by a first pass's larger tiles shows only once ``more`` names that tiling."""
    clean = _smooth(64, 160)
    out = clean + 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    edges = [e for s in tile_starts(160, 64, 44) for e in (s, s + 63) if 0 < e < 159]
    out[:, :, edges] += 0.1  # the first pass's boundaries, in the output's pixels
    alone = seam_ratio(out, clean, 32, stride=22)
    both = seam_ratio(out, clean, 32, stride=22, more=((64, 44),))
    assert both > 2 * alone and both > 5
