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
import statistics
import sys
import time
from pathlib import Path

from common import (
    PRETRAIN,
    ROOT,
    finetune_arm,
    finished_pretraining,
    last_record,
    machine,
    shown,
)
from results_doc import write_section

ARMS = ("scratch", "pretrained", "linear", "knn")


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
    pre_existed = finished_pretraining(pre_dir, pre_cfg)
    ckpt = run_pretrain(pre_cfg, pre_dir)  # returns at once when the run is already finished
    last = last_record(pre_dir, "eval/mask/psnr_restored")

    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    read_back = 0
    for seed in args.seeds:
        for arm in ARMS:
            result = finetune_arm(arm, seed, checkpoint=ckpt, out=args.out,
                                  finetune_steps=args.finetune_steps,
                                  labels_per_class=args.labels_per_class, overrides=args.set,
                                  reuse_scratch=args.reuse_scratch)
            scores[arm].append(result.top1)
            read_back += result.read_back
            print(f"seed {seed} {arm:<10} top-1 {scores[arm][-1]:.4f}", flush=True)

    command = "python benchmarks/ssl_gain.py " + " ".join(sys.argv[1:])
    took = f"took {(time.time() - t0) / 60:.1f} min"
    if read_back or pre_existed:
        took += (f", reading back {read_back} of {len(ARMS) * len(args.seeds)} arms"
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
        f"{machine()}; {took}.",
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
