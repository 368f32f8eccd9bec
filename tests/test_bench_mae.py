"""The MAE baseline of benchmarks/vs_mae.py knows where its patches are (needs the bench extra)."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import ROOT

pytest.importorskip("transformers", reason="the MAE baseline needs pip install 'enfold[bench]'")
sys.path.insert(0, str(ROOT / "benchmarks"))
import vs_mae  # noqa: E402

from enfold.config import load_config  # noqa: E402


def test_mae_position_tables_are_filled_and_distinct():
    model = vs_mae.mae_model(load_config(vs_mae.PRETRAIN))
    for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
        patches = table[0, 1:]  # row 0 is the class token
        assert not table.requires_grad  # fixed tables, as in MAE
        # every patch position gets its own code, so masked patches can be told apart
        assert torch.cdist(patches, patches).add(torch.eye(len(patches))).min() > 0.1


def test_learning_curve_read_offs_interpolate_in_log_steps_and_never_extrapolate():
    import learning_curves

    points = [(250, 0.5), (1000, 0.7)]
    assert learning_curves.interpolate(points, 500) == pytest.approx(0.6)  # halfway in log2
    assert learning_curves.interpolate(points, 1000) == pytest.approx(0.7)
    assert learning_curves.interpolate(points, 125) is None
    assert learning_curves.interpolate(points, 2000) is None
    row = lambda steps, top1: {"steps": steps, "pretrained": [top1], "linear": [top1],  # noqa: E731
                               "knn": [top1]}
    series = {"enfold": [row(500, 0.65)], "MAE": [row(250, 0.5), row(1000, 0.7)]}
    rows = learning_curves.read_offs(series, "enfold", {"enfold": 2.0, "mae": 1.0}, 1.0)
    # equal epochs: 500 MAE steps (0.6); CPU wall-clock: 1000 (0.7); GPU ratio 1: 500 (0.6)
    assert "0.650 vs 0.600 (+5.0)" in rows[0]
    assert "0.650 vs 0.700 (-5.0)" in rows[1]
    assert "0.650 vs 0.600 (+5.0)" in rows[2]
