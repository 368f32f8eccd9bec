"""The method learns: digits-tiny pretrained for 100 steps restores masked patches, end to end."""

from __future__ import annotations

import pytest
from conftest import DIGITS_TINY_STEPS

from enfold.pipeline.progress import read_metrics


@pytest.mark.slow
def test_digits_tiny_pretraining_restores_masked_patches(digits_tiny_run):
    # digits_tiny_run: configs/pretrain/digits-tiny.yaml for 100 steps (conftest)
    out = digits_tiny_run
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/mask/psnr_restored" in r]
    last = evals[-1]
    assert last["step"] == DIGITS_TINY_STEPS
    gain = last["eval/mask/psnr_restored"] - last["eval/mask/psnr_input"]
    assert gain >= 3.0, f"restoration gained only {gain:.2f} dB over the masked input"
    assert (out / "config.yaml").is_file() and (out / "checkpoint-last.pt").is_file()
    assert (out / "grids" / f"step{DIGITS_TINY_STEPS:06d}-mask.png").is_file()
