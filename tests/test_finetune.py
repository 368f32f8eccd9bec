"""Fine-tuning: loading pretrained weights, pos-embed interpolation, linear probe, low labels."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT, TINY, run_cli, set_args

from enfold.checkpoint.store import load_checkpoint
from enfold.config import load_config
from enfold.data import DigitsSource, select_per_class
from enfold.errors import EnfoldError
from enfold.model import build_energy_model
from enfold.model.classifier import (
    LinearProbe,
    ViTClassifier,
    load_backbone_weights,
    vit_state_from_pretrain,
)
from enfold.pipeline.knn import knn_scores

FINETUNE_TINY = ROOT / "configs" / "finetune" / "digits-tiny.yaml"
ARCH = ["model.patch_size=2", "model.depth=1", "model.embed_dim=32", "model.num_heads=2"]


def energy_state(img_size: int = 8, *extra: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    cfg = load_config(None, [*ARCH, f"model.img_size={img_size}", *extra])
    return vit_state_from_pretrain(build_energy_model(cfg).state_dict())


def classifier(img_size: int = 8, *extra: str, classes: int = 10) -> ViTClassifier:
    return ViTClassifier(load_config(None, [*ARCH, f"model.img_size={img_size}", *extra]).model,
                         classes)


def test_loading_pretrained_weights_misses_exactly_the_new_head():
    state = energy_state()
    net = classifier()
    load_backbone_weights(net.vit, state, "ckpt")
    loaded = net.vit.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert set(loaded) - set(state) == {"head.weight", "head.bias"}
    # the classifier uses fused attention again: no second-order gradient is needed
    assert any(getattr(m, "fused_attn", False) for m in net.modules())


def test_wrong_architecture_checkpoint_is_a_clear_error():
    state = energy_state(8, "model.embed_dim=48", "model.num_heads=3")
    with pytest.raises(EnfoldError, match="different architecture.*embed_dim") as info:
        load_backbone_weights(classifier().vit, state, "ckpt.pt")
    assert "ckpt.pt" in str(info.value) and "cls_token" in str(info.value)
    deeper = energy_state(8, "model.depth=2")
    with pytest.raises(EnfoldError, match="unexpected: blocks.1"):
        load_backbone_weights(classifier().vit, deeper, "ckpt.pt")
    missing_more = {k: v for k, v in energy_state().items() if k != "norm.weight"}
    with pytest.raises(EnfoldError, match="missing: norm.weight"):
        load_backbone_weights(classifier().vit, missing_more, "ckpt.pt")


def test_position_embeddings_are_interpolated_between_image_sizes():
    state = energy_state(8)  # 4x4 patch grid
    net = classifier(16)  # 8x8 patch grid
    load_backbone_weights(net.vit, state, "ckpt")
    assert net.vit.pos_embed.shape == (1, 1 + 64, 32)
    torch.testing.assert_close(net.vit.pos_embed[:, :1], state["pos_embed"][:, :1])  # cls kept
    grid = net.vit.pos_embed[0, 1:].reshape(8, 8, 32)
    assert grid.std() > 0 and torch.isfinite(grid).all()
    # a smooth resampling: the mean of the embedding field is preserved approximately
    old = state["pos_embed"][0, 1:].reshape(4, 4, 32)
    assert (grid.mean((0, 1)) - old.mean((0, 1))).abs().max() < 0.05
    logits = net(torch.zeros(2, 3, 16, 16))
    assert logits.shape == (2, 10)


def test_linear_probe_trains_only_its_head():
    probe = LinearProbe(classifier(), 10)
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
    probe.train()
    assert not probe.backbone.training and probe.head.training


def test_labels_per_class_is_honoured_exactly():
    labels = DigitsSource("train", 8).labels
    chosen = select_per_class(labels, 7, seed=3)
    counts = torch.bincount(torch.tensor([labels[i] for i in chosen]), minlength=10)
    assert counts.tolist() == [7] * 10
    assert chosen == select_per_class(labels, 7, seed=3)  # seeded
    assert chosen != select_per_class(labels, 7, seed=4)
    with pytest.raises(EnfoldError, match="labels_per_class=1000"):
        select_per_class(labels, 1000, seed=0)


def test_knn_votes_for_the_nearest_class():
    train = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    test = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), dim=1)
    scores = knn_scores(train, labels, test, num_classes=2, k=2)
    assert scores.argmax(1).tolist() == [0, 1]


@pytest.mark.slow
def test_finetune_cli_full_linear_knn_and_evaluate(tiny_runs, tmp_path):
    ckpt = tiny_runs["pretrain"]
    overrides = set_args([*TINY, "train.max_steps=6", "eval.every=3", "data.labels_per_class=5",
                          "finetune.mixup=0.2", "finetune.cutmix=0.2"])
    full = tmp_path / "full"
    run_cli("finetune", "--config", str(FINETUNE_TINY), "--pretrained", str(ckpt), "--out",
            str(full), "--no-compile", *overrides)
    records = [json.loads(line) for line in (full / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "eval/top1" in r] == [3, 6]
    assert all(0 <= r["eval/top1"] <= r["eval/top5"] <= 1 for r in records if "eval/top1" in r)
    assert (full / "confusion.png").stat().st_size > 1000
    state = load_checkpoint(full / "checkpoint-last.pt")
    assert state["classes"] == [str(i) for i in range(10)] and state["finetune_mode"] == "full"

    linear = tmp_path / "linear"
    run_cli("finetune", "--config", str(FINETUNE_TINY), "--pretrained", str(ckpt), "--out",
            str(linear), "--mode", "linear", "--no-compile", *overrides)
    pre_vit = vit_state_from_pretrain(load_checkpoint(ckpt)["model"])
    after = load_checkpoint(linear / "checkpoint-last.pt")["model"]
    for key, value in pre_vit.items():  # the backbone did not move
        torch.testing.assert_close(after[f"net.backbone.vit.{key}"], value, rtol=0, atol=0)

    knn = run_cli("finetune", "--config", str(FINETUNE_TINY), "--pretrained", str(ckpt),
                  "--out", str(tmp_path / "knn"), "--mode", "knn", *overrides)
    assert "kNN top-1" in knn.stdout
    assert json.loads((tmp_path / "knn" / "eval.json").read_text())["count"] == 360

    scratch = tmp_path / "scratch"
    run_cli("finetune", "--config", str(FINETUNE_TINY), "--out", str(scratch), "--no-compile",
            *overrides)
    assert load_checkpoint(scratch / "checkpoint-last.pt")["pretrained"] is None

    result = run_cli("evaluate", "--checkpoint", str(full / "checkpoint-last.pt"), "--out",
                     str(tmp_path / "ev"))
    assert "top1:" in result.stdout and "per-class accuracy" in result.stdout
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["top1"] == pytest.approx(records[-1]["eval/top1"])
    assert (tmp_path / "ev" / "confusion.png").exists()


def test_finetune_from_a_finetune_checkpoint_is_refused(tiny_runs, tmp_path):
    done = tiny_runs["finetune"]
    proc = run_cli("finetune", "--config", str(FINETUNE_TINY), "--pretrained",
                   str(done), "--out", str(tmp_path / "x"),
                   *set_args(TINY), check=False)
    assert proc.returncode == 2 and "'finetune' checkpoint" in proc.stderr
