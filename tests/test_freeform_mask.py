"""Free-form holes for the mask task: strokes, blobs and boxes at any pixel offset, mixed with
patch holes by ``corrupt.mask.freeform``."""

from __future__ import annotations

import pytest
import torch

from enfold.config import CorruptConfig, from_dict
from enfold.corrupt import CorruptionContext, build_one, corrupt_batch
from enfold.corrupt.freeform import FreeFormHoles, freeform_holes
from enfold.errors import ConfigError

CTX = CorruptionContext(4, 3, (0.5, 0.5, 0.5))


def _mask_task(**mask):
    cfg = from_dict(CorruptConfig, {"mask": {"ratio": 0.5, **mask}})
    return build_one("mask", cfg.mask, CTX)


def _on_patch_grid(weight: torch.Tensor, p: int = 4) -> bool:
    blocks = weight.reshape(weight.shape[-2] // p, p, weight.shape[-1] // p, p)
    return bool(((blocks.amin((1, 3)) == blocks.amax((1, 3)))).all())


def test_freeform_holes_cover_about_the_target_and_are_not_patches():
    gen = torch.Generator().manual_seed(0)
    covers = []
    off_grid = 0
    for _ in range(20):
        w = freeform_holes(32, 32, 0.3, gen)
        assert w.shape == (1, 32, 32) and set(w.unique().tolist()) <= {0.0, 1.0}
        covers.append(w.mean().item())
        off_grid += not _on_patch_grid(w[0])
    assert min(covers) > 0 and sum(covers) / len(covers) > 0.25
    assert off_grid == 20  # free-form: never aligned to the 4x4 grid


def test_freeform_fills_exactly_the_holes_and_is_seeded():
    img = torch.rand(3, 32, 32)
    holes = FreeFormHoles(0.5, "zero", [0.5] * 3)
    a = holes(img, torch.Generator().manual_seed(3))
    b = holes(img, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    corrupted, clean, weight = a
    hole = weight.bool().expand_as(img)
    assert (corrupted[hole] == 0).all() and torch.equal(corrupted[~hole], img[~hole])


def test_mask_config_mixes_patch_and_freeform_holes():
    imgs = torch.rand(64, 3, 32, 32)
    _, _, w = corrupt_batch(_mask_task(freeform=0.5), imgs, seed=0)
    patchy = sum(_on_patch_grid(x[0]) for x in w)
    assert 10 < patchy < 54  # both kinds occur
    _, _, w0 = corrupt_batch(_mask_task(), imgs, seed=0)
    assert all(_on_patch_grid(x[0]) for x in w0)  # the default keeps patch holes only
    _, _, w1 = corrupt_batch(_mask_task(freeform=1.0), imgs, seed=0)
    assert not any(_on_patch_grid(x[0]) for x in w1)


def test_mask_freeform_out_of_range_is_a_clear_error():
    with pytest.raises(ConfigError, match="corrupt.mask.freeform"):
        _mask_task(freeform=1.5)
