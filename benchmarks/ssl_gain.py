"""Does energy pretraining help? Few labels, side by side, several seeds.

    python benchmarks/ssl_gain.py                      # digits, 10 labels per class, seeds 0 1 2
    python benchmarks/ssl_gain.py --data fmnist        # Fashion-MNIST (configs/*/fmnist-tiny)
    python benchmarks/ssl_gain.py --data fmnist --labels-per-class 100

Arms, all with the same architecture, data split and fine-tune budget:
  scratch     full fine-tuning from random initialisation
  pretrained  full fine-tuning from an enfold pretrain checkpoint
  linear      linear probe (frozen pretrained backbone, BN + linear head)
  knn         cosine kNN on frozen pretrained features (no training)

One pretraining run (unlabelled training split) serves every seed; the seed picks the labelled
subset, the head initialisation and the data order. Beside the arms, the raw-pixel anchors on
the same labelled subsets: logistic regression and 1-NN on the flattened pixels. Prints mean and
standard deviation of held-out top-1 (digits: the fixed 360-image test split; Fashion-MNIST: the
full 10,000-image test set) per arm and writes the table into docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import (
    FINETUNE,
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
PRESETS = {  # --data: (pretraining config, fine-tune config, results section prefix)
    "digits": (PRETRAIN, FINETUNE, "ssl_gain"),
    "fmnist": (ROOT / "configs" / "pretrain" / "fmnist-tiny.yaml",
               ROOT / "configs" / "finetune" / "fmnist-tiny.yaml", "ssl_gain_fmnist"),
}


def raw_pixel_anchors(finetune_config: Path, labels_per_class: int, seed: int
                      ) -> dict[str, float]:
    """Held-out top-1 of logistic regression and 1-NN on raw pixels, trained on the same
    labelled subset the fine-tune arm of ``seed`` uses."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from enfold.config import load_config
    from enfold.data import build_source, select_per_class

    cfg = load_config(finetune_config)
    train = build_source(cfg.data.source, "train", cfg.model, cfg.data)
    test = build_source(cfg.data.source, "heldout", cfg.model, cfg.data)
    chosen = select_per_class(train.labels, labels_per_class, seed)

    def flat(source, indices) -> np.ndarray:
        return np.stack([source.image(i).flatten().numpy() for i in indices])

    x, y = flat(train, chosen), np.asarray(train.labels)[chosen]
    xt, yt = flat(test, range(len(test))), np.asarray(test.labels)
    logreg = LogisticRegression(max_iter=2000).fit(x, y)
    nn1 = KNeighborsClassifier(n_neighbors=1).fit(x, y)
    return {"raw pixels: logistic regression": float((logreg.predict(xt) == yt).mean()),
            "raw pixels: 1-NN": float((nn1.predict(xt) == yt).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--data", choices=sorted(PRESETS), default="digits",
                        help="which configs: digits (digits-ssl, digits-tiny) or fmnist "
                             "(fmnist-tiny); --pretrain-config/--finetune-config override")
    parser.add_argument("--pretrain-config", type=Path, default=None,
                        help="pretraining config (its model section must match the fine-tune "
                             "config's)")
    parser.add_argument("--finetune-config", type=Path, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="default: the pretraining config's train.max_steps")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None,
                        help="default runs/ssl_gain (digits) or runs/ssl_gain_fmnist")
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

    pre_default, ft_default, section = PRESETS[args.data]
    args.pretrain_config = args.pretrain_config or pre_default
    args.finetune_config = args.finetune_config or ft_default
    args.out = args.out or ROOT / "runs" / section
    if args.data == "fmnist" or args.labels_per_class != 10:
        section = f"{section}_{args.labels_per_class}"
    t0 = time.time()
    pre_dir = args.out / "pretrain"
    steps = [f"train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []
    pre_cfg = load_config(args.pretrain_config, [*steps, *args.pretrain_set])
    pre_existed = finished_pretraining(pre_dir, pre_cfg)
    ckpt = run_pretrain(pre_cfg, pre_dir)  # returns at once when the run is already finished
    last = last_record(pre_dir, "eval/mask/psnr_restored")

    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    anchors: dict[str, list[float]] = {}
    read_back = 0
    for seed in args.seeds:
        for arm in ARMS:
            result = finetune_arm(arm, seed, checkpoint=ckpt, out=args.out,
                                  finetune_steps=args.finetune_steps,
                                  labels_per_class=args.labels_per_class, overrides=args.set,
                                  reuse_scratch=args.reuse_scratch,
                                  config=args.finetune_config)
            scores[arm].append(result.top1)
            read_back += result.read_back
            print(f"seed {seed} {arm:<10} top-1 {scores[arm][-1]:.4f}", flush=True)
        for name, top1 in raw_pixel_anchors(args.finetune_config, args.labels_per_class,
                                            seed).items():
            anchors.setdefault(name, []).append(top1)
            print(f"seed {seed} {name} top-1 {top1:.4f}", flush=True)

    command = "python benchmarks/ssl_gain.py " + " ".join(sys.argv[1:])
    took = f"took {(time.time() - t0) / 60:.1f} min"
    if read_back or pre_existed:
        took += (f", reading back {read_back} of {len(ARMS) * len(args.seeds)} arms"
                 + (" and the pretraining" if pre_existed else "") + " from finished runs")
    rows = []
    for arm, vals in [*scores.items(), *anchors.items()]:
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(f"| {arm} | {statistics.mean(vals):.4f} | {std:.4f} | "
                    + ", ".join(f"{v:.4f}" for v in vals) + " |")
    gain = statistics.mean(scores["pretrained"]) - statistics.mean(scores["scratch"])
    verdict = ("the pretrained arm beats the scratch arm" if gain > 0 else
               "the pretrained arm does NOT beat the scratch arm")
    every = all(p > s for p, s in zip(scores["pretrained"], scores["scratch"], strict=True))
    logreg = statistics.mean(anchors["raw pixels: logistic regression"])
    probe_gain = statistics.mean(scores["linear"]) - logreg
    cfg_data = load_config(args.finetune_config).data.source
    held = ("the fixed 360-image test split" if cfg_data == "digits" else
            "the full official test set" if cfg_data.startswith("fashion-mnist") else
            "the held-out split")
    table = "\n".join([
        f"## Does energy pretraining help? ({cfg_data}, "
        f"{args.labels_per_class} labels per class)",
        "",
        f"Command: `{command.strip()}` ({len(args.seeds)} seeds; {pre_cfg.train.max_steps} "
        f"pretraining steps of `{shown(args.pretrain_config)}` on the unlabelled "
        f"training split, then {args.finetune_steps} "
        f"fine-tuning steps per arm of `{shown(args.finetune_config)}`; held-out: {held}). "
        f"{machine()}; {took}.",
        "",
        f"Pretraining reached `eval/mask/psnr_restored` {last['eval/mask/psnr_restored']:.2f} dB "
        f"(masked input {last['eval/mask/psnr_input']:.2f} dB).",
        "",
        "| arm | mean top-1 | std | per seed |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"Mean gain of pretrained over scratch: {gain * 100:+.2f} points: {verdict}"
        + (" on every seed." if every else " (not on every seed)."),
        f"Linear probe minus raw-pixel logistic regression: {probe_gain * 100:+.2f} points.",
    ])
    print(table)
    write_section(args.results, section, table)


if __name__ == "__main__":
    main()
