"""One network, many corruptions: enfold's restorer against classical methods, and PSNR vs K.

    python benchmarks/restoration.py            # trains photos-tiny with K=1 and K=2 first

On held-out photo crops (scikit-image's chelsea and coffee and scikit-learn's flower, never seen
in pretraining), per task, PSNR on the corrupted region and SSIM on the whole image of:

  mask     enfold | biharmonic inpainting (skimage.restoration.inpaint_biharmonic)
  noise    enfold | total variation (denoise_tv_chambolle) | non-local means (denoise_nl_means)
  sr       enfold | bicubic upsampling of the low-resolution image
  gray     enfold | the gray image itself
  shuffle  enfold | the shuffled input

and enfold's PSNR after K = 1..8 inference steps for the models trained with K=1 and K=2 (steps
beyond the trained K reuse the last learned step size). Writes a table and a plot into
docs/RESULTS.md (section ``restoration``), ``docs/img/psnr_vs_k.png`` and a grid of
reconstructions per task, ``docs/img/restoration_grid.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import ROOT, finished_pretraining, machine
from results_doc import write_section

from enfold.config import Config
from enfold.model import EnergyViT

CONFIG = ROOT / "configs" / "pretrain" / "photos-tiny.yaml"
TASKS = ("mask", "noise", "sr", "gray", "shuffle")


def train(steps_k: int, out: Path, max_steps: int | None, overrides: list[str]
          ) -> tuple[Path, bool]:
    """Pretrain photos-tiny with ``steps_k`` restoration steps: the checkpoint, and whether a
    finished run was read back rather than trained."""
    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    extra = [f"model.steps={steps_k}", *overrides]
    extra += [f"train.max_steps={max_steps}"] if max_steps else []
    cfg = load_config(CONFIG, extra)
    read_back = finished_pretraining(out, cfg)
    return run_pretrain(cfg, out), read_back


def classical(task: str, corrupted: np.ndarray, clean: np.ndarray, weight: np.ndarray,
              factor: int, sigma: float) -> dict[str, np.ndarray]:
    """The classical answers for one ``(H, W, C)`` image in [0, 1]."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, inpaint_biharmonic

    if task == "mask":
        return {"biharmonic": inpaint_biharmonic(corrupted, weight[:, :, 0] > 0.5,
                                                 channel_axis=-1)}
    if task == "noise":
        return {"tv": denoise_tv_chambolle(corrupted, weight=sigma, channel_axis=-1),
                # h = 0.8 sigma with the true sigma: the usual recommendation, favourable to it
                "nl_means": denoise_nl_means(corrupted, h=0.8 * sigma, sigma=sigma,
                                             patch_size=3, patch_distance=5, fast_mode=True,
                                             channel_axis=-1)}
    if task == "sr":
        x = torch.from_numpy(clean).permute(2, 0, 1)[None]
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(h // factor, w // factor), mode="area")
        up = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
        return {"bicubic": up[0].permute(1, 2, 0).clamp(0, 1).numpy()}
    if task == "gray":
        return {"gray input": corrupted}
    return {"shuffled input": corrupted}


def psnr(img: np.ndarray, clean: np.ndarray, weight: np.ndarray) -> float:
    err = ((np.clip(img, 0, 1) - clean) ** 2 * weight).sum() / max(
        weight.sum() * clean.shape[-1], 1e-12)
    return float(10 * np.log10(1.0 / max(err, 1e-10)))


def ssim(img: np.ndarray, clean: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(img, 0, 1), clean, channel_axis=-1,
                                       data_range=1.0))


def held_out(cfg: Config, count: int) -> list[torch.Tensor]:
    from enfold.data import build_source

    source = build_source(cfg.data.source, "heldout", cfg.model, cfg.data, heldout_count=count)
    return [source.image(i) for i in range(min(count, len(source)))]


