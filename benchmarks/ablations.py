"""Ablations that pick enfold's defaults by measurement, on digits.

    python benchmarks/ablations.py

Each variant changes one thing of ``configs/pretrain/digits-ssl.yaml`` (pretrained for
``--steps`` steps, 300 by default to fit a CPU budget) and is measured by: held-out PSNR of the
masked region after restoration, kNN top-1 on frozen features, and linear-probe top-1 with 10
labels per class over 3 seeds (the fine-tune recipe of ``benchmarks/ssl_gain.py``). Writes the
table into docs/RESULTS.md (section ``ablations``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ssl_gain  # noqa: E402
from results_doc import write_section  # noqa: E402

# name -> (what it tests, overrides of the digits-ssl recipe)
VARIANTS = {
    "default": ("sqnorm head, K=2, learned step sizes, mask only", []),
    "linear head": ("energy head", ["model.energy_head=linear"]),
    "K=1": ("training steps K", ["model.steps=1"]),
    "K=4": ("training steps K", ["model.steps=4"]),
    "fixed step sizes": ("learned vs fixed", ["model.learn_step_sizes=false"]),
    "mix": ("single task vs mix", ["corrupt.tasks=[mask, noise, sr, shuffle]"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per variant")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()

    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    t0 = time.time()
    ns = SimpleNamespace(finetune_steps=300, labels_per_class=10, set=[], reuse_scratch=None)
    rows = []
    for name, (what, overrides) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        out = args.out / name.replace(" ", "-").replace("=", "")
        start = time.time()
        # eval.every=0: one held-out evaluation at the end; the PSNR is always of the mask task
        cfg = load_config(ssl_gain.PRETRAIN, [f"train.max_steps={args.steps}", "eval.every=0",
                                              *overrides])
        ckpt = run_pretrain(cfg, out / "pretrain")
        minutes = (time.time() - start) / 60
        last = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").open()]
        psnr = [r for r in last if "eval/mask/psnr_restored" in r][-1]
        probe = [ssl_gain.run_arm("linear", s, ns, ckpt, out) for s in args.seeds]
        knn = ssl_gain.run_arm("knn", args.seeds[0], ns, ckpt, out)
        rows.append((name, what, psnr["eval/mask/psnr_input"], psnr["eval/mask/psnr_restored"],
                     knn, probe, minutes))
        print(f"{name}: psnr {psnr['eval/mask/psnr_restored']:.2f} knn {knn:.4f} "
              f"linear {statistics.mean(probe):.4f}", flush=True)

    command = "python benchmarks/ablations.py " + " ".join(sys.argv[1:])
    lines = [
        "## Ablations (digits, one change at a time)",
        "",
        f"Command: `{command.strip()}`. Each variant: `configs/pretrain/digits-ssl.yaml` with "
        f"one change, {args.steps} pretraining steps, then kNN (seed {args.seeds[0]}) and a "
        f"linear probe (10 labels per class, seeds {', '.join(map(str, args.seeds))}). "
        f"Machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}; took "
        f"{(time.time() - t0) / 60:.1f} min.",
        "",
        "| variant | tests | mask PSNR input -> restored (dB) | kNN top-1 | linear probe top-1 |"
        " pretraining min |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, what, p_in, p_out, knn, probe, minutes in rows:
        std = statistics.stdev(probe) if len(probe) > 1 else 0.0
        lines.append(f"| {name} | {what} | {p_in:.2f} -> {p_out:.2f} | {knn:.3f} | "
                     f"{statistics.mean(probe):.3f} ± {std:.3f} | {minutes:.1f} |")
    text = "\n".join(lines)
    print(text)
    write_section(args.results, "ablations", text)


if __name__ == "__main__":
    main()
