"""Shared test helpers: a tiny model config and a way to run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS_TINY = ROOT / "configs" / "pretrain" / "digits-tiny.yaml"

# A model small enough that a training step takes milliseconds on 2 CPU cores.
TINY = [
    "model.img_size=8", "model.patch_size=2", "model.depth=1", "model.embed_dim=32",
    "model.num_heads=2", "data.batch_size=16", "train.warmup_steps=2",
    "eval.num_images=32", "eval.batch_size=32", "eval.grid_images=4",
]


def set_args(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for item in overrides for arg in ("--set", item)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train(stage: str, config: Path, out: Path, overrides: list[str],
          pretrained: Path | None = None) -> Path:
    """What ``enfold STAGE --config CONFIG --out OUT --no-compile --set ...`` does, in this
    process: for tests whose subject is not the CLI, a fresh interpreter's 10 s of imports
    (torch, timm, torchvision) is most of the cost. Returns the last checkpoint."""
    from enfold.config import load_config

    cfg = load_config(config, [*overrides, "train.compile=false"])
    if stage == "pretrain":
        from enfold.pipeline.pretrain import run_pretrain

        return Path(run_pretrain(cfg, out))
    from enfold.pipeline.finetune import run_finetune

    return Path(run_finetune(cfg, out, pretrained=pretrained))


def run_cli(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``enfold ARGS`` as a user would, in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "enfold.cli.app", *args], capture_output=True, text=True,
        timeout=timeout, env=cli_env(), cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"enfold {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_cfg():
    from enfold.config import load_config

    return load_config(DIGITS_TINY, [*TINY, "train.compile=false"])


DIGITS_TINY_STEPS = 100


@pytest.fixture(scope="session")
def digits_tiny_run(tmp_path_factory) -> Path:
    """digits-tiny pretrained for 100 eager steps, once per test session: its run directory.
    Tests that need a model which really restores (learning, runtime) share this run.

    100 steps already restore masked patches (+6.4 dB at step 100 of `make demo`'s 300-step run);
    eager, because compiling costs more than it saves over 100 steps on 2 cores; in this process,
    so it trains on both cores (the CLI subprocesses get one thread each).
    """
    out = tmp_path_factory.mktemp("digits-tiny") / "run"
    train("pretrain", DIGITS_TINY, out, [f"train.max_steps={DIGITS_TINY_STEPS}"])
    return out