def corrupt_all(cfg: Config, task: str, images: list[torch.Tensor], seed: int):
    """``(corrupted, clean, weight)`` batches in pixel space, one seeded generator per image."""
    from enfold.corrupt import CorruptionContext, build_one, corrupt_batch

    corruption = build_one(task, getattr(cfg.corrupt, task), CorruptionContext.from_config(cfg))
    return corrupt_batch(corruption, images, seed)


def restore(model: EnergyViT, cfg: Config, corrupted: torch.Tensor, steps: int) -> torch.Tensor:
    from enfold.data import denormalize, normalize

    with torch.no_grad():
        x = normalize(corrupted, cfg.data.mean, cfg.data.std)
        out = model.restore(x, steps)
    return denormalize(out, cfg.data.mean, cfg.data.std).clamp(0, 1)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


def compare(model: EnergyViT, cfg: Config, images: list[torch.Tensor], seed: int, shown: int = 2
            ) -> tuple[list[dict], dict[str, list[dict[str, np.ndarray]]]]:
    """One row per (task, method): mean PSNR (corrupted region) and SSIM over the images; and,
    per task, every method's answer for the first ``shown`` images (for the grid)."""
    rows, examples = [], {}
    for task in TASKS:
        corrupted, clean, weight = corrupt_all(cfg, task, images, seed)
        restored = restore(model, cfg, corrupted, model.num_steps)
        scores: dict[str, list[tuple[float, float]]] = {}
        for i in range(len(images)):
            c, x, w = hwc(corrupted[i]), hwc(clean[i]), hwc(weight[i])
            answers = {"degraded input": c, f"enfold (K={model.num_steps})": hwc(restored[i]),
                       **classical(task, c, x, w, cfg.corrupt.sr.factor,
                                   # the middle of the trained noise range
                                   (cfg.corrupt.noise.sigma + (cfg.corrupt.noise.sigma_max
                                                               or cfg.corrupt.noise.sigma)) / 2)}
            for name, img in answers.items():
                scores.setdefault(name, []).append((psnr(img, x, w), ssim(img, x)))
            if i < shown:
                examples.setdefault(task, []).append({**answers, "clean": x})
        for name, vals in scores.items():
            arr = np.asarray(vals)
            rows.append({"task": task, "method": name, "psnr": float(arr[:, 0].mean()),
                         "ssim": float(arr[:, 1].mean())})
    return rows, examples


def psnr_vs_k(model: EnergyViT, cfg: Config, images: list[torch.Tensor], seed: int,
              ks: range) -> dict[str, list[float]]:
    """Mean region PSNR per task for each number of inference steps K."""
    curves: dict[str, list[float]] = {}
    for task in TASKS:
        corrupted, clean, weight = corrupt_all(cfg, task, images, seed)
        for k in ks:
            out = restore(model, cfg, corrupted, k)
            vals = [psnr(hwc(out[i]), hwc(clean[i]), hwc(weight[i])) for i in range(len(images))]
            curves.setdefault(task, []).append(float(np.mean(vals)))
    return curves


