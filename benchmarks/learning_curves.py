"""Accuracy against pretraining compute: enfold and a masked autoencoder, several budgets each.

    pip install 'enfold[bench]'          # transformers, for the MAE
    python benchmarks/learning_curves.py                       # Fashion-MNIST, fmnist-tiny
    python benchmarks/learning_curves.py --enfold-steps 125 250 500 1000 \\
        --mae-steps 250 1000 2000 4000 --seeds 0

Both methods pretrain the same encoder (``configs/pretrain/fmnist-tiny.yaml``'s 4-block 96-wide
ViT) on the same 60,000 unlabelled Fashion-MNIST images with the same batch, optimizer and
schedule; each budget is its own run with its own cosine schedule, not a snapshot of a longer
one. The MAE is ``benchmarks/vs_mae.py``'s (transformers' ``ViTMAEForPreTraining``, 2-block
64-wide decoder, 75 % masking). Every pretrained encoder is then fine-tuned, linearly probed and
kNN-classified with 10 labels per class (``benchmarks/ssl_gain.py``'s arms and recipe) and
scored on the full 10,000-image test set.

Wall-clock is each method's eager step time, measured side by side in this process (median of
interleaved steps on the same batches, so a busy machine slows both alike), times its steps.
Equal GPU wall-clock uses an enfold/MAE step ratio measured on a GPU (``--gpu-step-ratio``,
default the H200 number in docs/RESULTS.md), which this script cannot measure on a CPU.

Finished runs are read back: enfold pretraining and fine-tune arms by config and checkpoint
hash (``benchmarks/common.py``; the budget equal to the config's ``train.max_steps`` is also
looked for in ``runs/ssl_gain_fmnist``), MAE runs by their step count and seed. Writes the table
and the read-offs into docs/RESULTS.md (section ``learning_curves``) and the plot to
``docs/img/learning_curves.png`` (with ``--enfold-set``: a section and plot of their own).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, finished_pretraining, fmt_seeds, machine, shown
from results_doc import write_section
from ssl_gain import PRESETS
from vs_mae import MODES as ARMS  # fine-tune, linear probe, kNN
from vs_mae import downstream, mae_to_enfold_checkpoint, step_times, train_mae, unlabelled_images

PRETRAIN, FINETUNE, _ = PRESETS["fmnist"]
ARM_NAMES = {"pretrained": "fine-tune", "linear": "linear probe", "knn": "kNN"}
# enfold/MAE step time, compiled, on one H200 (ViT-S/16, batch 64, bf16, K=2; docs/RESULTS.md,
# GPU suite): the only GPU ratio measured so far, on a larger model than this one
H200_STEP_RATIO = 1.4


def variant_tag(overrides: list[str]) -> str:
    """What names a variant of the enfold series in run folders, the results section and the
    plot: ``["model.backprop_steps=last"]`` -> ``"-backprop_steps-last"``; no overrides: ``""``."""
    return "".join(f"-{key.split('.')[-1]}-{value}"
                   for key, value in (o.split("=", 1) for o in overrides))


def enfold_run(steps: int, out: Path, reuse: Path, overrides: list[str]) -> tuple[Path, Path]:
    """The pretraining checkpoint of an enfold run of ``steps`` steps and the directory its
    fine-tune arms live in: a finished run of the same config in ``out/enfold-<steps>`` or
    ``reuse`` is read back, otherwise it is trained in ``out/enfold-<steps>``."""
    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    cfg = load_config(PRETRAIN, [f"train.max_steps={steps}", *overrides])
    tag = f"enfold{variant_tag(overrides)}-{steps}"
    for arm_dir in (out / tag, reuse):
        if finished_pretraining(arm_dir / "pretrain", cfg):
            print(f"reusing {arm_dir / 'pretrain'}", flush=True)
            return arm_dir / "pretrain" / "checkpoint-last.pt", arm_dir
    return run_pretrain(cfg, out / tag / "pretrain"), out / tag


def mae_run(cfg, data, steps: int, out: Path, seed: int = 0) -> tuple[Path, Path, list]:
    """The MAE's pretraining checkpoint (as an enfold checkpoint) for ``steps`` steps, its arm
    directory and its training curve; read back when ``out/mae-<steps>`` holds a finished run
    of the same steps and seed."""
    arm_dir = out / f"mae-{steps}"
    ckpt, record = arm_dir / "pretrain" / "checkpoint-last.pt", arm_dir / "mae.json"
    if ckpt.exists() and record.exists():
        done = json.loads(record.read_text())
        if done["steps"] == steps and done["seed"] == seed:
            print(f"reusing {arm_dir}", flush=True)
            return ckpt, arm_dir, done["curve"]
    model, seconds, curve = train_mae(cfg, data, steps, seed=seed)
    mae_to_enfold_checkpoint(model, cfg, ckpt)
    record.write_text(json.dumps({"steps": steps, "seed": seed, "seconds": seconds,
                                  "curve": curve}))
    return ckpt, arm_dir, curve


def score_table(series: dict[str, list[dict]], more_labels: list[int]) -> list[str]:
    """One row per method and budget: top-1 of every arm (mean ± std over seeds) at 10 labels
    per class, then at each of ``more_labels`` (one seed)."""
    heads = [ARM_NAMES[a] for a in ARMS] + [f"{ARM_NAMES[a]} @{n}" for n in more_labels
                                            for a in ARMS]
    lines = ["| method | steps | epochs | CPU min (eager) | " + " | ".join(heads) + " |",
             "|" + " --- |" * (4 + len(heads))]
    for name, rows in series.items():
        for r in rows:
            keys = [*ARMS, *(f"{a}@{n}" for n in more_labels for a in ARMS)]
            cells = " | ".join(fmt_seeds(r[k]) if k in r else "-" for k in keys)
            lines.append(f"| {name} | {r['steps']} | {r['epochs']:.2f} | {r['minutes']:.1f} | "
                         f"{cells} |")
    return lines


def enfold_snapshots(budgets: list[int], horizon: int, out: Path, overrides: list[str]
                     ) -> dict[int, tuple[Path, Path]]:
    """Snapshot mode: one enfold run on a ``horizon``-step schedule, kept at every budget and
    stopped (resumably) at the largest; ``{budget: (checkpoint, arm directory)}``. Run again
    with a larger budget, it continues the same run."""
    from enfold.checkpoint.store import snapshot_path
    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    run = out / f"enfold{variant_tag(overrides)}-h{horizon}"
    cfg = load_config(PRETRAIN, [f"train.max_steps={horizon}", f"train.stop_after={max(budgets)}",
                                 f"train.keep_steps=[{', '.join(map(str, budgets))}]",
                                 *overrides])
    if not all(snapshot_path(run / "pretrain", b).exists() for b in budgets):
        run_pretrain(cfg, run / "pretrain")  # resumes from run/pretrain when it holds a run
    return {b: (snapshot_path(run / "pretrain", b), run / f"at-{b}") for b in budgets}


def mae_snapshots(cfg, data, budgets: list[int], horizon: int, out: Path, seed: int = 0
                  ) -> tuple[dict[int, tuple[Path, Path]], float]:
    """Snapshot mode for the MAE: one run on a ``horizon``-step schedule (saved every 500
    steps, resumed when cut), its encoder kept at every budget as an enfold checkpoint;
    ``({budget: (checkpoint, arm directory)}, seconds of the run so far)``."""
    run = out / f"mae-h{horizon}"
    points = {b: (run / f"at-{b}" / "pretrain" / "checkpoint-last.pt", run / f"at-{b}")
              for b in budgets}
    record = run / "mae.json"
    if record.exists() and all(ckpt.exists() for ckpt, _ in points.values()):
        done = json.loads(record.read_text())
        if done["budgets"] == budgets and done["seed"] == seed:
            print(f"reusing {run}", flush=True)
            return points, done["seconds"]

    def keep(step: int, model) -> None:
        mae_to_enfold_checkpoint(model, cfg, points[step][0])

    _, seconds, curve = train_mae(cfg, data, horizon, seed=seed, state=run / "state.pt",
                                  keep=keep, keep_steps=budgets)
    record.write_text(json.dumps({"horizon": horizon, "budgets": budgets, "seed": seed,
                                  "seconds": seconds, "curve": curve}))
    return points, seconds


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation in log(x) between measured points; None outside their range."""
    xs, ys = zip(*sorted(points), strict=True)
    if not xs[0] <= x <= xs[-1]:
        return None
    return float(np.interp(np.log(x), np.log(xs), ys))


