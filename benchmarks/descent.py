"""Does descending the energy further help? PSNR against inference steps K, per training recipe.

    python benchmarks/descent.py --task noise --arms ref all2 --seeds 0 1 2

Every restorer in the project was trained with one step (K=1) and got worse with each extra
inference step: the learned step size is one whole jump, and nothing taught the energy what to
do at an image that is already restored. The recipes here change only that, one at a time,
against the shipped recipe (``ref``) at the same number of optimizer steps:

- ``all2`` / ``all3`` / ``all4``: K=2 / 3 / 4 training steps with the loss on every step's
  output (``loss.step_weights``), so each step must improve on the one before.

and, for the question whether a plain learned restorer would do better, the learned peers
``direct_vit``, ``dncnn`` and ``dncnn_small`` (one forward pass, with the same data consistency
as the energy restorer of the task; ``--arm-steps`` sets their optimizer steps so their logged
training time matches the reference's; the table shows the minutes). Beside them each view shows
the degraded input and the task's classical method (BM3D given the true sigma; bicubic from the
low-resolution image; scikit-image's biharmonic inpainting).

Each arm and seed is a pretraining run of the task's shipped config (``configs/pretrain/
restore-<task>.yaml``) with ``--steps`` optimizer steps, trained here or read back from
``--out/<task>-<arm>-s<seed>`` when a finished run of the same config is there. Scored on fixed
held-out crops (photos never trained on) at K = 1..8 (steps beyond the trained K reuse the
last step size); the noise task at fixed noise levels (unclipped, as it trains), the restorer
told the true sigma. Writes the table into docs/RESULTS.md (section ``descent-<task>``).

    python benchmarks/descent.py --task noise --arms ref direct_vit dncnn --time-onnx \
        --out /path/to/runs/descent

``--time-onnx`` scores nothing and trains nothing: it exports the first seed's finished run of
each arm to ONNX (the trained K; validated against PyTorch) and times it per image on ONNX
Runtime's CPU provider, the same threads for each (section ``descent-<task>-timing``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from common import ROOT, finished_pretraining, fmt_seeds, machine, shown
from onnx_timing import Timing, time_restorer
from restoration_runs import held_out
from results_doc import write_section

CONFIGS = ROOT / "configs" / "pretrain"
ARMS: dict[str, list[str]] = {
    "ref": [],
    "all2": ["model.steps=2", "loss.step_weights=[1, 1]"],
    "all3": ["model.steps=3", "loss.step_weights=[1, 1, 1]"],
    "all4": ["model.steps=4", "loss.step_weights=[1, 1, 1, 1]"],
    # learned peers (enfold/model/peers.py): give them --arm-steps for equal training time
    "direct_vit": ["model.restorer=direct_vit"],
    "dncnn": ["model.restorer=dncnn"],
    # the equal-parameter DnCNN costs 4x an energy step per image on this CPU, so equal time
    # buys it too few steps to train; 16 wide (about a twelfth of the parameters) costs about
    # what the direct ViT does per step, so it gets the direct ViT's steps
    "dncnn_small": ["model.restorer=dncnn", "model.dncnn_width=16"],
    # the direct ViT at the reference's optimizer steps (less time): does the energy form cost
    # quality per step, or only time per step?
    "direct_vit_eqsteps": ["model.restorer=direct_vit"],
    # a finer patch (4x the tokens): is the 4x4 patch what the full-resolution CNN wins by?
    "patch2": ["model.patch_size=2"],
}
KS = range(1, 9)
NOISE_SIGMAS = (0.05, 0.1, 0.2)
SIGMA_FLOOR = 1e-3  # a re-estimated noise level below this is this (a step of almost nothing)
REESTIMATED = ", sigma re-estimated"  # the row of an arm scored with re-estimated noise levels
TIMING_WARMUP = 3  # untimed ONNX Runtime runs before the timed ones (--time-onnx)


def arm_config(task: str, arm: str, seed: int, steps: int):
    """The shipped config of ``task`` changed only by ``arm``, ``steps`` long, seeded."""
    from enfold.config import load_config

    return load_config(CONFIGS / f"restore-{task}.yaml", [
        f"train.max_steps={steps}", "train.warmup_steps=50", "eval.every=0",
        "train.compile=false", f"train.seed={seed}", *ARMS[arm]])


def trained(task: str, arm: str, seed: int, steps: int, out: Path) -> Path:
    """The last checkpoint of one arm and seed: read back when finished, else trained."""
    from enfold.pipeline.pretrain import run_pretrain

    cfg = arm_config(task, arm, seed, steps)
    run = out / f"{task}-{arm}-s{seed}"
    if finished_pretraining(run, cfg):
        print(f"reading back {shown(run)}", flush=True)
        return run / "checkpoint-last.pt"
    return run_pretrain(cfg, run)


def views(task: str, cfg, count: int, short_sides: list[int], seed: int
          ) -> dict[str, tuple]:
    """``{name: (corrupted, clean, weight, sigma)}``: held-out crops of the photos reduced to
    each short side (the project's 512, and smaller: denser texture per crop), one view per
    noise level for the noise task, else the task's own corruption."""
    import dataclasses

    from enfold.corrupt import CorruptionContext, build_one, corrupt_batch

    out = {}
    for side in short_sides:
        scaled = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                   photo_short_side=side))
        clean = held_out(scaled, count)
        where = f"short side {side}"
        if task == "noise":
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(clean.shape, generator=gen)
            weight = torch.ones(clean.shape[0], 1, *clean.shape[2:])
            out |= {f"sigma {s:g}, {where}": (clean + s * noise, clean, weight, s)
                    for s in NOISE_SIGMAS}
            continue
        kind = cfg.corrupt.tasks[0]
        corruption = build_one(kind, getattr(cfg.corrupt, kind),
                               CorruptionContext.from_config(cfg))
        out[f"{task}, {where}"] = (*corrupt_batch(corruption, clean, seed), None)
    return out


