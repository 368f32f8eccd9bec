"""Data consistency inside the unrolled restoration steps, and the last-step-only backward."""

from __future__ import annotations

import pytest
import torch

from enfold.config import load_config
from enfold.corrupt import build_corruption, corrupt_batch
from enfold.corrupt.context import CorruptionContext
from enfold.errors import ConfigError
from enfold.model import build_energy_model
from enfold.model.consistency import (
    KeepVisible,
    LowResProjection,
    LumaProjection,
    mask_fill_value,
)

MEAN, STD = [0.5, 0.4, 0.3], [0.5, 0.25, 0.2]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _corrupt(task: str, clean: torch.Tensor, **settings):
    cfg = load_config(None, [f"corrupt.tasks=[{task}]", "model.img_size=32",
                             *(f"corrupt.{task}.{k}={v}" for k, v in settings.items())])
    fn = build_corruption(cfg.corrupt, CorruptionContext.from_config(cfg))
    return corrupt_batch(fn, clean, seed=0)


@pytest.mark.parametrize("factor", [2, 4])
def test_sr_projection_recovers_the_low_resolution_image(factor: int):
    clean = torch.rand(3, 3, 32, 32)
    x0, _, _ = _corrupt("sr", clean, factor=factor)
    proj = LowResProjection(32, factor)
    xn, cn = _norm(x0), _norm(clean)
    y = proj.prepare(xn, None)
    torch.testing.assert_close(y, proj.down(cn), atol=1e-5, rtol=0)  # exact up to rounding
    guess = xn + 0.3 * torch.randn_like(xn)
    fixed = proj.apply(guess, y)
    torch.testing.assert_close(proj.down(fixed), proj.down(cn), atol=1e-5, rtol=0)
    # an orthogonal projection onto a set holding the clean image never moves away from it
    assert (fixed - cn).norm() <= (guess - cn).norm()
    assert (proj.apply(xn, y) - cn).norm() < (xn - cn).norm()


def test_luma_projection_keeps_the_gray_input():
    clean = torch.rand(4, 3, 16, 16)
    x0, _, _ = _corrupt("gray", clean)
    proj = LumaProjection(MEAN, STD)
    xn, cn = _norm(x0), _norm(clean)
    luma0 = proj.prepare(xn, None)
    guess = xn + 0.5 * torch.randn_like(xn)
    fixed = proj.apply(guess, luma0)
    torch.testing.assert_close(proj.luma(fixed), luma0, atol=1e-5, rtol=0)
    torch.testing.assert_close(proj.luma(cn), luma0, atol=1e-5, rtol=0)
    std = torch.tensor(STD).view(1, 3, 1, 1)  # distances in pixel space
    assert ((fixed - cn) * std).norm() <= ((guess - cn) * std).norm()


def test_keep_visible_pastes_the_unmasked_pixels_and_finds_the_holes_by_their_fill():
    clean = torch.rand(2, 3, 16, 16)
    x0, _, weight = _corrupt("mask", clean, ratio=0.5, patch_size=4)  # fill: zero
    xn = _norm(x0)
    keep = KeepVisible(mask_fill_value("zero", MEAN, STD), patch=4)
    guess = torch.randn_like(xn)
    fixed = keep.apply(guess, keep.prepare(xn, weight))
    visible = weight.expand_as(xn) == 0
    assert torch.equal(fixed[visible], xn[visible])
    assert torch.equal(fixed[~visible], guess[~visible])
    # without the mask the holes are the patches that hold the fill everywhere
    assert torch.equal(keep.find_holes(xn), weight)
    assert torch.equal(keep.apply(guess, keep.prepare(xn, None)), fixed)
    # a single black pixel is not a hole; a noise fill cannot be found, so nothing is pasted
    lone = _norm(torch.rand(1, 3, 16, 16))
    lone[0, :, 5, 5] = keep.fill[0, :, 0, 0]
    assert keep.find_holes(lone).sum() == 0
    blind = KeepVisible(mask_fill_value("noise", MEAN, STD), patch=4)
    assert torch.equal(blind.apply(guess, blind.prepare(xn, None)), guess)


def test_fill_holes_starts_from_a_smooth_guess_that_keeps_the_visible_pixels():
    # a smooth image: the harmonic fill of its holes is close; the flat fill is not
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    clean = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy])[None]
    x0, _, weight = _corrupt("mask", clean, ratio=0.5, patch_size=4)
    xn, cn = _norm(x0), _norm(clean)
    keep = KeepVisible(mask_fill_value("zero", MEAN, STD), patch=4, fill_holes=32)
    start = keep.start(xn, keep.prepare(xn, None))
    visible = weight.expand_as(xn) == 0
    assert torch.equal(start[visible], xn[visible])
    hole_err = (start - cn)[~visible].abs().mean()
    assert hole_err < 0.05 * (xn - cn)[~visible].abs().mean()  # measured: 0.023 vs 1.95
    assert torch.equal(KeepVisible(keep.fill.flatten().tolist(), 4).start(xn, None), xn)
    with pytest.raises(ConfigError, match="fill_holes needs model.consistency"):
        _tiny(["model.fill_holes=8", "corrupt.tasks=[mask]"])
    with pytest.raises(ConfigError, match="mask task only"):
        _tiny(["model.fill_holes=8", "model.consistency=true", "corrupt.tasks=[sr]"])


