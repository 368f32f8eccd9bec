"""The energy ViT: shapes, timm parity, second-order gradients, input checks."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from enfold.config import load_config
from enfold.errors import ConfigError
from enfold.model import EnergyViT, build_energy_model

SMALL = ["model.img_size=8", "model.patch_size=2", "model.depth=2", "model.embed_dim=32",
         "model.num_heads=2"]


def make(*overrides: str) -> EnergyViT:
    torch.manual_seed(0)
    return build_energy_model(load_config(None, [*SMALL, *overrides]))


def batch(b: int = 3, size: int = 8):
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    weight = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
    corrupted = torch.where(weight.bool(), torch.zeros_like(clean), clean)
    return corrupted, clean, weight


def test_energy_is_one_scalar_per_image_and_restore_keeps_shape():
    model = make()
    x, _, _ = batch()
    assert model.energy(x).shape == (3,)
    steps = model.restore_steps(x)
    assert len(steps) == 2 and all(s.shape == x.shape for s in steps)
    assert len(model.restore_steps(x, steps=5)) == 5  # more steps than trained reuse last alpha
    assert not torch.equal(model.restore(x), x)


def test_restore_is_gradient_descent_on_the_energy():
    model = make()
    x, _, _ = batch()
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model.energy(xr).sum(), xr)
    alpha = model.step_sizes()[0]
    torch.testing.assert_close(model.restore_steps(x)[0], x - alpha * g, rtol=1e-5, atol=1e-6)
    # one gradient step with a small alpha lowers the energy
    assert (model.energy(x - 1e-3 * g) < model.energy(x)).all()


def test_linear_patch_embedding_matches_timm_convolution():
    model = make()
    ref = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=2, depth=2,
                            embed_dim=32, num_heads=2, num_classes=0)
    ref.load_state_dict(model.vit.state_dict())  # same keys and shapes as timm
    x, _, _ = batch()
    torch.testing.assert_close(model.vit.forward_features(x), ref.forward_features(x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["sqnorm", "linear"])
def test_restoration_loss_gives_nonzero_gradients_to_every_trainable_parameter(head):
    model = make(f"model.energy_head={head}", "loss.margin_weight=0.1")
    loss, parts = model(*batch())
    loss.backward()
    assert torch.isfinite(loss) and "loss/margin" in parts
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.log_step_sizes.grad.abs().min() > 0  # every step size learns


def test_func_grad_equals_autograd_double_backward():
    model = make()
    x, clean, weight = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    loss, _ = model(x, clean, weight)
    grads_func = torch.autograd.grad(loss, params)
    model.set_grad_checkpointing(True)  # eager path: autograd.grad(create_graph=True)
    loss2, _ = model(x, clean, weight)
    grads_ckpt = torch.autograd.grad(loss2, params)
    torch.testing.assert_close(loss2, loss, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads_func, grads_ckpt, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-8)


def test_fixed_step_sizes_are_not_trained():
    model = make("model.learn_step_sizes=false", "model.step_size=0.3")
    assert "log_step_sizes" not in dict(model.named_parameters())
    torch.testing.assert_close(model.step_sizes(), torch.tensor([0.3, 0.3]))


def test_loss_region_and_step_weights():
    x, clean, weight = batch()
    masked_only = make()(x, clean, weight)[0]
    everywhere = make("loss.region=all")(x, clean, weight)[0]
    assert masked_only > everywhere  # unmasked pixels are already right
    with pytest.raises(ConfigError, match="step_weights"):
        make("loss.step_weights=[1.0]")
    weighted = make("loss.step_weights=[1.0, 1.0]")(x, clean, weight)[0]
    assert torch.isfinite(weighted)


def test_per_image_log_reduction_is_the_mean_log_of_each_images_region_error():
    model = make("loss.reduction=per_image_log")
    clean = torch.zeros(2, 3, 4, 4)
    restored = clean.clone()
    restored[0] += 0.1  # image 0: error 0.01 everywhere; image 1: 0.25 on its region only
    restored[1, :, :2] += 0.5
    weight = torch.zeros(2, 1, 4, 4)
    weight[:, :, :2] = 1.0  # the corrupted region: the top half of both images
    got = model.reconstruction_error(restored, clean, weight)
    want = (math.log(0.01 + 1e-6) + math.log(0.25 + 1e-6)) / 2
    assert abs(float(got) - want) < 1e-5
    # pooled, the hard image dominates; per image, halving the easy image's error counts as
    # much as halving the hard one's
    pooled = make().reconstruction_error(restored, clean, weight)
    assert abs(float(pooled) - (0.01 + 0.25) / 2) < 1e-6
    x, clean, weight = batch()
    loss = model(x, clean, weight)[0]
    loss.backward()
    assert torch.isfinite(loss) and model.log_step_sizes.grad is not None


def test_wrong_image_shape_is_a_clear_error():
    model = make()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 8, 8\)"):
        model.check_input(torch.zeros(2, 3, 16, 16))


def test_bad_architecture_names_the_problem():
    with pytest.raises(ConfigError, match="not a timm model"):
        make("model.arch=vit_tinny_patch16_224")
    with pytest.raises(ConfigError, match="multiple of model.patch_size"):
        make("model.img_size=9")


def test_grid_shifted_energy_is_the_mean_over_the_four_half_patch_shifts():
    cfg = load_config(None, ["model.img_size=16", "model.patch_size=4", "model.depth=1",
                             "model.embed_dim=24", "model.num_heads=2"])
    torch.manual_seed(0)
    model = build_energy_model(cfg).eval()
    x = torch.randn(3, 3, 16, 16)
    one = model.energy(x)
    model.set_grid_shifts(4)
    rolled = [model.grid_energy(torch.roll(x, (dy, dx), (2, 3)))
              for dy, dx in ((0, 0), (0, 2), (2, 0), (2, 2))]
    torch.testing.assert_close(model.energy(x), torch.stack(rolled).mean(0))
    assert not torch.allclose(model.energy(x), one)
    assert model.restore(x).shape == x.shape
    with pytest.raises(ConfigError, match="must be 1 or 4"):
        model.set_grid_shifts(3)


NOISE_LEVEL = ["corrupt.tasks=[noise]", "corrupt.noise.sigma=0.05", "corrupt.noise.sigma_max=0.2",
               "model.noise_level_input=true", "model.steps=1"]


def test_noise_level_input_scales_the_step_by_sigma_squared():
    model = make(*NOISE_LEVEL)
    assert model.noise_ref == pytest.approx(0.1)  # the range's geometric centre
    x, _, _ = batch()
    with pytest.raises(ValueError, match="noise level sigma"):
        model.restore(x)
    at_ref = model.restore(x, sigma=0.1) - x
    twice = model.restore(x, sigma=torch.tensor([0.2, 0.2, 0.2])) - x
    assert at_ref.abs().max() > 0
    torch.testing.assert_close(twice, 4 * at_ref, rtol=1e-4, atol=1e-6)


def test_each_step_can_be_told_its_own_noise_level():
    """``sigma`` as a function ``(x_k, k)``: called before every step with the image that step
    starts from; a constant function is the fixed sigma, a changed one changes later steps."""
    model = make(*NOISE_LEVEL)
    x, _, _ = batch()
    seen: list[tuple[int, torch.Tensor]] = []

    def constant(x_k: torch.Tensor, k: int) -> float:
        seen.append((k, x_k))
        return 0.1

    fixed = model.restore_steps(x, 3, sigma=0.1)
    called = model.restore_steps(x, 3, sigma=constant)
    assert [k for k, _ in seen] == [0, 1, 2]
    torch.testing.assert_close(seen[1][1], fixed[0])  # step 1 starts from step 0's output
    for a, b in zip(fixed, called, strict=True):
        torch.testing.assert_close(a, b)
    halved = model.restore_steps(x, 3, sigma=lambda x_k, k: 0.1 if k == 0 else 0.05)
    torch.testing.assert_close(halved[0], fixed[0])
    torch.testing.assert_close(halved[1] - halved[0],
                               model.restore_steps(fixed[0], 1, sigma=0.05)[0] - fixed[0])


def test_noise_level_is_read_off_the_pair_in_pixels_and_trains():
    model = make(*NOISE_LEVEL)  # data.std 0.5: a pixel sigma s is 2 s normalised
    _, clean, _ = batch(b=4, size=8)
    sigma = torch.tensor([0.05, 0.1, 0.15, 0.2])
    noisy = clean + 2 * sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape,
                                                                generator=torch.Generator()
                                                                .manual_seed(3))
    torch.testing.assert_close(model.noise_level(noisy, clean), sigma, rtol=0.25, atol=0)
    loss, _ = model(noisy, clean, torch.ones(4, 1, 8, 8))
    loss.backward()
    assert model.log_step_sizes.grad is not None and torch.isfinite(loss)


def test_noise_level_input_is_for_noise_restorers_only():
    with pytest.raises(ConfigError, match="corrupt.tasks=\\[noise\\]"):
        make("corrupt.tasks=[mask]", "model.noise_level_input=true")


def test_a_noise_level_restorer_target_takes_sigma_as_its_second_input(tmp_path):
    from enfold.artifact.targets import torch_target
    from enfold.pipeline.trainer import write_checkpoint

    cfg = load_config(None, [*SMALL, *NOISE_LEVEL])
    path = tmp_path / "noise-level.pt"
    model = build_energy_model(cfg)
    write_checkpoint(path, stage="pretrain", step=1, model_state=model.state_dict(), cfg=cfg)
    assert torch_target(path, "energy").target == "energy"  # the energy exports as is
    target = torch_target(path, "restorer")
    assert target.metadata["restorer_inputs"] == ["sigma"]
    assert target.metadata["noise_ref"] == pytest.approx(model.noise_ref)
    x = torch.randn(2, 3, 8, 8)
    sigma = torch.tensor([0.05, 0.2])
    with torch.no_grad():
        got = target.module(x, sigma)
    want = target.model.restore(x, sigma=sigma).detach()
    torch.testing.assert_close(got, want)