def anchor_psnr(task: str, view: tuple, cache: Path) -> dict[str, float]:
    """``{method: PSNR}`` of the view's degraded input and the task's classical method."""
    import torch.nn.functional as F
    from restoration_runs import chw, hwc

    from enfold.metrics import region_psnr

    corrupted, clean, weight, _ = view
    out = {"input": float(region_psnr(corrupted.clamp(0, 1), clean, weight).mean())}
    if task == "noise":
        bm3d = bm3d_psnr(view, cache)
        if bm3d is not None:
            out["BM3D, true sigma"] = bm3d
    elif task.startswith("sr"):
        f = int(task.removeprefix("sr") or 2)
        h, w = clean.shape[-2:]
        small = F.interpolate(clean, size=(h // f, w // f), mode="area")  # as sr corrupts
        big = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
        out["bicubic"] = float(region_psnr(big.clamp(0, 1), clean, weight).mean())
    elif task.startswith("mask"):
        from skimage.restoration import inpaint_biharmonic

        filled = torch.stack([chw(inpaint_biharmonic(hwc(c), w[0].numpy() > 0.5,
                                                     channel_axis=-1))
                              for c, w in zip(corrupted, weight, strict=True)])
        out["biharmonic"] = float(region_psnr(filled.clamp(0, 1), clean, weight).mean())
    return out


def bm3d_psnr(view: tuple, cache: Path) -> float | None:
    """BM3D given the true sigma: the classical anchor of the noise views (None without
    the bm3d package); each crop's answer is cached in ``cache``, as restoration.py does."""
    from restoration_runs import bm3d_cached

    from enfold.metrics import region_psnr

    corrupted, clean, weight, sigma = view
    outs = []
    for i, img in enumerate(corrupted):
        # the cache key holds the input's digest, so each view's crops get their own entries
        out = bm3d_cached(img, i, 0, sigma, cache)
        if out is None:
            return None
        outs.append(torch.from_numpy(out).float().permute(2, 0, 1))
    return float(region_psnr(torch.stack(outs).clamp(0, 1), clean, weight).mean())


def psnr_by_k(model, cfg, view: tuple, reestimate: bool = False) -> list[float]:
    """Mean region PSNR (dB) of the restored crops at each K in ``KS``. ``reestimate``: the
    first step gets the true sigma, every later one the noise level estimated in the image it
    starts from (the runtime's wavelet estimate, per crop), as a denoiser applied again would
    be told the noise left, not the noise it started with."""
    from enfold.corrupt.noise import estimate_sigma
    from enfold.data import denormalize, normalize
    from enfold.metrics import region_psnr

    corrupted, clean, weight, sigma = view
    x = normalize(corrupted, cfg.data.mean, cfg.data.std)

    def left(x_k: torch.Tensor, k: int) -> torch.Tensor | float:
        if k == 0:
            return sigma
        pixels = denormalize(x_k, cfg.data.mean, cfg.data.std).clamp(0, 1)
        return torch.tensor([max(estimate_sigma(p), SIGMA_FLOOR) for p in pixels])

    out = []
    for k in KS:
        # the mask as the exported restorer takes it (free-form holes cannot be found by
        # their fill value); the other tasks' projections do not read it
        restored = model.restore_steps(x, k, weight=weight,
                                       sigma=left if reestimate else sigma)[-1].detach()
        pixels = denormalize(restored, cfg.data.mean, cfg.data.std).clamp(0, 1)
        out.append(float(region_psnr(pixels, clean, weight).mean()))
    return out


def base_arm(row: str) -> str:
    """The trained arm behind a table row (a re-estimated row is its arm scored again)."""
    return row.removesuffix(REESTIMATED)


def non_decreasing(curve: list[float], upto: int = 4, tol: float = 0.0) -> bool:
    """Whether PSNR never falls (by more than ``tol`` dB) from K=1 to K=``upto``."""
    return all(b >= a - tol for a, b in zip(curve[:upto - 1], curve[1:upto], strict=True))


def report(task: str, arms: list[str], seeds: list[int], steps: dict[str, int],
           curves: dict[str, dict[str, list[list[float]]]], minutes: dict[str, list[float]],
           took: float, count: int, anchors: dict[str, dict[str, float]],
           heading: str | None = None) -> str:
    """The results section: per view, each arm's PSNR at every K (mean ± std over seeds)."""
    command = "python benchmarks/descent.py " + " ".join(sys.argv[1:])
    lines = [f"## Energy descent: PSNR against inference steps K ({heading or task})", "",
             f"Command: `{command.strip()}`. Each arm: `{shown(CONFIGS / f'restore-{task}.yaml')}` "
             f"at the optimizer steps shown, seeds {seeds} (training seed; the held-out crops and "
             f"the corruption are fixed); {count} held-out crops; cells: mean ± std over seeds "
             f"of the mean PSNR (dB). {machine()}; took {took / 60:.1f} min, finished runs "
             "read back.", ""]
    for view in curves[arms[0]]:
        lines += [f"**{view}**", "",
                  "| arm | recipe | steps | train min | " + " | ".join(f"K={k}" for k in KS)
                  + " | best K | non-decreasing K=1..4 (seeds) |",
                  "|" + " --- |" * (len(KS) + 6)]
        for arm in arms:
            runs = curves[arm][view]  # one curve per seed
            cells = [fmt_seeds([c[i] for c in runs], 2) for i in range(len(KS))]
            means = [statistics.mean(c[i] for c in runs) for i in range(len(KS))]
            best = max(range(len(KS)), key=lambda i: means[i])
            ok = sum(non_decreasing(c) for c in runs)
            recipe = " ".join(ARMS[base_arm(arm)]) or "shipped (K=1, loss on the last step)"
            if arm != base_arm(arm):
                recipe += "; steps after the first told the noise left (estimated)"
            minute = statistics.mean(minutes[arm])
            lines.append(f"| {arm} | {recipe} | {steps[arm]} | {minute:.1f} | "
                         + " | ".join(cells) + f" | {KS[best]} | {ok}/{len(runs)} |")
        for method, value in anchors.get(view, {}).items():
            what = "the degraded input" if method == "input" else "classical"
            lines.append(f"| {method} | {what} | | | {value:.2f} |" + " |" * (len(KS) + 1))
        lines.append("")
    return "\n".join(lines)


def timing_report(task: str, seed: int, timings: dict[str, Timing], batch: int,
                  threads: int, repeats: int, took: float) -> str:
    """The timing section: each arm's exported restorer, its size and time per image."""
    command = "python benchmarks/descent.py " + " ".join(sys.argv[1:])
    plural = f"{threads} thread" + ("s" if threads > 1 else "")
    tiles = " and ".join(sorted({f"{t.img_size}x{t.img_size}" for t in timings.values()}))
    lines = [f"## Exported restorers: time per image on ONNX Runtime, CPU ({task})", "",
             f"Command: `{command.strip()}`. Seed {seed} of each arm of the energy descent "
             "section, its run read back (nothing trained), "
             "exported with `enfold export --target restorer --format onnx` at the trained K "
             "and validated against PyTorch on held-out images; the graph alone timed on ONNX "
             f"Runtime's CPU provider, {plural} (intra-op) for every model, batch "
             f"{batch} of {tiles} tiles (the models' input), median of {repeats} runs after "
             f"{TIMING_WARMUP} warm-up runs (fastest and slowest beside it). {machine()}; "
             "cores shared with other jobs, so the times are comparable with each other more "
             f"than absolute; took {took / 60:.1f} min.", "",
             f"| arm | restorer | K | parameters | ONNX nodes | ONNX vs PyTorch max abs | "
             f"ms per image (ONNX Runtime, {plural}) | fastest - slowest |",
             "|" + " --- |" * 8]
    for arm, t in timings.items():
        lines.append(f"| {arm} | {t.restorer} | {t.steps} | {t.parameters:,} | {t.nodes} | "
                     f"{t.max_abs_error:.1e} | {t.ms_per_image:.3f} | "
                     f"{t.ms_spread[0]:.3f} - {t.ms_spread[1]:.3f} |")
    return "\n".join(lines + [""])


def time_onnx(args: argparse.Namespace) -> None:
    """``--time-onnx``: export and time the first seed's finished run of each arm."""
    import tempfile

    t0, seed = time.time(), args.seeds[0]
    timings: dict[str, Timing] = {}
    with tempfile.TemporaryDirectory(prefix="descent-onnx-") as scratch:
        for arm in args.arms:
            ckpt = args.out / f"{args.task}-{arm}-s{seed}" / "checkpoint-last.pt"
            if not ckpt.is_file():
                raise SystemExit(f"{ckpt} not found: --time-onnx reads finished runs back; "
                                 "train the arm first (descent.py without --time-onnx)")
            print(f"exporting and timing {shown(ckpt)}", flush=True)
            timings[arm] = time_restorer(ckpt, Path(scratch) / arm, args.onnx_batch,
                                         args.onnx_threads, TIMING_WARMUP, args.onnx_repeats)
            print(f"{arm}: {timings[arm]}", flush=True)
    text = timing_report(args.task, seed, timings, args.onnx_batch, args.onnx_threads,
                         args.onnx_repeats, time.time() - t0)
    write_section(args.results, f"descent-{args.task}-timing", text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="noise", choices=["noise", "sr", "sr4", "mask",
                                                            "mask-freeform", "gray", "shuffle"])
    parser.add_argument("--arms", nargs="+", default=["ref", "all2"], choices=sorted(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--arm-steps", nargs="*", default=[], metavar="ARM=STEPS",
                        help="another step count for an arm, e.g. direct_vit=1730")
    parser.add_argument("--reestimate", nargs="*", default=[], metavar="ARM",
                        help="noise: also score these arms with each step after the first given "
                             "the noise level estimated in its input (a row of their own)")
    parser.add_argument("--images", type=int, default=128, help="held-out crops scored")
    parser.add_argument("--short-sides", type=int, nargs="+", default=[512, 128],
                        help="held-out photos reduced to these short sides before cropping")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "descent")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--section", default=None,
                        help="the results section to write (default descent-<task>); a run of "
                             "added arms gets its own, so it does not replace the full table")
    parser.add_argument("--time-onnx", action="store_true",
                        help="only export each arm's first-seed run to ONNX and time it per "
                             "image (no scoring, no training)")
    parser.add_argument("--onnx-threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads, the same for every arm")
    parser.add_argument("--onnx-batch", type=int, default=64, help="tiles per timed run")
    parser.add_argument("--onnx-repeats", type=int, default=20, help="timed runs per model")
    args = parser.parse_args()
    if args.reestimate and (args.task != "noise" or not set(args.reestimate) <= set(args.arms)):
        parser.error("--reestimate: noise only, and each arm named must be in --arms too")
    if args.time_onnx:
        time_onnx(args)
        return

    from ablations import training_minutes

    from enfold.checkpoint.load import load_energy_model
    from enfold.pipeline.progress import read_metrics

    t0 = time.time()
    base = arm_config(args.task, "ref", 0, args.steps)
    data = views(args.task, base, args.images, args.short_sides, seed=0)
    anchors = {view: anchor_psnr(args.task, batch, args.out / "bm3d-cache")
               for view, batch in data.items()}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    minutes: dict[str, list[float]] = {}
    arm_steps = {a: int(n) for a, n in (item.split("=", 1) for item in args.arm_steps)}
    for arm in args.arms:
        for seed in args.seeds:
            ckpt = trained(args.task, arm, seed, arm_steps.get(arm, args.steps), args.out)
            minutes.setdefault(arm, []).append(training_minutes(
                read_metrics(ckpt.parent / "metrics.jsonl"), base.data.batch_size))
            model, cfg = load_energy_model(ckpt)  # once for every view
            rows = [(arm, False)] + ([(arm + REESTIMATED, True)]
                                     if arm in args.reestimate else [])
            for view, batch in data.items():
                for row, again in rows:
                    curve = psnr_by_k(model, cfg, batch, reestimate=again)
                    curves.setdefault(row, {}).setdefault(view, []).append(curve)
                    print(f"{args.task} {row} seed {seed} {view}: "
                          + " ".join(f"{v:.2f}" for v in curve), flush=True)
            if arm in args.reestimate:
                minutes.setdefault(arm + REESTIMATED, []).append(minutes[arm][-1])
        # the section is rewritten after every arm, so a cut run keeps the arms it finished
        done = list(curves)
        text = report(args.task, done, args.seeds,
                      {a: arm_steps.get(base_arm(a), args.steps) for a in done}, curves, minutes,
                      time.time() - t0, args.images, anchors,
                      heading=f"{args.task}: {', '.join(args.arms)}" if args.section else None)
        write_section(args.results, args.section or f"descent-{args.task}", text)
    print(text)


if __name__ == "__main__":
    main()
