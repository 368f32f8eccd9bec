"""The benchmarks' shared module: one reuse rule (config + starting checkpoint + finished),
metrics read through the pipeline's reader, checkpoints written by the trainer's writer."""

from __future__ import annotations

import json
import sys

import torch
from conftest import DIGITS_TINY, ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402

from enfold.checkpoint.store import load_checkpoint  # noqa: E402
from enfold.config import load_config, save_config  # noqa: E402
from enfold.pipeline.trainer import write_checkpoint  # noqa: E402


def _finished_arm(run_dir, cfg, source: str, top1: float) -> None:
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "eval.json").write_text(json.dumps({"top1": top1}))
    common.record_source(run_dir, source)


def _arm_cfg(seed: int = 0):
    # the config finetune_arm builds for a linear arm with its defaults
    return load_config(common.FINETUNE, [
        "finetune.mode=linear", f"train.seed={seed}", "train.max_steps=300",
        "data.labels_per_class=10", "train.compile=false", "eval.every=300"])


def test_a_finished_arm_of_the_same_config_and_checkpoint_is_read_back(tmp_path):
    ckpt = tmp_path / "pre.pt"
    ckpt.write_bytes(b"weights")
    _finished_arm(tmp_path / "out" / "linear-seed0", _arm_cfg(), common.source_of(ckpt), 0.625)
    result = common.finetune_arm("linear", 0, checkpoint=ckpt, out=tmp_path / "out")
    assert result == common.ArmResult(0.625, read_back=True)


def test_reuse_needs_the_same_checkpoint_config_and_a_finished_run(tmp_path):
    ckpt, other = tmp_path / "a.pt", tmp_path / "b.pt"
    ckpt.write_bytes(b"weights a")
    other.write_bytes(b"weights b")
    run = tmp_path / "linear-seed0"
    _finished_arm(run, _arm_cfg(), common.source_of(ckpt), 0.5)
    assert common.finished_finetune(run, _arm_cfg(), common.source_of(ckpt))
    assert not common.finished_finetune(run, _arm_cfg(), common.source_of(other))
    assert not common.finished_finetune(run, _arm_cfg(seed=1), common.source_of(ckpt))
    assert not common.finished_finetune(run, _arm_cfg(), common.SCRATCH)
    (run / "eval.json").unlink()
    assert not common.finished_finetune(run, _arm_cfg(), common.source_of(ckpt))


def test_an_arm_is_reused_across_restoration_only_fields_but_not_across_the_classifier(tmp_path):
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"weights a")
    run = tmp_path / "linear-seed0"
    _finished_arm(run, _arm_cfg(), common.source_of(ckpt), 0.5)
    source = common.source_of(ckpt)
    base = ["finetune.mode=linear", "train.seed=0", "train.max_steps=300",
            "data.labels_per_class=10", "train.compile=false", "eval.every=300"]
    # K and the restoration loss never reach the classifier; the checkpoint hash keys them
    for change in ("model.steps=1", "model.backprop_steps=last",
                   "loss.reduction=per_image_log"):
        assert common.finished_finetune(run, load_config(common.FINETUNE, [*base, change]),
                                        source), change
    for change in ("model.depth=1", "model.embed_dim=64", "finetune.layer_decay=0.5"):
        assert not common.finished_finetune(run, load_config(common.FINETUNE, [*base, change]),
                                            source), change
    # pretraining runs still need the exact config
    pre = tmp_path / "pretrain"
    pre.mkdir()
    save_config(_arm_cfg(), pre / "config.yaml")
    assert not common.same_run(pre, load_config(common.FINETUNE, [*base, "model.steps=1"]),
                               common.SCRATCH)


def test_a_pretraining_run_is_finished_at_its_max_steps_with_its_config(tmp_path, tiny_cfg):
    run = tmp_path / "pretrain"
    run.mkdir()
    save_config(tiny_cfg, run / "config.yaml")
    steps = tiny_cfg.train.max_steps
    write_checkpoint(run / "checkpoint-last.pt", stage="pretrain", step=steps - 1,
                     model_state={}, cfg=tiny_cfg)
    assert not common.finished_pretraining(run, tiny_cfg)  # stopped before the end
    write_checkpoint(run / "checkpoint-last.pt", stage="pretrain", step=steps,
                     model_state={}, cfg=tiny_cfg)
    assert common.finished_pretraining(run, tiny_cfg)
    other = load_config(DIGITS_TINY, [*TINY, "train.compile=false", "train.seed=1"])
    assert not common.finished_pretraining(run, other)


def test_last_record_reads_metrics_jsonl(tmp_path):
    records = [{"step": 1, "loss": 1.0}, {"step": 2, "eval/x": 3.0}, {"step": 3, "loss": 0.5},
               {"step": 4, "eval/x": 4.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert common.last_record(tmp_path, "eval/x") == {"step": 4, "eval/x": 4.0}


def test_machine_line_names_threads_and_torch():
    assert common.machine() == (f"Machine: {torch.get_num_threads()} CPU threads, "
                                f"torch {torch.__version__}")


def test_write_checkpoint_is_the_layout_loaders_read(tmp_path, tiny_cfg):
    path = tmp_path / "c.pt"
    write_checkpoint(path, stage="pretrain", step=7, model_state={"w": torch.ones(2)},
                     cfg=tiny_cfg, extra={"classes": ["a"]})
    state = load_checkpoint(path)
    assert list(state) == ["stage", "step", "model", "config", "versions", "classes"]
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.ones(2))


def test_arms_with_another_label_count_get_their_own_directory(tmp_path):
    # a 100-labels run must not read back, nor delete, the 10-labels arm beside it
    ckpt = tmp_path / "pre.pt"
    ckpt.write_bytes(b"weights")
    ten = tmp_path / "out" / "linear-seed0"
    _finished_arm(ten, _arm_cfg(), common.source_of(ckpt), 0.625)
    cfg100 = load_config(common.FINETUNE, [
        "finetune.mode=linear", "train.seed=0", "train.max_steps=300",
        "data.labels_per_class=100", "train.compile=false", "eval.every=300"])
    _finished_arm(tmp_path / "out" / "linear-100labels-seed0", cfg100, common.source_of(ckpt),
                  0.75)
    result = common.finetune_arm("linear", 0, checkpoint=ckpt, out=tmp_path / "out",
                                 labels_per_class=100)
    assert result == common.ArmResult(0.75, read_back=True)
    assert common.final_top1(ten) == 0.625


def test_a_run_saved_before_a_field_was_added_is_still_the_same_run(tmp_path):
    import yaml

    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"weights a")
    run = tmp_path / "linear-seed0"
    _finished_arm(run, _arm_cfg(), common.source_of(ckpt), 0.5)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # as written before loss.reduction existed: its default is the old behaviour
    del saved["loss"]["reduction"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert common.finished_finetune(run, _arm_cfg(), common.source_of(ckpt))
    # a field the config no longer knows: another run, never an error
    saved["loss"]["retired_field"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert common.saved_config(run / "config.yaml") is None
    assert not common.finished_finetune(run, _arm_cfg(), common.source_of(ckpt))
