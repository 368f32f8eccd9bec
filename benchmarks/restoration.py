"""The shipped restorers against the classical methods, on held-out photos they never saw.

    python benchmarks/restoration.py                 # reads back runs/restore/<task>, or trains
    python benchmarks/restoration.py --ablations     # also the ablation table

Each shipped restorer is one config, ``configs/pretrain/restore-<task>.yaml``, trained into
``runs/restore/<task>`` as ``make restorers`` does; a finished run of exactly that config is read
back, never retrained.
On ``--images`` fixed held-out crops of the ``photos`` source (held-out photos, disjoint by file
from the training ones), corrupted with seed ``--seed``, per task: PSNR on the corrupted region
(the whole image for noise, sr and gray) and SSIM on the whole image of

  noise    sigma 0.1  degraded input | enfold | TV (Chambolle) | non-local means | BM3D
  sr, sr4  x2, x4     degraded input (bilinear) | enfold | bicubic from the true low-res image
  mask     50 % 4x4   degraded input | enfold | biharmonic inpainting
  gray                the gray input | enfold
  shuffle  50 % 4x4   the shuffled input | enfold

enfold is scored as users get it: the runtime's output (``enfold.runtime.restore.assemble`` with
``keep_known``, which pastes the pixels the corruption left untouched back after the last step).
Also: the issue's goals table (met, or missed by how much, computed from these numbers); PSNR vs
inference steps K = 1..8 per restorer (plot and table); each restorer exported to ONNX and its
held-out PSNR through ONNX Runtime next to PyTorch's; a picture grid; a before/after picture of a
whole held-out photo restored tile by tile through ``enfold.runtime``; with ``--ablations``, the
variants of ``ABLATIONS`` trained into ``<out>/ablations/<task>-<variant>`` and scored on the same
crops. BM3D (``pip install bm3d``, the ``bench`` extra) is optional; its outputs are cached under
``<out>/bm3d``. Writes ``<out>/restoration.json`` and the ``restoration`` section of
docs/RESULTS.md. ``--steps N`` (quick checks) trains into ``runs/restore-quick`` and writes the
document and pictures under it unless their paths are given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import ROOT, shown

# the experiments, runner and report; the names tests and other scripts use are re-exported
from restoration_experiments import ABLATIONS, ALL, SHIPPED, TASKS, task_config  # noqa: F401
from restoration_report import (  # noqa: F401
    before_after,
    plot_grid,
    plot_k,
    report,
    seed_groups,
    seed_table,
)
from restoration_runs import (  # noqa: F401
    calibrate_step_scale,
    goal_rows,
    grid_shift_psnr,
    held_out,
    measure_shipped,
    onnx_parity,
    psnr_vs_k,
    run_ablations,
)
from results_doc import write_section


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default runs/restore; runs/restore-quick with --steps)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train.max_steps of the shipped restorers (quick checks only)")
    parser.add_argument("--set", nargs="*", default=[],
                        help="extra overrides of every training (needs --out or --steps, so "
                             "the shipped runs stay as they are)")
    parser.add_argument("--images", type=int, default=200, help="held-out crops per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--ablations", action="store_true", help="train and score ABLATIONS")
    parser.add_argument("--only", nargs="*", default=None, metavar="RUN",
                        help="with --ablations: only these variants (their run folder names, "
                             "e.g. sr-consistency-off noise-k-2)")
    parser.add_argument("--ablation-steps", type=int, default=None,
                        help="train.max_steps of every ablation run (the mixed model: 5x)")
    parser.add_argument("--photo", default="opencv:baboon",
                        help="held-out photo of the before/after picture")
    parser.add_argument("--results", type=Path, default=None, help="default docs/RESULTS.md")
    parser.add_argument("--plot", type=Path, default=None, help="default docs/img/psnr_vs_k.png")
    parser.add_argument("--grid", type=Path, default=None,
                        help="default docs/img/restoration_grid.png")
    parser.add_argument("--before-after", type=Path, default=None,
                        help="default docs/img/restore_before_after.png")
    args = parser.parse_args()
    unknown = set(args.only or ()) - {ab.dirname for ab in ABLATIONS}
    if unknown:
        parser.error(f"--only: no ablation named {', '.join(sorted(unknown))}; choose from "
                     + ", ".join(ab.dirname for ab in ABLATIONS))
    if args.set and args.out is None and args.steps is None:
        parser.error("--set changes the shipped configs: pass --out (or --steps) too")
    quick = args.steps is not None
    args.out = args.out or ROOT / "runs" / ("restore-quick" if quick else "restore")
    # runs of another config are trained again, except the shipped ones (deleted by hand)
    args.replace = args.out.resolve() != (ROOT / "runs" / "restore").resolve()
    # a quick run never writes the real document and pictures unless told to
    docs = args.out / "docs" if quick else ROOT / "docs"
    args.results = args.results or docs / "RESULTS.md"
    args.plot = args.plot or docs / "img" / "psnr_vs_k.png"
    args.grid = args.grid or docs / "img" / "restoration_grid.png"
    args.before_after = args.before_after or docs / "img" / "restore_before_after.png"
    return args


def main() -> None:
    import enfold.runtime

    args = parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    ref = task_config("noise")  # every shipped restorer sees the same held-out crops
    images = held_out(ref, args.images)
    shipped, rows, batches, examples = measure_shipped(args, images)
    goals = goal_rows(rows)
    curves = psnr_vs_k(shipped, batches)
    shifted = grid_shift_psnr(shipped, batches)
    exported = onnx_parity(shipped, batches, args.out)
    plot_k(curves, rows, args.plot)
    plot_grid(examples, args.grid)
    session = enfold.runtime.load(exported["noise"], backend="onnxruntime", device="cpu")
    photo = before_after(session, args.photo, ref, args.seed, args.before_after)
    ablations = run_ablations(args, images, batches, shipped) if args.ablations else None
    minutes = (time.time() - t0) / 60
    record = {"images": int(images.shape[0]), "seed": args.seed, "rows": rows, "goals": goals,
              "restorers": shipped, "psnr_vs_k": curves, "grid_shifts": shifted,
              "before_after": photo,
              "ablations": ablations, "minutes": minutes}
    (args.out / "restoration.json").write_text(json.dumps(record, indent=2))
    write_section(args.results, "restoration", report(args, record))
    print(f"wrote {shown(args.results)} and {shown(args.out / 'restoration.json')}")


if __name__ == "__main__":
    main()