def plot(curves: dict[int, dict[str, list[float]]], ks: range, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(3.2 * len(TASKS), 3.0), sharex=True)
    for ax, task in zip(axes, TASKS, strict=True):
        for trained, per_task in curves.items():
            ax.plot(list(ks), per_task[task], marker="o", label=f"trained K={trained}")
            ax.axvline(trained, color="grey", lw=0.5, ls=":")
        ax.set_title(task)
        ax.set_xlabel("inference steps K")
    axes[0].set_ylabel("PSNR on corrupted region (dB)")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_grid(examples: dict[str, list[dict[str, np.ndarray]]], path: Path) -> None:
    """One row per task and held-out image: degraded input, enfold, the classical methods, clean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(task, ex) for task in TASKS for ex in examples[task]]
    cols = max(len(ex) for _, ex in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols, 1.6 * len(rows)),
                             squeeze=False)
    for r, (task, ex) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(ex):
                name = list(ex)[c]
                ax.imshow(np.clip(ex[name], 0, 1), interpolation="nearest")
                ax.set_title(f"{task}: {name}" if c == 0 else name, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "restoration")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="pretraining steps (default: photos-tiny's train.max_steps)")
    parser.add_argument("--set", nargs="*", default=[], help="extra pretraining overrides")
    parser.add_argument("--images", type=int, default=64, help="held-out crops per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "psnr_vs_k.png")
    parser.add_argument("--grid", type=Path,
                        default=ROOT / "docs" / "img" / "restoration_grid.png")
    args = parser.parse_args()

    from enfold.pipeline.load import load_energy_model

    torch.manual_seed(0)
    t0 = time.time()
    ks = range(1, 9)
    rows, examples, curves = [], {}, {}
    reused = []
    for trained in (1, 2):
        ckpt, read_back = train(trained, args.out / f"k{trained}", args.max_steps, args.set)
        if read_back:
            reused.append(f"K={trained}")
        model, cfg = load_energy_model(ckpt)
        images = held_out(cfg, args.images)
        if trained == 2:  # the table compares the default K=2 model with the classical methods
            rows, examples = compare(model, cfg, images, args.seed)
        curves[trained] = psnr_vs_k(model, cfg, images, args.seed, ks)
        print(f"trained K={trained}: " + json.dumps({t: [round(v, 2) for v in c]
                                                    for t, c in curves[trained].items()}),
              flush=True)
    plot(curves, ks, args.plot)
    plot_grid(examples, args.grid)
    (args.out / "restoration.json").write_text(json.dumps({"rows": rows, "psnr_vs_k": curves},
                                                          indent=2))
    command = "python benchmarks/restoration.py " + " ".join(sys.argv[1:])
    table = ["| task | method | PSNR (dB, corrupted region) | SSIM |", "| --- | --- | --- | --- |"]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        best = max(r["psnr"] for r in task_rows if r["method"] != "degraded input")
        for r in task_rows:
            mark = "**" if r["psnr"] == best else ""
            table.append(f"| {task} | {r['method']} | {mark}{r['psnr']:.2f}{mark} | "
                         f"{r['ssim']:.3f} |")
    k_rows = ["| trained K | task | " + " | ".join(f"K={k}" for k in ks) + " |",
              "| --- | --- | " + " | ".join("---" for _ in ks) + " |"]
    for trained, per_task in curves.items():
        for task, vals in per_task.items():
            k_rows.append(f"| {trained} | {task} | " + " | ".join(f"{v:.2f}" for v in vals)
                          + " |")
    plot_rel = Path("img") / args.plot.name
    text = "\n".join([
        "## Restoration: one network against classical methods (held-out photos)",
        "",
        f"Command: `{command.strip()}`. Models: `configs/pretrain/photos-tiny.yaml` (32x32 "
        f"crops, all five tasks mixed, {cfg.train.max_steps} steps) trained with K=1 and K=2; "
        f"{len(images)} held-out crops of photos never used in pretraining, corruption seed "
        f"{args.seed}. {machine()}; took {(time.time() - t0) / 60:.1f} min"
        + (f" (the {' and '.join(reused)} models reused from a finished run, not retrained)"
           if reused else "") + ". PSNR on the corrupted "
        "region (the whole image for noise, sr, gray), SSIM on the whole image; best per task "
        "in bold.",
        "",
        *table,
        "",
        "PSNR vs inference steps K (steps beyond the trained K reuse the last step size):",
        "",
        f"![PSNR vs K]({plot_rel})",
        "",
        *k_rows,
        "",
        "Reconstructions (the first two held-out crops per task; columns: degraded input, "
        "enfold with K=2, the classical methods, clean):",
        "",
        f"![reconstruction grid](img/{args.grid.name})",
    ])
    print(text)
    write_section(args.results, "restoration", text)


if __name__ == "__main__":
    main()
