"""The demo picture (`enfold visualize`, training grids) labels every column with its PSNR."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from enfold.metrics import region_psnr
from enfold.pipeline.restoration_eval import column_labels, save_grid


def test_columns_are_labelled_with_their_psnr(tmp_path):
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=gen)
    corrupted = clean * 0.5
    step = clean * 0.9
    weight = torch.ones(2, 1, 16, 16)
    labels = column_labels([corrupted, step, clean], weight)
    want = float(region_psnr(step, clean, weight).mean())
    assert labels[0].startswith("corrupted ") and labels[2] == "clean"
    assert labels[1] == f"step 1 {want:.1f} dB"
    save_grid([corrupted, step, clean], tmp_path / "plain.png", scale=4)
    save_grid([corrupted, step, clean], tmp_path / "grid.png", scale=4, labels=labels)
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    header = grid.shape[0] - plain.shape[0]
    assert header >= 12 and grid.shape[1] == plain.shape[1]
    assert (grid[header:] == plain).all()  # the pictures are untouched below the labels
    strip = grid[:header]
    col = grid.shape[1] // 3
    for i in range(3):  # dark text pixels over every column
        assert (strip[:, i * col:(i + 1) * col] < 128).any(), i
