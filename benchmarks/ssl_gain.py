"""Does energy pretraining help? Digits with few labels, side by side, several seeds.

    python benchmarks/ssl_gain.py                      # 10 labels per class, seeds 0 1 2

Arms, all with the same architecture, data split and fine-tune budget:
  scratch     full fine-tuning from random initialisation
  pretrained  full fine-tuning from an enfold pretrain checkpoint
  linear      linear probe (frozen pretrained backbone, BN + linear head)
  knn         cosine kNN on frozen pretrained features (no training)

One pretraining run (configs/pretrain/digits-ssl.yaml, unlabelled training split) serves every
seed; the seed picks the labelled subset, the head initialisation and the data order. Prints
mean and standard deviation of held-out top-1 (the fixed 360-image test split) per arm and
writes the table into docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from results_doc import finished_before, write_section

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "configs" / "pretrain" / "digits-ssl.yaml"
FINETUNE = ROOT / "configs" / "finetune" / "digits-tiny.yaml"
ARMS = ("scratch", "pretrained", "linear", "knn")


def final_top1(run_dir: Path) -> float:
    return json.loads((run_dir / "eval.json").read_text())["top1"]


SOURCE = "pretrained.sha256"  # beside a finished arm: what it was fine-tuned from


def finished(run_dir: Path, cfg_dict: dict, source: str) -> bool:
    """Whether ``run_dir`` holds a finished arm of exactly this config and starting point
    (``source``: the pretrained checkpoint's sha256, or "none" for scratch)."""
    if not (run_dir / "eval.json").exists():
        return False
    if yaml.safe_load((run_dir / "config.yaml").read_text()) != cfg_dict:
        return False
    recorded = run_dir / SOURCE
    return recorded.read_text().strip() == source if recorded.exists() else source == "none"


READ_BACK: list[str] = []  # arms taken from finished runs, so the reported minutes say so


def run_arm(arm: str, seed: int, args: argparse.Namespace, ckpt: Path, out: Path) -> float:
    """Held-out top-1 of one arm and seed; a finished run of the same config and checkpoint
    is reused (from ``out``, or for scratch also from ``args.reuse_scratch``)."""
    from enfold.config import load_config, to_dict
    from enfold.pipeline.checkpoint import file_sha256
    from enfold.pipeline.finetune import run_finetune

    mode = {"scratch": "full", "pretrained": "full", "linear": "linear", "knn": "knn"}[arm]
    cfg = load_config(FINETUNE, [
        f"finetune.mode={mode}", f"train.seed={seed}", f"train.max_steps={args.finetune_steps}",
        f"data.labels_per_class={args.labels_per_class}", "train.compile=false",
        f"eval.every={args.finetune_steps}", *args.set,
    ])
    run_dir = out / f"{arm}-seed{seed}"
    source = "none" if arm == "scratch" else file_sha256(ckpt)
    candidates = [run_dir]
    if arm == "scratch" and args.reuse_scratch is not None:
        # The scratch arm does not depend on pretraining: reuse a finished run of the same config.
        candidates.append(args.reuse_scratch / run_dir.name)
    for done in candidates:
        if finished(done, to_dict(cfg), source):
            print(f"reusing {done}", flush=True)
            READ_BACK.append(str(done))
            return final_top1(done)
    if run_dir.exists():  # a run of another config or checkpoint: resuming it would mix the two
        print(f"{run_dir} holds a run of another config or checkpoint: starting it again",
              flush=True)
        shutil.rmtree(run_dir)
    run_finetune(cfg, run_dir, pretrained=None if arm == "scratch" else ckpt)
    (run_dir / SOURCE).write_text(source + "\n")
    return final_top1(run_dir)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--pretrain-config", type=Path, default=PRETRAIN,
                        help="pretraining config (its model section must match the fine-tune "
                             "config's)")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="default: the pretraining config's train.max_steps")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ssl_gain")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--set", nargs="*", default=[], help="extra fine-tune overrides")
    parser.add_argument("--pretrain-set", nargs="*", default=[],
                        help="extra pretraining overrides, e.g. corrupt.mask.patch_size=4")
    parser.add_argument("--reuse-scratch", type=Path, default=None, metavar="DIR",
                        help="take the scratch arm from an earlier --out DIR when its config "
                             "matches (the scratch arm does not depend on pretraining)")
    args = parser.parse_args()

    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    t0 = time.time()
    pre_dir = args.out / "pretrain"
    steps = [f"train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []
    pre_cfg = load_config(args.pretrain_config, [*steps, *args.pretrain_set])
    pre_existed = finished_before(pre_dir, pre_cfg.train.max_steps)
    ckpt = run_pretrain(pre_cfg, pre_dir)  # returns at once when the run is already finished
    evals = [json.loads(line) for line in (pre_dir / "metrics.jsonl").open()]
    last = [r for r in evals if "eval/mask/psnr_restored" in r][-1]

    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        for arm in ARMS:
            scores[arm].append(run_arm(arm, seed, args, ckpt, args.out))
            print(f"seed {seed} {arm:<10} top-1 {scores[arm][-1]:.4f}", flush=True)

    command = "python benchmarks/ssl_gain.py " + " ".join(sys.argv[1:])
    took = f"took {(time.time() - t0) / 60:.1f} min"
    if READ_BACK or pre_existed:
        took += (f", reading back {len(READ_BACK)} of {len(ARMS) * len(args.seeds)} arms"
                 + (" and the pretraining" if pre_existed else "") + " from finished runs")
    rows = []
    for arm in ARMS:
        vals = scores[arm]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(f"| {arm} | {statistics.mean(vals):.4f} | {std:.4f} | "
                    + ", ".join(f"{v:.4f}" for v in vals) + " |")
    gain = statistics.mean(scores["pretrained"]) - statistics.mean(scores["scratch"])
    verdict = ("the pretrained arm beats the scratch arm" if gain > 0 else
               "the pretrained arm does NOT beat the scratch arm")
    table = "\n".join([
        "## Does energy pretraining help? (digits, "
        f"{args.labels_per_class} labels per class)",
        "",
        f"Command: `{command.strip()}` ({len(args.seeds)} seeds; {pre_cfg.train.max_steps} "
        f"pretraining steps of `{shown(args.pretrain_config)}` on the unlabelled "
        f"training split, then {args.finetune_steps} "
        "fine-tuning steps per arm; held-out: the fixed 360-image test split). "
        f"Machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
        f"{took}.",
        "",
        f"Pretraining reached `eval/mask/psnr_restored` {last['eval/mask/psnr_restored']:.2f} dB "
        f"(masked input {last['eval/mask/psnr_input']:.2f} dB).",
        "",
        "| arm | mean top-1 | std | per seed |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"Mean gain of pretrained over scratch: {gain * 100:+.2f} points: {verdict}.",
    ])
    print(table)
    write_section(args.results, "ssl_gain", table)


if __name__ == "__main__":
    main()
