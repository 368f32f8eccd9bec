"""The learned peers (enfold/model/peers.py): the same trainer trains them, the same loader loads
them, and they start as the identity restorer with the parameter budget they claim."""

from __future__ import annotations

import pytest
import torch
from conftest import DIGITS_TINY, TINY

from enfold.checkpoint.load import load_energy_model
from enfold.config import load_config
from enfold.model import build_energy_model
from enfold.model.peers import DirectViT, DnCNN, vit_params
from enfold.pipeline.distributed import DistInfo
from enfold.pipeline.pretrain import build_pretrain_parts
from enfold.pipeline.trainer import fit

NOISE = [*TINY, "train.compile=false", "corrupt.tasks=[noise]", "corrupt.noise.sigma=0.05",
         "corrupt.noise.sigma_max=0.2", "model.noise_level_input=true"]


@pytest.mark.parametrize("peer", ["direct_vit", "dncnn"])
def test_a_peer_starts_as_the_identity_and_needs_sigma_when_it_takes_one(peer):
    model = build_energy_model(load_config(DIGITS_TINY, [*NOISE, f"model.restorer={peer}"]))
    x = torch.randn(2, model.in_chans, model.img_size, model.img_size)
    assert torch.equal(model.restore(x, sigma=0.1), x)
    with pytest.raises(ValueError, match="give the noise level sigma"):
        model.restore(x)


def test_the_dncnn_has_the_parameters_of_the_vit_it_is_compared_with():
    cfg = load_config(DIGITS_TINY, [*NOISE, "model.restorer=dncnn"])
    cnn, vit = build_energy_model(cfg), vit_params(cfg.model)
    assert isinstance(cnn, DnCNN)
    assert abs(sum(p.numel() for p in cnn.parameters()) / vit - 1) < 0.1


def test_the_trainer_trains_a_peer_and_the_loader_reads_it_back(tmp_path):
    cfg = load_config(DIGITS_TINY, [*NOISE, "model.restorer=direct_vit", "train.max_steps=30",
                                    "eval.every=0", "train.warmup_steps=5"])
    parts = build_pretrain_parts(cfg, tmp_path, DistInfo())
    ckpt = fit(cfg, parts, tmp_path, DistInfo())
    model, loaded_cfg = load_energy_model(ckpt)
    assert isinstance(model, DirectViT) and loaded_cfg.model.restorer == "direct_vit"
    clean = torch.rand(8, model.in_chans, model.img_size, model.img_size)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    restored = model.restore((noisy - 0.5) / 0.5, sigma=0.1) * 0.5 + 0.5
    assert (restored - clean).pow(2).mean() < (noisy - clean).pow(2).mean()


def _moved_off_the_identity(model):
    """The peer with its zero-initialised last layer randomised, so its residual is not 0."""
    last = model.readout if isinstance(model, DirectViT) else model.net[-1]
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=gen))
    return model


@pytest.mark.parametrize("peer", ["direct_vit", "dncnn"])
def test_a_peer_gets_the_energy_restorers_data_consistency(peer):
    # the comparison is fair only if the peer may use what the input pins down, as enfold does
    mask = _moved_off_the_identity(build_energy_model(load_config(DIGITS_TINY, [
        *TINY, "corrupt.tasks=[mask]", "model.consistency=true", "model.fill_holes=4",
        f"model.restorer={peer}"])))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    holes = torch.zeros(2, 1, 8, 8)
    holes[:, :, 2:6, 2:6] = 1
    with torch.no_grad():
        out = mask.restore(x, weight=holes)
    assert torch.equal(out * (1 - holes), x * (1 - holes))  # visible pixels kept exactly
    assert (out - x).abs().mul(holes).max() > 1e-3  # the holes were restored

    sr = _moved_off_the_identity(build_energy_model(load_config(DIGITS_TINY, [
        *TINY, "corrupt.tasks=[sr]", "corrupt.sr.factor=2", "model.consistency=true",
        f"model.restorer={peer}"])))
    with torch.no_grad():
        low = sr.consistency.prepare(x, None)  # the low-resolution image the input enlarges
        out = sr.restore(x)
    assert (out - x).abs().max() > 1e-3
    assert torch.allclose(sr.consistency.down(out), low, atol=1e-5)  # it shrinks back to it


def test_the_dncnn_width_can_be_set_for_equal_training_time():
    cfg = load_config(DIGITS_TINY, [*NOISE, "model.restorer=dncnn", "model.dncnn_width=12"])
    cnn = build_energy_model(cfg)
    assert cnn.width == 12 and cnn.net[0].out_channels == 12


def test_the_dncnns_last_features_still_depend_on_its_input():
    # with PyTorch's default conv init a 17-layer plain ReLU stack forgets its input (the
    # across-batch spread fell 1e6-fold) and the peer never leaves the identity
    torch.manual_seed(0)
    cfg = load_config(DIGITS_TINY, [*NOISE, "model.restorer=dncnn", "model.dncnn_width=16"])
    cnn = build_energy_model(cfg)
    x = torch.rand(8, cnn.in_chans + 1, cnn.img_size, cnn.img_size)  # + the noise channel
    with torch.no_grad():
        features = cnn.net[:-1](x)
    assert features.std(0).mean() > 0.01 * x.std(0).mean()  # the default init: about 1e-6
