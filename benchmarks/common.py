"""What the benchmarks share: their configs, when a finished run is reused, the fine-tune arms,
metrics reading and the machine line of each results section.

A run is reused only when it was made by exactly the same config (its ``config.yaml``) from
exactly the same starting checkpoint (the sha256 recorded beside it in ``pretrained.sha256``;
absent means it started from scratch), and it finished. That one rule holds for pretraining runs
and fine-tune arms alike; anything else is trained again.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from enfold.checkpoint.store import LAST, load_checkpoint
from enfold.config import Config, from_dict, load_config, to_dict
from enfold.digest import file_sha256
from enfold.errors import ConfigError
from enfold.pipeline.progress import read_metrics

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "configs" / "pretrain" / "digits-ssl.yaml"
FINETUNE = ROOT / "configs" / "finetune" / "digits-tiny.yaml"

SOURCE = "pretrained.sha256"  # beside a run: the sha256 of the checkpoint it started from
SCRATCH = "none"  # the source of a run that started from random weights
ARM_MODES = {"scratch": "full", "pretrained": "full", "linear": "linear", "knn": "knn"}


def source_of(checkpoint: Path | None) -> str:
    """The reuse key's starting point: a checkpoint's sha256, or ``"none"`` for scratch."""
    return SCRATCH if checkpoint is None else file_sha256(checkpoint)


# What a fine-tune arm never reads: how the energy restores (the classifier is the ViT alone).
# The starting checkpoint's sha256 already keys what pretraining did with them, so an arm is
# reused across recipes that differ only here (the scratch arm across K, for one).
RESTORATION_ONLY = ("steps", "step_size", "learn_step_sizes", "backprop_steps", "langevin_noise")


def arm_key(config: dict[str, Any]) -> dict[str, Any]:
    """A fine-tune arm's config without the fields it never reads (``RESTORATION_ONLY`` and the
    restoration loss)."""
    key = {name: value for name, value in config.items() if name != "loss"}
    key["model"] = {k: v for k, v in config["model"].items() if k not in RESTORATION_ONLY}
    return key


def saved_config(path: Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` with the defaults of fields added since filled in (a new field's
    default keeps the old behaviour, so older runs stay reusable); None when it names a field
    that no longer exists or is missing."""
    if not path.exists():
        return None
    try:
        return to_dict(from_dict(Config, yaml.safe_load(path.read_text())))
    except ConfigError:
        return None


def same_run(run_dir: Path, cfg: Config, source: str, *, arm: bool = False) -> bool:
    """Whether ``run_dir`` was made by exactly ``cfg`` starting from ``source`` (for a fine-tune
    ``arm``: up to the fields it never reads)."""
    done, want = saved_config(run_dir / "config.yaml"), to_dict(cfg)
    if done is None:
        return False
    if (arm_key(done) != arm_key(want)) if arm else (done != want):
        return False
    recorded = run_dir / SOURCE
    return (recorded.read_text().strip() if recorded.exists() else SCRATCH) == source


def record_source(run_dir: Path, source: str) -> None:
    """Write the starting point beside a finished run."""
    (run_dir / SOURCE).write_text(source + "\n")


def finished_finetune(run_dir: Path, cfg: Config, source: str) -> bool:
    """A finished fine-tune arm (its ``eval.json`` written) of this config and starting point."""
    return (run_dir / "eval.json").exists() and same_run(run_dir, cfg, source, arm=True)


def finished_pretraining(run_dir: Path, cfg: Config) -> bool:
    """A pretraining run of this config that reached ``train.max_steps``, so a benchmark reads
    it back instead of training, and its reported minutes must say so."""
    last = run_dir / LAST
    return (last.exists() and same_run(run_dir, cfg, SCRATCH)
            and load_checkpoint(last)["step"] >= cfg.train.max_steps)


def last_record(run_dir: Path, key: str) -> dict[str, Any]:
    """The last record of ``run_dir/metrics.jsonl`` that holds ``key``."""
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if key in r][-1]


def machine() -> str:
    """The machine sentence of a results section."""
    return f"Machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}"


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class ArmResult:
    """One fine-tune arm's held-out top-1, and whether it was read back from a finished run."""

    top1: float
    read_back: bool


def finetune_arm(arm: str, seed: int, *, checkpoint: Path | None, out: Path,
                 finetune_steps: int = 300, labels_per_class: int = 10,
                 overrides: Sequence[str] = (), reuse_scratch: Path | None = None,
                 config: Path = FINETUNE) -> ArmResult:
    """Held-out top-1 of one arm (``scratch``, ``pretrained``, ``linear`` or ``knn``) and seed,
    fine-tuned with ``config`` (default ``configs/finetune/digits-tiny.yaml``) in
    ``out/<arm>-seed<seed>`` (``out/<arm>-<N>labels-seed<seed>`` for N labels per class other
    than 10, so the two tables' arms sit side by side) from ``checkpoint`` (ignored for
    scratch). A finished run of the same config and checkpoint is
    reused, from ``out`` or, for scratch, also from ``reuse_scratch`` (the scratch arm does not
    depend on pretraining)."""
    from enfold.pipeline.finetune import run_finetune

    cfg = load_config(config, [
        f"finetune.mode={ARM_MODES[arm]}", f"train.seed={seed}",
        f"train.max_steps={finetune_steps}", f"data.labels_per_class={labels_per_class}",
        "train.compile=false", f"eval.every={finetune_steps}", *overrides,
    ])
    labels = "" if labels_per_class == 10 else f"-{labels_per_class}labels"
    run_dir = out / f"{arm}{labels}-seed{seed}"
    start = None if arm == "scratch" else checkpoint
    source = source_of(start)
    candidates = [run_dir]
    if arm == "scratch" and reuse_scratch is not None:
        candidates.append(reuse_scratch / run_dir.name)
    for done in candidates:
        if finished_finetune(done, cfg, source):
            print(f"reusing {done}", flush=True)
            return ArmResult(final_top1(done), read_back=True)
    if run_dir.exists():  # a run of another config or checkpoint: resuming it would mix the two
        print(f"{run_dir} holds a run of another config or checkpoint: starting it again",
              flush=True)
        shutil.rmtree(run_dir)
    run_finetune(cfg, run_dir, pretrained=start)
    record_source(run_dir, source)
    return ArmResult(final_top1(run_dir), read_back=False)


def final_top1(run_dir: Path) -> float:
    """Held-out top-1 of a finished fine-tune arm."""
    return json.loads((run_dir / "eval.json").read_text())["top1"]


def fmt_seeds(values: list[float], digits: int = 3) -> str:
    """One seed's value, or the mean ± sample std of several: ``0.712`` / ``0.712 ± 0.004``."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
