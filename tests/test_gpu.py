"""Training on a CUDA GPU: the same numbers as on the CPU, bf16 + torch.compile, and a
checkpoint written on the GPU that resumes on a machine without one."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DIGITS_TINY, TINY, run_cli, set_args

from enfold.checkpoint.store import load_checkpoint
from enfold.pipeline.progress import read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _pretrain(out, steps: int, extra: list[str]) -> list[dict]:
    run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(out), "--max-steps",
            str(steps), *set_args([*TINY, "eval.every=0", *extra]))
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_first_step_loss_is_the_same_on_cuda_and_cpu(tmp_path):
    # Data, corruption and initialisation are drawn on the CPU from seeded generators, so the
    # device changes only float rounding (cuDNN may use TF32 for the patch-embedding conv).
    common = ["train.log_every=1", "train.compile=false", "train.bf16=false"]
    cpu = _pretrain(tmp_path / "cpu", 2, [*common, "train.device=cpu"])
    gpu = _pretrain(tmp_path / "gpu", 2, [*common, "train.device=cuda"])
    assert [r["step"] for r in gpu] == [1, 2]
    for c, g in zip(cpu, gpu, strict=True):
        assert g["loss"] == pytest.approx(c["loss"], rel=5e-3), (c, g)


def test_bf16_compiled_cuda_run_resumes_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    records = _pretrain(out, 20, ["train.device=cuda", "train.bf16=true", "train.compile=true",
                                  "train.log_every=5"])
    assert records and all(math.isfinite(r["loss"]) for r in records)
    state = load_checkpoint(out / "checkpoint-last.pt")  # maps to the CPU
    assert state["step"] == 20
    assert all(t.device.type == "cpu" for t in state["model"].values())
    # Device, precision and compilation may change on resume; the weights carry over.
    more = _pretrain(out, 25, ["train.device=cpu", "train.bf16=false", "train.compile=false",
                               "train.log_every=5"])
    assert more[-1]["step"] == 25 and math.isfinite(more[-1]["loss"])
    resumed = load_checkpoint(out / "checkpoint-last.pt")
    assert resumed["step"] == 25
    moved = max((resumed["model"][k].float() - v.float()).abs().max().item()
                for k, v in state["model"].items())
    assert moved > 0  # it trained on from the GPU weights rather than starting again
