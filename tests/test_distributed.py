"""DDP: the same command under torchrun on CPU (gloo) leaves identical weights on every rank."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import DIGITS_TINY, ROOT, TINY, cli_env, set_args

from enfold.checkpoint.store import load_checkpoint


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_keeps_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "enfold.cli.app", "pretrain", "--config", str(DIGITS_TINY), "--out", str(out),
           "--no-compile", *set_args([*TINY, "train.max_steps=6", "eval.every=0",
                                      "train.log_every=1"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 procs" in proc.stdout  # the effective batch counts both ranks
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    sync = [r for r in records if "ddp/max_param_spread" in r]
    assert sync == [{"step": 6, "ddp/world_size": 2, "ddp/max_param_spread": 0.0}]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # rank 0 only
    assert load_checkpoint(out / "checkpoint-last.pt")["step"] == 6
