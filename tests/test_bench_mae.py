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
