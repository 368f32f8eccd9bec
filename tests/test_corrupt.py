"""Tests for enfold.corrupt: every pretext task, the mixture and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from enfold.config import (
    CorruptConfig,
    GrayConfig,
    MaskConfig,
    NoiseConfig,
    ShuffleConfig,
    SRConfig,
)
from enfold.corrupt import (
    CorruptionContext,
    Mix,
    available,
    build_corruption,
    build_one,
    build_tasks,
)
from enfold.errors import ConfigError

TASKS = ["mask", "shuffle", "sr", "noise", "gray"]
RANDOM_TASKS = ["mask", "shuffle", "noise"]
PATCH = 4
MEAN = [0.2, 0.5, 0.8]
CONTEXT = CorruptionContext(PATCH, 3, tuple(MEAN))
LUMA = (0.299, 0.587, 0.114)

# ----------------------------------------------------------------------------- helpers


def _img(seed: int = 0, shape: tuple[int, ...] = (3, 16, 16)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _section(name: str):
    return getattr(CorruptConfig(), name)


def _build(name: str, section=None, context=None):
    return build_one(name, section if section is not None else _section(name), context or CONTEXT)


def _patches(x: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """(C, H, W) -> (n_patches, C*p*p), patches in row-major order."""
    c, h, w = x.shape
    rows, cols = h // p, w // p
    return x.reshape(c, rows, p, cols, p).permute(1, 3, 0, 2, 4).reshape(rows * cols, -1)


def _patch_flags(weight: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """Per-pixel weight (1, H, W) -> per-patch flags; asserts each patch is uniformly 0 or 1."""
    per_patch = _patches(weight, p)
    assert torch.all(per_patch == per_patch[:, :1]), "weight is not constant within patches"
    return per_patch[:, 0].bool()


def _sorted_rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(row) for row in x.tolist())


def _lowres(img: torch.Tensor, factor: int) -> torch.Tensor:
    _, h, w = img.shape
    small = F.interpolate(img[None], size=(h // factor, w // factor), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


def _gray(img: torch.Tensor) -> torch.Tensor:
    return LUMA[0] * img[0] + LUMA[1] * img[1] + LUMA[2] * img[2]


def _mix_cfg(tasks: list[str], weights: list[float] | None) -> CorruptConfig:
    return CorruptConfig(tasks=tasks, weights=weights)


def _task_or_mix(name):
    if name == "mix":
        return build_corruption(CorruptConfig(tasks=TASKS), CONTEXT)
    return _build(name)


# ----------------------------------------------------------------------------- shapes and purity


@pytest.mark.parametrize("name", [*TASKS, "mix"])
def test_shapes_dtype_and_clean_is_input(name):
    corruption = _task_or_mix(name)
    img = _img(1)
    before = img.clone()
    for seed in range(5):
        corrupted, clean, weight = corruption(img, _gen(seed))
        assert corrupted.shape == (3, 16, 16)
        assert clean.shape == (3, 16, 16)
        assert weight.shape == (1, 16, 16)
        assert weight.is_floating_point()
        assert corrupted.is_floating_point()
        assert set(weight.unique().tolist()) <= {0.0, 1.0}
        if name in ("sr", "noise", "gray"):
            assert torch.equal(weight, torch.ones(1, 16, 16))
        assert torch.equal(clean, before)
        assert torch.equal(img, before), "the input was modified in place"
        assert not torch.equal(corrupted, before), "the corruption changed nothing"
        # The corrupted image must not alias the input: writing to it leaves the input intact.
        corrupted.add_(1.0)
        assert torch.equal(img, before)


@pytest.mark.parametrize("name", ["mask", "shuffle"])
def test_patch_tasks_weight_is_patchwise_and_nontrivial(name):
    corrupted, _, weight = _build(name)(_img(2), _gen(0))
    flags = _patch_flags(weight)
    assert 0 < int(flags.sum()) < flags.numel()


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", [*TASKS, "mix"])
def test_same_seed_same_output(name):
    corruption = _task_or_mix(name)
    img = _img(3)
    a = corruption(img, _gen(42))
    b = corruption(img, _gen(42))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", [*RANDOM_TASKS, "mix"])
def test_different_seed_different_output(name):
    if name == "mix":
        corruption = build_corruption(_mix_cfg(["mask", "noise"], None), CONTEXT)
    else:
        corruption = _build(name)
    img = _img(4)
    outs = [corruption(img, _gen(seed))[0] for seed in range(4)]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.equal(outs[i], outs[j]), f"seeds {i} and {j} gave the same output"


def test_mask_fill_noise_depends_on_seed():
    corruption = _build("mask", MaskConfig(ratio=0.5, fill="noise"))
    img = _img(5)
    a = corruption(img, _gen(0))
    b = corruption(img, _gen(1))
    assert not torch.equal(a[0], b[0])
    assert torch.equal(a[0], corruption(img, _gen(0))[0])


# ----------------------------------------------------------------------------- mask


@pytest.mark.parametrize("ratio", [0.25, 0.3, 0.5, 0.75, 0.9])
def test_mask_marks_round_ratio_patches(ratio):
    corruption = _build("mask", MaskConfig(ratio=ratio))
    n_patches = (16 // PATCH) ** 2
    for seed in range(3):
        _, _, weight = corruption(_img(6), _gen(seed))
        flags = _patch_flags(weight)
        assert flags.numel() == n_patches
        assert int(flags.sum()) == round(ratio * n_patches)
        assert float(weight.sum()) == round(ratio * n_patches) * PATCH * PATCH


def test_mask_uses_its_own_patch_size():
    corruption = _build("mask", MaskConfig(ratio=0.5, patch_size=8))
    _, _, weight = corruption(_img(7), _gen(0))
    flags = _patch_flags(weight, 8)
    assert flags.numel() == 4
    assert int(flags.sum()) == 2


def test_mask_fill_zero():
    img = _img(8)
    corrupted, _, weight = _build("mask", MaskConfig(ratio=0.5, fill="zero"))(img, _gen(0))
    keep = weight[0] == 0
    hide = weight[0] == 1
    assert torch.equal(corrupted[:, keep], img[:, keep])
    assert torch.all(corrupted[:, hide] == 0)
    assert int(hide.sum()) == 8 * PATCH * PATCH


def test_mask_fill_mean_uses_the_mean_list():
    img = _img(9)
    corrupted, _, weight = _build("mask", MaskConfig(ratio=0.5, fill="mean"))(img, _gen(0))
    keep = weight[0] == 0
    hide = weight[0] == 1
    assert torch.equal(corrupted[:, keep], img[:, keep])
    for c, m in enumerate(MEAN):
        assert torch.allclose(corrupted[c][hide], torch.full_like(corrupted[c][hide], m))


def test_mask_fill_noise():
    img = _img(10)
    corrupted, _, weight = _build("mask", MaskConfig(ratio=0.5, fill="noise"))(img, _gen(0))
    keep = weight[0] == 0
    hide = weight[0] == 1
    assert torch.equal(corrupted[:, keep], img[:, keep])
    filled = corrupted[:, hide]
    assert filled.numel() == 3 * 8 * PATCH * PATCH
    assert float(filled.min()) >= 0.0 and float(filled.max()) <= 1.0
    assert not torch.any(filled == img[:, hide]), "noise fill left input pixels in place"
    # Uniform noise in [0, 1]: mean about 0.5, std about 0.289; not a constant.
    assert abs(float(filled.mean()) - 0.5) < 0.06
    assert abs(float(filled.std()) - 0.2887) < 0.04


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_mask_ratio_out_of_range(ratio):
    with pytest.raises(ConfigError, match="ratio"):
        _build("mask", MaskConfig(ratio=ratio))


@pytest.mark.parametrize("name", ["mask", "shuffle"])
def test_size_not_divisible_by_patch(name):
    corruption = _build(name)
    with pytest.raises(ConfigError, match="not divisible"):
        corruption(_img(11, (3, 18, 16)), _gen(0))
    with pytest.raises(ConfigError, match="not divisible"):
        corruption(_img(11, (3, 16, 14)), _gen(0))


# ----------------------------------------------------------------------------- shuffle


@pytest.mark.parametrize("fraction", [0.125, 0.5, 1.0])
def test_shuffle_moves_marked_patches_and_keeps_the_rest(fraction):
    corruption = _build("shuffle", ShuffleConfig(fraction=fraction))
    img = _img(12)
    n = (16 // PATCH) ** 2
    for seed in range(5):
        corrupted, _, weight = corruption(img, _gen(seed))
        flags = _patch_flags(weight)
        assert int(flags.sum()) == max(2, round(fraction * n))
        keep = weight[0] == 0
        assert torch.equal(corrupted[:, keep], img[:, keep])
        before, after = _patches(img), _patches(corrupted)
        # Every marked patch now holds different content (patches of torch.rand are distinct).
        for i in torch.nonzero(flags).flatten().tolist():
            assert not torch.equal(after[i], before[i]), f"patch {i} was marked but did not move"
        # Patches are moved, not altered: the multiset of patches (and of marked ones) is kept.
        assert _sorted_rows(after) == _sorted_rows(before)
        assert _sorted_rows(after[flags]) == _sorted_rows(before[flags])


def test_shuffle_uses_its_own_patch_size():
    corruption = _build("shuffle", ShuffleConfig(fraction=0.5, patch_size=8))
    img = _img(13)
    corrupted, _, weight = corruption(img, _gen(0))
    flags = _patch_flags(weight, 8)
    assert int(flags.sum()) == 2
    assert _sorted_rows(_patches(corrupted, 8)) == _sorted_rows(_patches(img, 8))
    for i in torch.nonzero(flags).flatten().tolist():
        assert not torch.equal(_patches(corrupted, 8)[i], _patches(img, 8)[i])


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_shuffle_fraction_out_of_range(fraction):
    with pytest.raises(ConfigError, match="fraction"):
        _build("shuffle", ShuffleConfig(fraction=fraction))


# ----------------------------------------------------------------------------- sr


@pytest.mark.parametrize("factor", [2, 4])
def test_sr_is_area_down_bilinear_up(factor):
    img = _img(14)
    corrupted, clean, weight = _build("sr", SRConfig(factor=factor))(img, _gen(0))
    expected = _lowres(img, factor)
    assert torch.allclose(corrupted, expected, atol=1e-6)
    assert (corrupted - img).abs().max() > 0.05
    assert torch.equal(clean, img)


def test_sr_larger_factor_loses_more():
    img = _img(15)
    err2 = (_build("sr", SRConfig(factor=2))(img, _gen(0))[0] - img).pow(2).mean()
    err4 = (_build("sr", SRConfig(factor=4))(img, _gen(0))[0] - img).pow(2).mean()
    assert err4 > err2 > 0


def test_sr_factor_below_two():
    with pytest.raises(ConfigError, match="factor"):
        _build("sr", SRConfig(factor=1))


# ----------------------------------------------------------------------------- noise


def test_noise_residual_std_matches_sigma():
    img = _img(16, (3, 64, 64))
    for sigma in (0.05, 0.1, 0.3):
        corrupted, _, _ = _build("noise", NoiseConfig(sigma=sigma))(img, _gen(0))
        residual = corrupted - img
        assert abs(float(residual.std()) / sigma - 1) < 0.1
        assert abs(float(residual.mean())) < 0.1 * sigma


def test_noise_is_not_clamped():
    img = _img(17, (3, 64, 64))
    corrupted, _, _ = _build("noise", NoiseConfig(sigma=0.3))(img, _gen(0))
    assert float(corrupted.min()) < 0.0 and float(corrupted.max()) > 1.0


def test_noise_sigma_range_draws_vary():
    img = _img(18, (3, 64, 64))
    corruption = _build("noise", NoiseConfig(sigma=0.05, sigma_max=0.3))
    stds = [float((corruption(img, _gen(seed))[0] - img).std()) for seed in range(8)]
    assert all(0.05 * 0.9 <= s <= 0.3 * 1.1 for s in stds), stds
    assert max(stds) - min(stds) > 0.05, stds


@pytest.mark.parametrize(("sigma", "sigma_max"), [(0.0, None), (-0.1, None), (0.2, 0.1)])
def test_noise_bad_sigma(sigma, sigma_max):
    with pytest.raises(ConfigError, match="sigma"):
        _build("noise", NoiseConfig(sigma=sigma, sigma_max=sigma_max))


# ----------------------------------------------------------------------------- gray


def test_gray_is_bt601_luma_in_every_channel():
    img = _img(19)
    corrupted, _, _ = _build("gray", GrayConfig())(img, _gen(0))
    assert torch.equal(corrupted[0], corrupted[1])
    assert torch.equal(corrupted[1], corrupted[2])
    assert torch.allclose(corrupted[0], _gray(img), atol=1e-6)


def test_gray_needs_three_channels():
    with pytest.raises(ConfigError, match="in_chans"):
        build_one("gray", GrayConfig(), CorruptionContext(PATCH, 1, (0.5,)))


# ----------------------------------------------------------------------------- mix


def _is_gray(out) -> bool:
    corrupted = out[0]
    return torch.equal(corrupted[0], corrupted[1]) and torch.equal(corrupted[1], corrupted[2])


def _is_mask(out) -> bool:
    return bool((out[2] == 0).any())


def test_mix_with_zero_weight_always_picks_the_first():
    img = _img(20)
    mix = build_corruption(_mix_cfg(["mask", "gray"], [1, 0]), CONTEXT)
    assert isinstance(mix, Mix)
    for seed in range(40):
        out = mix(img, _gen(seed))
        assert _is_mask(out) and not _is_gray(out)
    mix = build_corruption(_mix_cfg(["mask", "gray"], [0, 1]), CONTEXT)
    for seed in range(40):
        out = mix(img, _gen(seed))
        assert _is_gray(out) and not _is_mask(out)


def test_mix_with_equal_weights_picks_both():
    img = _img(21)
    mix = build_corruption(_mix_cfg(["mask", "gray"], [1, 1]), CONTEXT)
    picks = [_is_mask(mix(img, _gen(seed))) for seed in range(60)]
    n_mask = sum(picks)
    assert 15 <= n_mask <= 45, n_mask


def test_mix_output_is_one_of_its_parts():
    img = _img(22)
    mix = build_corruption(_mix_cfg(["sr", "gray"], None), CONTEXT)
    expected = [_lowres(img, 2), _gray(img).expand(3, -1, -1)]
    for seed in range(10):
        corrupted = mix(img, _gen(seed))[0]
        assert any(torch.allclose(corrupted, e, atol=1e-6) for e in expected)


# ----------------------------------------------------------------------------- registry


def test_available_lists_the_five_tasks():
    assert sorted(available()) == sorted(TASKS)


def test_build_one_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError) as exc:
        build_one("masc", None, CONTEXT)
    msg = str(exc.value)
    assert "'masc'" in msg
    assert "did you mean 'mask'" in msg


def test_build_corruption_unknown_task():
    with pytest.raises(ConfigError, match="nois'"):
        build_corruption(CorruptConfig(tasks=["mask", "nois"]), CONTEXT)


def test_build_corruption_empty_tasks():
    with pytest.raises(ConfigError, match="corrupt.tasks"):
        build_corruption(CorruptConfig(tasks=[]), CONTEXT)


@pytest.mark.parametrize("name", TASKS)
def test_build_corruption_one_task_returns_it(name):
    corruption = build_corruption(CorruptConfig(tasks=[name]), CONTEXT)
    assert not isinstance(corruption, Mix)
    assert corruption.name == name


def test_build_corruption_several_tasks_returns_mix():
    mix = build_corruption(CorruptConfig(tasks=["noise", "mask", "gray"]), CONTEXT)
    assert isinstance(mix, Mix)
    assert mix.names == ["noise", "mask", "gray"]
    assert [p.name for p in mix.parts] == ["noise", "mask", "gray"]
    assert torch.allclose(mix.probs, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_build_corruption_passes_patch_size_and_mean():
    cfg = CorruptConfig(tasks=["mask"], mask=MaskConfig(ratio=0.5, fill="mean"))
    corruption = build_corruption(cfg, CorruptionContext(8, 3, (0.1, 0.2, 0.3)))
    img = _img(23)
    corrupted, _, weight = corruption(img, _gen(0))
    assert int(_patch_flags(weight, 8).sum()) == 2
    hide = weight[0] == 1
    assert torch.allclose(corrupted[2][hide], torch.full_like(corrupted[2][hide], 0.3))


def test_build_corruption_gray_with_one_channel():
    with pytest.raises(ConfigError, match="in_chans"):
        build_corruption(CorruptConfig(tasks=["mask", "gray"]),
                         CorruptionContext(PATCH, 1, (0.5,)))


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [1.0, -1.0], [0.0, 0.0]])
def test_bad_mixture_weights(weights):
    with pytest.raises(ConfigError, match="corrupt.weights"):
        build_corruption(_mix_cfg(["mask", "noise"], weights), CONTEXT)


def test_build_tasks_builds_each_task():
    tasks = build_tasks(CorruptConfig(tasks=["sr", "mask"]), CONTEXT)
    assert list(tasks) == ["sr", "mask"]
    assert [t.name for t in tasks.values()] == ["sr", "mask"]
