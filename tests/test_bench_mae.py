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


class _Cut(Exception):
    pass


def test_a_cut_mae_run_resumes_from_its_state_to_the_same_weights(tmp_path):
    cfg = load_config(vs_mae.PRETRAIN, ["data.batch_size=4", "train.warmup_steps=1"])
    m = cfg.model
    data = torch.randn(16, m.in_chans, m.img_size, m.img_size,
                       generator=torch.Generator().manual_seed(0))
    straight, _, curve = vs_mae.train_mae(cfg, data, 6, seed=3)
    kept: dict[int, float] = {}

    def cut_at_5(step, model):
        kept[step] = float(next(model.parameters()).sum())
        if step == 5:
            raise _Cut

    state = tmp_path / "state.pt"
    with pytest.raises(_Cut):
        vs_mae.train_mae(cfg, data, 6, seed=3, state=state, keep=cut_at_5, keep_steps=[2, 5],
                         save_every=4)
    assert torch.load(state, weights_only=True)["step"] == 4  # saved before the cut
    resumed, _, resumed_curve = vs_mae.train_mae(cfg, data, 6, seed=3, state=state)
    assert sorted(kept) == [2, 5]
    assert resumed_curve == curve
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
