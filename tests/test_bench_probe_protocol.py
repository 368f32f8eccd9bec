"""benchmarks/probe_protocol.py: every readout of a real checkpoint has one row of features per
image, the probe it fits learns, and kNN scores what it is given."""

from __future__ import annotations

import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import probe_protocol  # noqa: E402

from enfold.checkpoint.load import open_checkpoint  # noqa: E402
from enfold.config import load_config  # noqa: E402


def test_readouts_cover_every_block_the_final_norm_and_their_concatenation(tiny_runs):
    ckpt = tiny_runs["pretrain"]
    cfg = open_checkpoint(ckpt).cfg
    images = torch.randn(5, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
    feats = probe_protocol.readouts(ckpt, cfg, images, batch=2)
    depth, width = cfg.model.depth, cfg.model.embed_dim
    blocks = [f"block {i + 1}, mean" for i in range(depth)]
    assert list(feats) == [*blocks, probe_protocol.FINAL, probe_protocol.ALL]
    assert all(feats[b].shape == (5, width) for b in [*blocks, probe_protocol.FINAL])
    assert feats[probe_protocol.ALL].shape == (5, depth * width)
    # the concatenation is the blocks side by side; the final norm is not the last block
    assert torch.allclose(feats[probe_protocol.ALL][:, -width:], feats[blocks[-1]])
    assert not torch.allclose(feats[probe_protocol.FINAL], feats[blocks[-1]])


def test_the_probe_learns_separable_features_and_knn_scores_them():
    cfg = load_config(probe_protocol.FINETUNE, ["finetune.mode=linear"])
    gen = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(10, 16, generator=gen)
    y = torch.arange(10).repeat(10)
    x = centres[y] + 0.3 * torch.randn(100, 16, generator=gen)
    test_y = torch.arange(10).repeat(20)
    test_x = centres[test_y] + 0.3 * torch.randn(200, 16, generator=gen)
    head = probe_protocol.fit_probe(x, y, cfg, seed=0)
    with torch.no_grad():
        assert (head(test_x).argmax(1) == test_y).float().mean() > 0.95
    assert probe_protocol.knn_top1(x, y, test_x, test_y) > 0.95
    shuffled = y[torch.randperm(100, generator=gen)]  # labels unrelated to the features
    assert probe_protocol.knn_top1(x, shuffled, test_x, test_y) < 0.5