def plot(series: dict[str, list[dict]], path: Path) -> None:
    """Fine-tune and probe top-1 against epochs and against CPU minutes, both methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for color, (name, rows) in zip(("tab:blue", "tab:red"), series.items(), strict=False):
        for arm, style in (("pretrained", "-o"), ("linear", "--s")):
            for ax, key in zip(axes, ("epochs", "minutes"), strict=True):
                ax.plot([r[key] for r in rows], [statistics.mean(r[arm]) for r in rows], style,
                        color=color, label=f"{name}: {ARM_NAMES[arm]}")
    axes[0].set_xlabel("pretraining epochs")
    axes[1].set_xlabel("pretraining wall-clock (min, eager, this CPU)")
    axes[0].set_ylabel("top-1, 10 labels per class")
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels overlap
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def read_offs(series: dict[str, list[dict]], enfold_name: str, per_step: dict[str, float],
              gpu_ratio: float) -> list[str]:
    """Table rows: at each enfold budget, the MAE interpolated at equal epochs, equal CPU
    wall-clock and equal GPU wall-clock (``gpu_ratio`` MAE steps per enfold step)."""
    mae = series["MAE"]
    cpu_ratio = per_step["enfold"] / per_step["mae"]
    rows = []
    for r in series[enfold_name]:
        for label, mae_steps in (("equal epochs", r["steps"]),
                                 ("equal CPU wall-clock", r["steps"] * cpu_ratio),
                                 ("equal GPU wall-clock", r["steps"] * gpu_ratio)):
            cells = []
            for arm in ARMS:
                other = interpolate([(m["steps"], statistics.mean(m[arm])) for m in mae],
                                    mae_steps)
                mine = statistics.mean(r[arm])
                cells.append("outside the MAE budgets" if other is None else
                             f"{mine:.3f} vs {other:.3f} ({(mine - other) * 100:+.1f})")
            rows.append(f"| {r['steps']} | {label} ({mae_steps:.0f} MAE steps) | "
                        + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enfold-steps", type=int, nargs="+", default=[125, 250, 500, 1000])
    parser.add_argument("--mae-steps", type=int, nargs="+", default=[250, 1000, 2000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="fine-tune seeds per point (the labelled subset and head)")
    parser.add_argument("--full-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="fine-tune seeds at enfold's largest budget and the MAE at the "
                             "same steps: the equal-epochs comparison")
    parser.add_argument("--enfold-set", nargs="*", default=[],
                        help="pretraining overrides of the enfold series, e.g. "
                             "model.backprop_steps=last")
    parser.add_argument("--horizon-steps", type=int, default=None,
                        help="snapshot mode: one run per method on a schedule of this many "
                             "steps, evaluated at each budget (the enfold run stops, resumably, "
                             "at its largest budget)")
    parser.add_argument("--more-labels", type=int, nargs="*", default=[],
                        help="also fine-tune, probe and kNN with this many labels per class "
                             "(first seed only, at each method's largest budget)")
    parser.add_argument("--gpu-step-ratio", type=float, default=H200_STEP_RATIO,
                        help="enfold/MAE step time measured on a GPU")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "learning_curves")
    parser.add_argument("--reuse", type=Path, default=ROOT / "runs" / "ssl_gain_fmnist",
                        help="a finished `benchmarks/ssl_gain.py --data fmnist` run whose "
                             "pretraining and arms are read back when their config matches")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "learning_curves.png")
    args = parser.parse_args()

    from enfold.config import load_config

    # a variant of the enfold series gets its own results section, plot and runs
    variant = ("_long" if args.horizon_steps else "") + variant_tag(args.enfold_set)
    args.plot = args.plot.with_stem(args.plot.stem + variant)
    t_start = time.time()
    cfg = load_config(PRETRAIN, ["train.compile=false", *args.enfold_set])
    mae_cfg = load_config(PRETRAIN, ["train.compile=false"])
    data = unlabelled_images(cfg)  # the unlabelled training split, normalised
    per_step = step_times(cfg, data)
    print(f"seconds per step (eager, batch {cfg.data.batch_size}): {per_step}", flush=True)
    epoch = cfg.data.batch_size / data.shape[0]  # epochs per step

    enfold_name = "enfold" + (f" ({' '.join(args.enfold_set)})" if args.enfold_set else "")
    series: dict[str, list[dict]] = {enfold_name: [], "MAE": []}
    full = max(args.enfold_steps)
    # every seed at each method's largest budget (and enfold's, for equal epochs); the rest
    # with --seeds
    tops = {full, max(args.mae_steps)}
    seeds = lambda steps: args.full_seeds if steps in tops else args.seeds  # noqa: E731
    if args.horizon_steps:  # snapshots of one run per method, both on the same schedule
        points = {"MAE": mae_snapshots(mae_cfg, data, sorted(args.mae_steps),
                                       args.horizon_steps, args.out)[0],
                  enfold_name: enfold_snapshots(sorted(args.enfold_steps), args.horizon_steps,
                                                args.out, args.enfold_set)}
    else:
        points = {enfold_name: {s: enfold_run(s, args.out, args.reuse, args.enfold_set)
                                for s in sorted(args.enfold_steps)},
                  "MAE": {s: mae_run(mae_cfg, data, s, args.out)[:2]
                          for s in sorted(args.mae_steps)}}
    for name in (enfold_name, "MAE"):
        for steps, (ckpt, arm_dir) in sorted(points[name].items()):
            row = {"steps": steps, **downstream(arm_dir, ckpt, seeds(steps), FINETUNE)}
            for n in args.more_labels if steps in tops else ():  # the largest budgets only
                more = downstream(arm_dir, ckpt, seeds(steps)[:1], FINETUNE, n)
                row.update({f"{arm}@{n}": v for arm, v in more.items()})
            series[name].append(row)
    for name, rows in series.items():
        for r in rows:
            r["epochs"] = r["steps"] * epoch
            r["minutes"] = r["steps"] * per_step["enfold" if name != "MAE" else "mae"] / 60

    command = "python benchmarks/learning_curves.py " + " ".join(sys.argv[1:])
    ratio = per_step["enfold"] / per_step["mae"]
    lines = [
        ("## Learning curves, snapshots of one long run: enfold against a masked autoencoder "
         "(Fashion-MNIST" if args.horizon_steps else
         "## Learning curves: enfold against a masked autoencoder (Fashion-MNIST")
        + (f", enfold with {' '.join(args.enfold_set)})" if args.enfold_set else ")"),
        "",
        f"Command: `{command.strip()}` (`{shown(PRETRAIN)}` for both methods' encoder, data, "
        f"batch and schedule; "
        + (f"snapshots of one run per method, both on a {args.horizon_steps}-step cosine "
           "schedule; " if args.horizon_steps else "each budget its own run; ")
        + f"fine-tune seeds {args.seeds} per point and "
        f"{args.full_seeds} at {sorted(tops)} steps (mean ± std); 10 labels "
        "per class, 300 fine-tuning steps; held-out: the full 10,000-image test set). "
        f"{machine()}; took {(time.time() - t_start) / 60:.1f} min, finished runs read back.",
        "",
        f"Step time (eager, batch {cfg.data.batch_size}, median of interleaved steps in this "
        f"run): enfold {per_step['enfold']:.3f} s, MAE {per_step['mae']:.3f} s: one enfold step "
        f"costs **{ratio:.1f} MAE steps** on this CPU.",
        "",
        *score_table(series, args.more_labels),
    ]
    lines += [
        "",
        f"Read-offs: enfold at each budget against the MAE interpolated (in log steps) between "
        f"its measured budgets, at equal epochs, at equal CPU wall-clock ({ratio:.1f} MAE steps "
        f"per enfold step, measured above) and at equal GPU wall-clock "
        f"({args.gpu_step_ratio:g} MAE steps per enfold step: the compiled H200 ratio of ViT-S/16, "
        "not measured on this model). Cells: enfold vs MAE (points).",
        "",
        "| enfold steps | comparison | fine-tune | linear probe | kNN |",
        "| --- | --- | --- | --- | --- |",
        *read_offs(series, enfold_name, per_step, args.gpu_step_ratio),
        "",
        f"![learning curves](img/{args.plot.name})",
    ]
    plot(series, args.plot)
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curves.json").write_text(json.dumps(
        {"step_seconds": per_step, "series": series}, indent=2))
    write_section(args.results, "learning_curves" + variant, text)


if __name__ == "__main__":
    main()