def test_biharmonic_flow_continues_slopes_that_the_harmonic_fill_flattens(tmp_path):
    # a curved image (x^2: harmonic fills get it wrong, biharmonic ones are exact inside)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    clean = torch.stack([0.1 + 0.8 * xx**2, 0.2 + 0.6 * yy**2, 0.3 + 0.5 * xx * yy])[None]
    x0, _, weight = _corrupt("mask", clean, ratio=0.5, patch_size=4)
    xn, cn = _norm(x0), _norm(clean)
    hole = weight.expand_as(xn) > 0
    errors = {}
    for flow in (0, 256):
        keep = KeepVisible(mask_fill_value("zero", MEAN, STD), 4, fill_holes=64,
                           fill_biharmonic=flow)
        start = keep.start(xn, keep.prepare(xn, None))
        assert torch.equal(start[~hole], xn[~hole])  # the visible pixels are never moved
        errors[flow] = (start - cn)[hole].abs().mean().item()
    assert errors[256] < 0.5 * errors[0]  # measured: 0.0066 vs 0.0199
    # the flow traces into the exported graph: ONNX Runtime gives PyTorch's start (a few
    # iterations: exporting 256 unrolled ones takes minutes)
    ort = pytest.importorskip("onnxruntime")
    keep = KeepVisible(mask_fill_value("zero", MEAN, STD), 4, fill_holes=4, fill_biharmonic=8)
    start = keep.start(xn, keep.prepare(xn, None))
    torch.onnx.export(_Start(keep), (xn,), tmp_path / "start.onnx", dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    (got,) = ort.InferenceSession(str(tmp_path / "start.onnx")).run(None, {"x": xn.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), start, atol=1e-4, rtol=0)
    # and through enfold's own restorer tracer, which refuses tensors made on a fixed device
    from enfold.export.graphs import unrolled_restorer

    _, model = _tiny(["model.consistency=true", "corrupt.tasks=[mask]", "model.fill_holes=4",
                      "model.fill_biharmonic=8", "model.img_size=32"])
    x = _norm(_corrupt("mask", clean, ratio=0.5, patch_size=4)[0])
    with torch.no_grad():  # the exported graph takes the hole mask as its second input
        traced = unrolled_restorer(model, 1)(x, model.consistency.find_holes(x))
    torch.testing.assert_close(traced, model.restore(x, 1).detach(), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="fill_biharmonic needs model.consistency"):
        _tiny(["model.fill_biharmonic=8", "corrupt.tasks=[mask]"])
    with pytest.raises(ConfigError, match="fill_biharmonic must be 0"):
        _tiny(["model.fill_biharmonic=-1", "model.consistency=true", "corrupt.tasks=[mask]"])


class _Start(torch.nn.Module):
    def __init__(self, keep: KeepVisible):
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.keep.start(x, self.keep.prepare(x, None))


def _tiny(overrides: list[str]):
    cfg = load_config(None, ["model.img_size=16", "model.patch_size=4", "model.depth=1",
                             "model.embed_dim=24", "model.num_heads=2", *overrides])
    torch.manual_seed(0)
    return cfg, build_energy_model(cfg)


def test_model_consistency_needs_one_task_and_is_applied_every_step():
    with pytest.raises(ConfigError, match="single-task"):
        _tiny(["model.consistency=true", "corrupt.tasks=[mask, sr]"])
    cfg, model = _tiny(["model.consistency=true", "corrupt.tasks=[sr]", "model.steps=2"])
    x0 = _norm(_corrupt("sr", torch.rand(2, 3, 16, 16))[0])
    steps = model.restore_steps(x0)
    y = model.consistency.prepare(x0, None)
    for x in steps:
        torch.testing.assert_close(model.consistency.down(x), y, atol=1e-5, rtol=0)


def test_backprop_through_the_last_step_only():
    clean = torch.rand(4, 3, 16, 16)
    x0, _, weight = _corrupt("noise", clean)
    grads, values = {}, {}
    for mode in ("all", "last"):
        _, model = _tiny(["model.steps=3", f"model.backprop_steps={mode}"])
        loss, _ = model.loss(x0, clean, weight)
        loss.backward()
        values[mode] = loss.item()
        grads[mode] = model.log_step_sizes.grad.clone()
    assert values["all"] == pytest.approx(values["last"], rel=1e-6)  # same forward
    assert grads["last"][:2].abs().max() == 0  # earlier step sizes get no gradient
    assert grads["last"][2] != 0 and grads["all"][:2].abs().max() > 0


def test_reconstruction_energy_maps_each_token_to_its_own_patch():
    from enfold.model.heads import ReconstructionEnergy

    head = ReconstructionEnergy(dim=4, patch=2, in_chans=1)
    torch.nn.init.zeros_(head.proj.weight)
    tokens = torch.zeros(1, 4, 4)  # a 2x2 grid of tokens
    with torch.no_grad():
        head.proj.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # one 2x2 patch, row-major
        tokens[0, :, 0] = torch.arange(4.0)
        head.proj.weight[:, 0] = 10.0  # token t adds 10 * t to every pixel of its patch
    recon = head.reconstruct(tokens, 4)[0, 0]
    assert recon.tolist() == [[1, 2, 11, 12], [3, 4, 13, 14], [21, 22, 31, 32], [23, 24, 33, 34]]
    x = torch.zeros(1, 1, 4, 4)
    assert head(tokens, x).item() == pytest.approx(0.5 * recon.pow(2).mean().item())
    _, model = _tiny(["model.energy_head=recon", "model.step_size=1.0"])
    loss, _ = model(torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.ones(2, 1, 16, 16))
    loss.backward()
    assert model.head.proj.weight.grad.abs().sum() > 0
