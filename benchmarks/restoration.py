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
import hashlib
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import ROOT, finished_pretraining, machine, saved_config, shown
from results_doc import write_section

from enfold.config import Config, load_config, to_dict

CONFIGS = ROOT / "configs" / "pretrain"
# name -> the shipped config, whose corruption section also defines the benchmark's task
TASKS = {"noise": "restore-noise.yaml", "sr": "restore-sr.yaml", "sr4": "restore-sr4.yaml",
         "mask": "restore-mask.yaml", "gray": "restore-gray.yaml",
         "shuffle": "restore-shuffle.yaml"}
LABELS = {"input": "degraded input", "enfold": "enfold", "tv": "TV (Chambolle)",
          "nl_means": "non-local means", "bm3d": "BM3D", "bicubic": "bicubic (true low-res)",
          "biharmonic": "biharmonic inpainting"}
CLASSICAL = {"noise": ("tv", "nl_means", "bm3d"), "sr": ("bicubic",), "sr4": ("bicubic",),
             "mask": ("biharmonic",), "gray": (), "shuffle": ()}
# the goals: enfold >= anchor + margin dB (anchor: the best of these methods), and never
# below the degraded input
GOALS = {"noise": (CLASSICAL["noise"], 1.0), "sr": (("bicubic",), 1.0),
         "sr4": (("bicubic",), 1.0), "mask": (("biharmonic",), 1.0), "gray": (("input",), 3.0),
         "shuffle": (("input",), 3.0)}
KS = range(1, 9)
# restorers exported with their energy averaged over 4 patch grids (as `make restorers` does);
# the others use one grid, which the grid-shift table shows is as good or better for them
SHIPPED_GRID_SHIFTS = {"noise": 4}
CHUNK = 64  # images per restoration call
# the factors tried on a model's learned step sizes per task, and the corruption seed of the
# training-photo crops they are chosen on
STEP_SCALES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)
CALIBRATION_SEED = 7


@dataclass(frozen=True)
class Ablation:
    """One variant: ``overrides`` of the shipped config of ``task`` (``mixed``: of
    restore-base.yaml), scored on ``scored`` tasks; ``budget`` x the specialists' steps, or
    ``steps`` exactly (variants measured at an earlier, shorter budget)."""

    task: str
    name: str
    overrides: tuple[str, ...]
    scored: tuple[str, ...] = ()
    budget: int = 1
    steps: int | None = None
    per_task_steps: bool = False  # also score with step sizes calibrated per task

    @property
    def dirname(self) -> str:
        return f"{self.task}-" + "".join(c if c.isalnum() else "-" for c in self.name.lower())


# a variant repeated with another training seed is named "<variant>, seed N" (no suffix: seed 0)
SEEDED = re.compile(r"^(?P<variant>.*), seed (?P<seed>\d+)$")
# a task's shipped config with other training seeds; its seed 0 is the shipped restorer
SHIPPED = "shipped recipe"
# per task, the variant the other seeded variants are compared with, seed by seed
SEED_BASELINES = {"noise": "600 steps", "gray": SHIPPED}
ALL = tuple(t for t in TASKS if t != "sr4")  # the tasks one mixed model trains on
SHORT_WARMUP = "train.warmup_steps=50"  # the 300- and 600-step recipes' warmup (the long ones: 100)
PER_IMAGE_LOG = "loss.reduction=per_image_log"
NOISE_RANGE = ("corrupt.noise.sigma=0.05", "corrupt.noise.sigma_max=0.2")
# the mask recipe before 512 biharmonic sweeps, before the per-image log loss, and before the
# biharmonic flow
MASK_256 = "model.fill_biharmonic=256"
# the noise recipe before the linear energy head
NOISE_SQNORM = "model.energy_head=sqnorm"
NOISE_SHORT = (SHORT_WARMUP, NOISE_SQNORM)  # the 600-step noise variants' base
# the noise variants repeated over training seeds, each with its switch
NOISE_600 = (("600 steps", (NOISE_SQNORM,)),
             ("linear energy head", ("model.energy_head=linear",)),
             ("reconstruction energy", ("model.energy_head=recon",)))
MASK_POOLED = (MASK_256, "loss.reduction=pooled")
MASK_BEFORE = ("model.fill_biharmonic=0", "loss.reduction=pooled")
ABLATIONS = [
    Ablation("sr", "consistency off", ("model.consistency=false", SHORT_WARMUP), steps=600),
    Ablation("sr", "600 steps", (SHORT_WARMUP,), steps=600),
    Ablation("sr4", "300 steps", (SHORT_WARMUP,), steps=300),
    # the start of the previous mask recipe alone scores 29.39 dB (256 sweeps of the biharmonic
    # flow) and 29.48 with 512 (no gain beyond): 512 is shipped, and the rows below keep 256
    Ablation("mask", "256 biharmonic sweeps", (MASK_256,)),
    # that recipe with other training seeds
    Ablation("mask", "256 biharmonic sweeps, seed 1", (MASK_256, "train.seed=1")),
    Ablation("mask", "256 biharmonic sweeps, seed 2", (MASK_256, "train.seed=2")),
    Ablation("mask", "K=2", (MASK_256, "model.steps=2")),
    # the mask variants before the per-image log loss, from the pooled loss (MASK_POOLED)
    Ablation("mask", "pooled loss", MASK_POOLED),
    Ablation("mask", "initial step size 0.3", (*MASK_POOLED, "model.step_size=0.3")),
    Ablation("mask", "harmonic start only", MASK_BEFORE),
    # the earlier mask variants, from the harmonic start (MASK_BEFORE)
    Ablation("mask", "no hole fill", (*MASK_BEFORE, "model.fill_holes=0")),
    Ablation("mask", "2000 steps", MASK_BEFORE, steps=2000),
    # the hole fill needs the mask the projection knows, so both go
    Ablation("mask", "consistency off", (*MASK_BEFORE, "model.consistency=false",
                                         "model.fill_holes=0")),
    Ablation("gray", "consistency off", ("model.consistency=false",)),
    # consistency off won on one seed: both with two more
    *(Ablation("gray", f"{name}, seed {seed}", (*switch, f"train.seed={seed}"))
      for name, switch in ((SHIPPED, ()), ("consistency off", ("model.consistency=false",)))
      for seed in (1, 2)),
    Ablation("gray", "300 steps", (SHORT_WARMUP,), steps=300),
    Ablation("shuffle", "300 steps", (SHORT_WARMUP,), steps=300),
    Ablation("shuffle", "1500 steps", (), steps=1500),
    # the shipped noise recipe before the linear energy head
    Ablation("noise", "sqnorm energy head", (NOISE_SQNORM,)),
    # the noise variants are measured at 600 steps against the recipe of their time (the sqnorm
    # head) at 600 steps (the noise-600-steps row)
    Ablation("noise", "600 steps", NOISE_SHORT, steps=600),
    Ablation("noise", "linear energy head", (SHORT_WARMUP, "model.energy_head=linear"), steps=600),
    Ablation("noise", "reconstruction energy", (SHORT_WARMUP, "model.energy_head=recon"),
             steps=600),
    Ablation("noise", "K=2", (*NOISE_SHORT, "model.steps=2"), steps=600),
    Ablation("noise", "bundled photos", (*NOISE_SHORT, "data.source=photos:bundled"), steps=600),
    Ablation("noise", "L1 loss", (*NOISE_SHORT, "loss.kind=l1"), steps=600),
    # the 600-step winners and their baseline with two more training seeds each
    *(Ablation("noise", f"{name}, seed {seed}", (SHORT_WARMUP, *switch, f"train.seed={seed}"),
               steps=600)
      for name, switch in NOISE_600 for seed in (1, 2)),
    # capacity at the CPU time of 600 base steps (one thread: base 585 ms a step, depth 6 794,
    # width 192 1383, patch 8 117, patch 2 3883, which would get 90 steps and is left out)
    Ablation("noise", "depth 6, equal time", (*NOISE_SHORT, "model.depth=6"), steps=440),
    Ablation("noise", "width 192, equal time", (*NOISE_SHORT, "model.embed_dim=192"), steps=250),
    Ablation("noise", "patch 8, equal time", (*NOISE_SHORT, "model.patch_size=8"), steps=3000),
    # K=2 (the largest single-run gain at 600 steps) at the time of the sqnorm recipe's 3,000
    # steps: K=2 costs 976 ms a step
    Ablation("noise", "K=2, equal time", (NOISE_SQNORM, "model.steps=2"), steps=1800),
    # the loss that matches the score: the mean over images of log(region MSE), i.e. the mean
    # PSNR, against the pooled MSE, where hard images outweigh smooth ones. Each against its
    # shorter recipe (noise-600-steps, gray-300-steps, sr4-300-steps); for mask it won and is
    # shipped (the mask-pooled-loss row)
    Ablation("noise", "per-image log loss", (*NOISE_SHORT, PER_IMAGE_LOG), steps=600),
    # one model for noise levels 0.05 to 0.2, blind or told sigma (scored at 0.1, against the
    # specialist for 0.1 at the same 600 steps)
    Ablation("noise", "sigma 0.05-0.2, blind", (*NOISE_SHORT, *NOISE_RANGE), steps=600),
    Ablation("noise", "sigma 0.05-0.2, noise level input",
             (*NOISE_SHORT, *NOISE_RANGE, "model.noise_level_input=true"), steps=600),
    Ablation("gray", "per-image log loss", (SHORT_WARMUP, PER_IMAGE_LOG), steps=300),
    # the noise winner on the other tasks, each against its shorter recipe
    *(Ablation(task, "linear energy head", (SHORT_WARMUP, "model.energy_head=linear"), steps=n)
      for task, n in (("sr", 600), ("sr4", 300), ("gray", 300), ("shuffle", 300))),
    Ablation("sr4", "per-image log loss", (SHORT_WARMUP, PER_IMAGE_LOG), steps=300),
    # specialists vs one model at the same total budget: 5 tasks, 5x the steps, scored everywhere,
    # with its learned step sizes and with step sizes per task (the task is in the artifact)
    Ablation("mixed", "one model for all tasks",
             (f"corrupt.tasks=[{', '.join(ALL)}]", "model.consistency=false", "model.steps=2"),
             scored=tuple(TASKS), budget=5, per_task_steps=True),
]


# ----------------------------------------------------------------------------- runs


def task_config(task: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The shipped config of ``task`` (``mixed``: restore-base.yaml) with ``overrides``."""
    return load_config(CONFIGS / TASKS.get(task, "restore-base.yaml"), list(overrides))


def train_or_reuse(cfg: Config, run_dir: Path, replace: bool) -> tuple[Path, bool]:
    """The last checkpoint of ``cfg`` in ``run_dir`` and whether it was read back. A run of
    another config there is retrained from scratch when ``replace``, else an error (never
    clobber a shipped run); an unfinished run of this config is resumed."""
    import shutil

    from enfold.checkpoint.store import LAST
    from enfold.pipeline.pretrain import run_pretrain

    if finished_pretraining(run_dir, cfg):
        print(f"reading back {shown(run_dir)}", flush=True)
        return run_dir / LAST, True
    config = run_dir / "config.yaml"
    if config.exists() and saved_config(config) != to_dict(cfg):
        if not replace:
            sys.exit(f"{shown(run_dir)} holds a run of another config than the shipped one "
                     "asked for: delete it to retrain it, or pass another --out")
        print(f"{shown(run_dir)} holds a run of another config: training it again", flush=True)
        shutil.rmtree(run_dir)
    print(f"training {shown(run_dir)} ({cfg.train.max_steps} steps)", flush=True)
    return run_pretrain(cfg, run_dir), False


def training_minutes(run_dir: Path, cfg: Config) -> float | None:
    """Training time the run logged (its throughput), so a read-back run reports its own."""
    from ablations import training_minutes as logged_minutes

    from enfold.pipeline.progress import read_metrics

    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return None
    return logged_minutes(read_metrics(metrics), cfg.data.batch_size * cfg.train.accum_steps)


# ----------------------------------------------------------------------------- data


def photo_crops(cfg: Config, split: str, count: int) -> torch.Tensor:
    """The first ``count`` fixed crops of the ``photos`` source's ``split``, ``(N, C, H, W)`` in
    [0, 1]."""
    from enfold.data import build_source

    source = build_source("photos", split, cfg.model, cfg.data, heldout_count=count)
    return torch.stack([source.image(i) for i in range(min(count, len(source)))]).float()


def held_out(cfg: Config, count: int) -> torch.Tensor:
    """``count`` fixed held-out crops (photos never trained on)."""
    return photo_crops(cfg, "heldout", count)


def training_crops(cfg: Config, count: int) -> torch.Tensor:
    """``count`` fixed crops of the training photos: what a calibration may look at without
    touching the held-out photos."""
    return photo_crops(cfg, "train", count)


def corrupt(task: str, images: torch.Tensor, seed: int):
    """``(corrupted, clean, weight)`` of ``task`` as its shipped config corrupts."""
    from enfold.corrupt import CorruptionContext, build_one, corrupt_batch

    cfg = task_config(task)
    kind = cfg.corrupt.tasks[0]
    corruption = build_one(kind, getattr(cfg.corrupt, kind), CorruptionContext.from_config(cfg))
    return corrupt_batch(corruption, images, seed)


def as_runtime(corrupted: torch.Tensor, restored: torch.Tensor, weight: torch.Tensor
               ) -> torch.Tensor:
    """What the runtime returns for each image: ``assemble`` with ``keep_known``."""
    from enfold.runtime.restore import assemble

    h, w = corrupted.shape[-2:]
    return torch.stack([assemble(corrupted[i], corrupted[i:i + 1], restored[i:i + 1], weight[i],
                                 (1, 1, h, w), keep_known=True).restored
                        for i in range(corrupted.shape[0])])


def restore_torch(model, cfg: Config, corrupted: torch.Tensor, weight: torch.Tensor,
                  steps: int | None = None) -> torch.Tensor:
    """enfold's answer in pixels, PyTorch eager, ``steps`` (default: trained K) steps."""
    from enfold.data import denormalize, normalize

    # a noise-level restorer is told the level the held-out crops were corrupted with
    sigma = task_config("noise").corrupt.noise.sigma if model.noise_level_input else None
    outs = []
    for i in range(0, corrupted.shape[0], CHUNK):
        x = normalize(corrupted[i:i + CHUNK], cfg.data.mean, cfg.data.std)
        outs.append(denormalize(model.restore(x, steps, sigma=sigma).detach(), cfg.data.mean,
                                cfg.data.std))
    return as_runtime(corrupted, torch.cat(outs).clamp(0, 1), weight)


# ----------------------------------------------------------------------------- classical


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().clamp(0, 1)


def bm3d_cached(noisy: torch.Tensor, index: int, seed: int, sigma: float, cache: Path
                ) -> np.ndarray | None:
    """BM3D of one noisy image, cached by image index, seed, sigma (and the input's digest, so
    a changed held-out set never reads a stale answer); None when bm3d is not installed."""
    arr = hwc(noisy)
    digest = hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()[:10]
    path = cache / f"sigma{sigma:g}-seed{seed}" / f"{index:05d}-{digest}.npy"
    if path.exists():
        return np.load(path)
    try:
        import bm3d
    except ImportError:
        return None
    out = np.asarray(bm3d.bm3d(arr, sigma_psd=sigma), dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def classical(task: str, corrupted: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
              seed: int, cache: Path) -> dict[str, torch.Tensor | None]:
    """Every classical answer of ``task`` for a batch (None: the method is not installed)."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, inpaint_biharmonic

    cfg = task_config(task)
    n = corrupted.shape[0]
    if task == "noise":
        sigma = cfg.corrupt.noise.sigma
        tv = [denoise_tv_chambolle(hwc(c), weight=sigma, channel_axis=-1) for c in corrupted]
        # h = 0.8 sigma with the true sigma: the usual recommendation, favourable to it
        nlm = [denoise_nl_means(hwc(c), h=0.8 * sigma, sigma=sigma, patch_size=3,
                                patch_distance=5, fast_mode=True, channel_axis=-1)
               for c in corrupted]
        bm = [bm3d_cached(corrupted[i], i, seed, sigma, cache) for i in range(n)]
        return {"tv": torch.stack([chw(a) for a in tv]),
                "nl_means": torch.stack([chw(a) for a in nlm]),
                "bm3d": None if bm[0] is None else torch.stack([chw(a) for a in bm])}
    if task in ("sr", "sr4"):
        f = cfg.corrupt.sr.factor
        h, w = clean.shape[-2:]
        small = F.interpolate(clean, size=(h // f, w // f), mode="area")
        return {"bicubic": F.interpolate(small, size=(h, w), mode="bicubic",
                                         align_corners=False).clamp(0, 1)}
    if task == "mask":
        return {"biharmonic": torch.stack([
            chw(inpaint_biharmonic(hwc(corrupted[i]), weight[i, 0].numpy() > 0.5,
                                   channel_axis=-1)) for i in range(n)])}
    return {}


# ----------------------------------------------------------------------------- scores


def score_psnr(images: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean region PSNR of ``images`` (no SSIM: the quick score a calibration compares)."""
    from enfold.metrics import region_psnr

    return float(region_psnr(images.clamp(0, 1), clean, weight).mean())


def score(images: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    """Mean PSNR on the corrupted region and mean SSIM on the whole image."""
    from skimage.metrics import structural_similarity

    ssim = [structural_similarity(hwc(a.clamp(0, 1)), hwc(b), channel_axis=-1, data_range=1.0)
            for a, b in zip(images, clean, strict=True)]
    return {"psnr": score_psnr(images, clean, weight), "ssim": float(np.mean(ssim))}


def goal_rows(rows: list[dict]) -> list[dict]:
    """Per task: enfold, the anchor (best of the goal's methods), the goal and the gap."""
    out = []
    for task, (anchors, margin) in GOALS.items():
        got = {r["method"]: r["psnr"] for r in rows if r["task"] == task and r["psnr"] is not None}
        best = max((m for m in anchors if m in got), key=got.get)
        goal = max(got[best] + margin, got["input"])  # and never below the degraded input
        out.append({"task": task, "enfold": got["enfold"], "input": got["input"],
                    "anchor": best, "anchor_psnr": got[best], "margin": margin, "goal": goal,
                    "gap": got["enfold"] - goal, "met": got["enfold"] >= goal})
    return out


# ----------------------------------------------------------------------------- ONNX


def export_onnx(ckpt: Path, out_dir: Path, grid_shifts: int = 1) -> Path:
    """The restorer graph of ``ckpt`` as ONNX under ``out_dir``, exported afresh every run so
    the parity is that of today's exporter."""
    from enfold.export.export import export_artifact

    return Path(export_artifact(str(ckpt), "restorer", "onnx", out_dir, validate=False,
                                grid_shifts=grid_shifts)["artifact"])


def restore_session(session, corrupted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """enfold's answer through an ``enfold.runtime`` session (e.g. ONNX Runtime)."""
    inputs = session.restorer_inputs  # a noise level and/or the hole mask, as restore_torch
    outs = []
    for i in range(0, corrupted.shape[0], CHUNK):
        extra = {}
        if "sigma" in inputs:
            extra["sigma"] = task_config("noise").corrupt.noise.sigma
        if "mask" in inputs:
            extra["mask"] = weight[i:i + CHUNK].float().contiguous()
        outs.append(torch.as_tensor(session.restore(corrupted[i:i + CHUNK].contiguous(),
                                                    **extra)))
    return as_runtime(corrupted, torch.cat(outs), weight)


# ----------------------------------------------------------------------------- pictures


def plt_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 110) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt_module().close(fig)


def plot_k(curves: dict[str, list[float]], rows: list[dict], path: Path) -> None:
    """PSNR vs K per restorer, with the degraded input and the best classical method."""
    plt = plt_module()
    fig, axes = plt.subplots(1, len(curves), figsize=(2.8 * len(curves), 2.9), squeeze=False)
    for ax, (task, vals) in zip(axes[0], curves.items(), strict=True):
        ax.plot(list(KS), vals, marker="o", label="enfold")
        got = {r["method"]: r["psnr"] for r in rows
               if r["task"] == task and r["psnr"] is not None}
        ax.axhline(got["input"], color="grey", ls=":", label="degraded input")
        others = [m for m in CLASSICAL[task] if m in got]
        if others:
            best = max(others, key=got.get)
            ax.axhline(got[best], color="C1", ls="--", label=LABELS[best])
        ax.set_title(task)
        ax.set_xlabel("inference steps K")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("PSNR, corrupted region (dB)")
    fig.tight_layout()
    save(fig, path)


def plot_grid(examples: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Per task and shown crop: degraded | enfold | classical | clean."""
    plt = plt_module()
    rows = [(task, i) for task, ex in examples.items() for i in range(ex["clean"].shape[0])]
    fig, axes = plt.subplots(len(rows), 4, figsize=(6.0, 1.5 * len(rows)), squeeze=False)
    for r, (task, i) in enumerate(rows):
        ex = examples[task]
        for c, key in enumerate(("input", "enfold", "classical", "clean")):
            ax = axes[r][c]
            ax.set_axis_off()
            if ex.get(key) is None:
                ax.set_title("(no classical method)" if r % 2 == 0 else "", fontsize=6)
                continue
            ax.imshow(hwc(ex[key][i].clamp(0, 1)), interpolation="nearest")
            name = ex["names"][key]
            ax.set_title(f"{task}: {name}" if c == 0 else name, fontsize=6)
    fig.tight_layout()
    save(fig, path)


def before_after(session, photo: str, cfg: Config, seed: int, path: Path) -> dict:
    """One whole held-out photo noised and restored tile by tile through the runtime."""
    from enfold.data.photos import load_collection_photo
    from enfold.runtime.restore import restore_image

    img = load_collection_photo(photo, cfg.data.photo_short_side).float() / 255
    result = restore_image(session, img, task="noise", seed=seed, simulate=True)
    psnr = result.psnr()
    plt = plt_module()
    panels = [(result.degraded, f"noisy, sigma {cfg.corrupt.noise.sigma:g}: "
               f"{psnr['psnr_input']:.2f} dB"),
              (result.restored, f"enfold: {psnr['psnr_restored']:.2f} dB"),
              (result.clean, "clean")]
    h, w = img.shape[-2:]
    z = min(h, w) // 4  # a zoomed centre, where the texture shows
    top, left = (h - z) // 2, (w - z) // 2
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for c, (t, title) in enumerate(panels):
        axes[0][c].imshow(hwc(t.clamp(0, 1)))
        axes[0][c].set_title(title, fontsize=9)
        axes[1][c].imshow(hwc(t[:, top:top + z, left:left + z].clamp(0, 1)),
                          interpolation="nearest")
        axes[1][c].set_title("centre, enlarged", fontsize=8)
        for ax in axes[:, c]:
            ax.set_axis_off()
    fig.suptitle(f"held-out photo {photo} ({w}x{h}), restored tile by tile through "
                 f"enfold.runtime ({session.describe()})", fontsize=9)
    fig.tight_layout()
    save(fig, path, dpi=80)  # noise does not compress: keep the README's picture small
    return {"photo": photo, "size": [w, h], **psnr}


# ----------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int = 2) -> str:
    return "not installed" if v is None else f"{v:.{digits}f}"


def method_table(rows: list[dict]) -> list[str]:
    out = ["| task | method | PSNR (dB, corrupted region) | SSIM |", "| --- | --- | --- | --- |"]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        best = max(r["psnr"] for r in task_rows if r["psnr"] is not None)
        for r in task_rows:
            mark = "**" if r["psnr"] == best else ""
            out.append(f"| {task} | {r['label']} | {mark}{fmt(r['psnr'])}{mark} | "
                       f"{fmt(r['ssim'], 3)} |")
    return out


def goals_table(goals: list[dict]) -> list[str]:
    out = ["| task | enfold (dB) | degraded input | anchor | goal | result |",
           "| --- | --- | --- | --- | --- | --- |"]
    for g in goals:
        result = ("met" if g["met"] else "**missed**") + f" ({g['gap']:+.2f} dB)"
        out.append(f"| {g['task']} | {g['enfold']:.2f} | {g['input']:.2f} | "
                   f"{LABELS[g['anchor']]} {g['anchor_psnr']:.2f} | >= {g['goal']:.2f} "
                   f"(anchor + {g['margin']:g}, and >= input) | {result} |")
    return out


def restorer_table(shipped: dict[str, dict]) -> list[str]:
    out = ["| task | config | steps | K | grids | training (min, logged) | run | PyTorch (dB) | "
           "ONNX Runtime (dB) | difference |", "| --- | --- | --- | --- | --- | --- | --- | --- "
           "| --- | --- |"]
    for task, s in shipped.items():
        minutes = "-" if s["train_min"] is None else f"{s['train_min']:.1f}"
        diff = s["onnx_psnr"] - s["torch_psnr"]
        ok = "" if abs(diff) <= 0.05 else " **over 0.05 dB**"
        out.append(f"| {task} | `{s['config']}` | {s['max_steps']} | {s['k']} | "
                   f"{s['grid_shifts']} | {minutes} | "
                   f"{'read back' if s['read_back'] else 'trained'} | {s['torch_psnr']:.3f} | "
                   f"{s['onnx_psnr']:.3f} | {diff:+.4f}{ok} |")
    return out


def k_table(curves: dict[str, list[float]], shipped: dict[str, dict]) -> list[str]:
    out = ["| task (trained K) | " + " | ".join(f"K={k}" for k in KS) + " |",
           "| --- | " + " | ".join("---" for _ in KS) + " |"]
    for task, vals in curves.items():
        out.append(f"| {task} ({shipped[task]['k']}) | "
                   + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return out


def ablation_table(results: list[dict]) -> list[str]:
    out = ["| task | variant | overrides | steps | run | PSNR (dB) | shipped | difference | "
           "SSIM |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        overrides = f"`{' '.join(r['overrides'])}`" if r["overrides"] else "none"
        out.append(f"| {r['task']} | {r['variant']} | {overrides} | "
                   f"{r['max_steps']} | {'read back' if r['read_back'] else 'trained'} | "
                   f"{r['psnr']:.2f} | {r['shipped_psnr']:.2f} ({r['shipped_steps']} steps) | "
                   f"{r['diff']:+.2f} | "
                   f"{r['ssim']:.3f} |")
    return out


def seed_groups(results: list[dict]) -> dict[tuple[str, str], dict[int, float]]:
    """PSNR by training seed of every variant run with more than one seed, keyed by (task,
    variant); rows of a model trained for another task (the mixed one) are left out, and the
    shipped restorer is seed 0 of its own recipe (``SHIPPED``)."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        if r["trained"] != r["task"]:
            continue
        m = SEEDED.match(r["variant"])
        variant, seed = (m["variant"], int(m["seed"])) if m else (r["variant"], 0)
        groups.setdefault((r["task"], variant), {})[seed] = r["psnr"]
        if variant == SHIPPED:  # seed 0 of the shipped recipe is the shipped restorer
            groups[(r["task"], variant)][0] = r["shipped_psnr"]
    return {key: seeds for key, seeds in groups.items() if len(seeds) > 1}


def seed_table(results: list[dict]) -> list[str]:
    """Mean and spread over training seeds, and the difference to the task's baseline variant
    (``SEED_BASELINES``) taken seed by seed."""
    groups = seed_groups(results)
    out = ["| task | variant | seeds | PSNR per seed (dB) | mean | min - max | vs baseline, "
           "per seed: mean (min - max) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (task, variant), seeds in groups.items():
        vals = [seeds[k] for k in sorted(seeds)]
        base = groups.get((task, SEED_BASELINES.get(task, "")))
        versus = "-"
        if base is not None and variant != SEED_BASELINES[task]:
            diffs = [seeds[k] - base[k] for k in sorted(seeds) if k in base]
            if diffs:
                versus = (f"{sum(diffs) / len(diffs):+.2f} ({min(diffs):+.2f} - "
                          f"{max(diffs):+.2f}; {len(diffs)} seeds)")
        out.append(f"| {task} | {variant} | {', '.join(map(str, sorted(seeds)))} | "
                   f"{', '.join(f'{v:.2f}' for v in vals)} | {sum(vals) / len(vals):.2f} | "
                   f"{min(vals):.2f} - {max(vals):.2f} | {versus} |")
    return out


def link(path: Path, results: Path) -> str:
    return os.path.relpath(path.resolve(), results.resolve().parent)


# ----------------------------------------------------------------------------- main


def shown_crops(images: torch.Tensor, count: int = 2) -> torch.Tensor:
    """The indices of the ``count`` most textured crops (largest pixel std): a dark or flat
    crop shows nothing of a restorer."""
    return images.flatten(1).std(1).argsort(descending=True)[:count]


def measure_shipped(args, images) -> tuple[dict, list[dict], dict, dict]:
    """Train or read back each shipped restorer and score it with every method: per task the
    restorer's facts, the rows of the method table, the corrupted batches and the examples."""
    from enfold.checkpoint.load import load_energy_model

    shipped, rows, batches, examples = {}, [], {}, {}
    for task, name in TASKS.items():
        steps = [f"train.max_steps={args.steps}"] if args.steps else []
        cfg = task_config(task, [*steps, *args.set])
        ckpt, read_back = train_or_reuse(cfg, args.out / task, replace=args.replace)
        model, cfg = load_energy_model(ckpt)
        model.set_grid_shifts(SHIPPED_GRID_SHIFTS.get(task, 1))
        corrupted, clean, weight = batches[task] = corrupt(task, images, args.seed)
        answers = {"input": corrupted, "enfold": restore_torch(model, cfg, corrupted, weight),
                   **classical(task, corrupted, clean, weight, args.seed, args.out / "bm3d")}
        for method, out in answers.items():
            s = score(out, clean, weight) if out is not None else {"psnr": None, "ssim": None}
            label = LABELS[method] + (f" (K={model.num_steps}, {model.grid_shifts} grid"
                                      f"{'s' * (model.grid_shifts > 1)})"
                                      if method == "enfold" else "")
            rows.append({"task": task, "method": method, "label": label, **s})
        got = {r["method"]: r["psnr"] for r in rows if r["task"] == task
               and r["method"] in CLASSICAL[task] and r["psnr"] is not None}
        best = max(got, key=got.get) if got else None
        shown_n = shown_crops(images)
        examples[task] = {"input": corrupted[shown_n], "enfold": answers["enfold"][shown_n],
                          "classical": None if best is None else answers[best][shown_n],
                          "clean": clean[shown_n],
                          "names": {"input": "degraded", "enfold": "enfold",
                                    "classical": LABELS.get(best, ""), "clean": "clean"}}
        shipped[task] = {"config": f"configs/pretrain/{name}", "run": shown(args.out / task),
                         "checkpoint": str(ckpt), "read_back": read_back,
                         "max_steps": cfg.train.max_steps, "k": model.num_steps,
                         "grid_shifts": model.grid_shifts,
                         "train_min": training_minutes(args.out / task, cfg),
                         "torch_psnr": next(r["psnr"] for r in rows if r["task"] == task
                                            and r["method"] == "enfold")}
        print(f"{task}: " + ", ".join(f"{r['method']} {fmt(r['psnr'])}" for r in rows
                                      if r["task"] == task), flush=True)
    return shipped, rows, batches, examples


def psnr_vs_k(shipped: dict, batches: dict) -> dict[str, list[float]]:
    from enfold.checkpoint.load import load_energy_model
    from enfold.metrics import region_psnr

    curves = {}
    for task, s in shipped.items():
        model, cfg = load_energy_model(s["checkpoint"])
        model.set_grid_shifts(s["grid_shifts"])
        corrupted, clean, weight = batches[task]
        curves[task] = [float(region_psnr(restore_torch(model, cfg, corrupted, weight, k),
                                          clean, weight).mean()) for k in KS]
        print(f"{task} PSNR vs K: " + " ".join(f"{v:.2f}" for v in curves[task]), flush=True)
    return curves


def grid_shift_psnr(shipped: dict, batches: dict) -> dict[str, dict[str, float]]:
    """Each restorer with its energy on one patch grid and averaged over the four shifts of the
    grid by half a patch (cycle spinning, ``--grid-shifts 4``): ``E'(x) = mean_s
    E(shift_s(x))`` is still one energy, and its gradient follows no single grid, the source of
    block seams. The restorers were trained on one grid, so four grids is an inference choice."""
    from enfold.checkpoint.load import load_energy_model
    from enfold.metrics import region_psnr

    out = {}
    for task, s in shipped.items():
        model, cfg = load_energy_model(s["checkpoint"])
        corrupted, clean, weight = batches[task]
        out[task] = {}
        for shifts in (1, 4):
            model.set_grid_shifts(shifts)
            out[task][str(shifts)] = float(region_psnr(
                restore_torch(model, cfg, corrupted, weight), clean, weight).mean())
        print(f"{task}: one grid {out[task]['1']:.2f} dB, 4 grid shifts {out[task]['4']:.2f} dB",
              flush=True)
        s["one_grid_psnr"] = out[task]["1"]
    return out


def onnx_parity(shipped: dict, batches: dict, out: Path) -> dict[str, Path]:
    """Export each restorer to ONNX, add its held-out PSNR through ONNX Runtime to
    ``shipped``; the exported files."""
    import enfold.runtime
    from enfold.metrics import region_psnr

    paths = {}
    for task, s in shipped.items():
        path = paths[task] = export_onnx(Path(s["checkpoint"]), out / "onnx" / task,
                                         s["grid_shifts"])
        session = enfold.runtime.load(path, backend="onnxruntime", device="cpu")
        corrupted, clean, weight = batches[task]
        restored = restore_session(session, corrupted, weight)
        s["onnx"] = shown(path)
        s["onnx_psnr"] = float(region_psnr(restored, clean, weight).mean())
        print(f"{task}: PyTorch {s['torch_psnr']:.3f} dB, ONNX Runtime {s['onnx_psnr']:.3f} dB",
              flush=True)
    return paths


@contextmanager
def scaled_step_sizes(model, scale: float):
    """``model``'s learned step sizes times ``scale`` inside the block, as they were after."""
    base = model.log_step_sizes.detach().clone()
    model.log_step_sizes.data = base + math.log(scale)
    try:
        yield model
    finally:
        model.log_step_sizes.data = base


def calibrate_step_scale(model, cfg: Config, task: str, count: int = 256) -> float:
    """The factor on all of ``model``'s learned step sizes that restores ``task`` best (mean
    region PSNR) on fixed training-photo crops: step sizes per task for one model, chosen
    without the held-out photos. ``model`` is left as it was."""
    crops = training_crops(cfg, count)
    corrupted, clean, weight = corrupt(task, crops, CALIBRATION_SEED)
    psnr = {}
    for scale in STEP_SCALES:
        with scaled_step_sizes(model, scale):
            psnr[scale] = score_psnr(restore_torch(model, cfg, corrupted, weight), clean, weight)
    return max(psnr, key=psnr.get)


def run_ablations(args, images, batches, shipped) -> list[dict]:
    from enfold.checkpoint.load import load_energy_model

    results = []
    for ab in ABLATIONS:
        if args.only is not None and ab.dirname not in args.only:
            continue
        base = task_config(ab.task)
        steps = args.ablation_steps or (args.steps or base.train.max_steps)
        steps = ab.steps if ab.steps and not args.ablation_steps else ab.budget * steps
        cfg = task_config(ab.task, [*args.set, *ab.overrides, f"train.max_steps={steps}"])
        ckpt, read_back = train_or_reuse(cfg, args.out / "ablations" / ab.dirname, replace=True)
        model, cfg = load_energy_model(ckpt)
        for task in ab.scored or (ab.task,):
            corrupted, clean, weight = batches[task]
            scales = {ab.name: 1.0}
            if ab.per_task_steps:
                scale = calibrate_step_scale(model, cfg, task)
                scales[f"{ab.name}, step sizes per task (x{scale:g})"] = scale
            for variant, scale in scales.items():
                with scaled_step_sizes(model, scale):
                    s = score(restore_torch(model, cfg, corrupted, weight), clean, weight)
                results.append({"task": task, "variant": variant, "trained": ab.task,
                                "overrides": list(ab.overrides),
                                "max_steps": cfg.train.max_steps, "read_back": read_back,
                                "run": shown(args.out / "ablations" / ab.dirname), **s,
                                "shipped_psnr": shipped[task]["one_grid_psnr"],
                                "shipped_steps": shipped[task]["max_steps"],
                                "diff": s["psnr"] - shipped[task]["one_grid_psnr"]})
                print(f"ablation {ab.dirname} ({variant}) on {task}: {s['psnr']:.2f} dB "
                      f"({results[-1]['diff']:+.2f} vs shipped)", flush=True)
    return results


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


def report(args, r: dict) -> str:
    command = ("python benchmarks/restoration.py " + " ".join(sys.argv[1:])).strip()
    shipped = r["restorers"]
    read_back = [t for t, s in shipped.items() if s["read_back"]]
    if r["ablations"]:
        read_back += sorted({f"ablation {a['run']}" for a in r["ablations"] if a["read_back"]})
    trained = [t for t, s in shipped.items() if not s["read_back"]]
    photo = r["before_after"]
    lines = [
        "## Restoration: the shipped restorers against classical methods (held-out photos)",
        "",
        f"Command: `{command}`. {machine()}; took {r['minutes']:.1f} min. Runs read back "
        f"(finished runs of the same config, not retrained): "
        f"{', '.join(read_back) if read_back else 'none'}"
        + (f"; trained here: {', '.join(trained)}" if trained else "") + ". "
        f"{r['images']} fixed held-out crops of the `photos` source (32x32 crops at texture "
        f"scale of held-out photos, never trained on), corruption seed {r['seed']}. PSNR on the "
        "corrupted region (the whole image for noise, sr and gray), SSIM on the whole image; "
        "enfold as the runtime returns it (visible pixels pasted back after the last step); "
        f"best per task in bold. All numbers: `{shown(args.out / 'restoration.json')}`.",
        "",
        *method_table(r["rows"]),
        "",
        "Goals (from the measurements above; anchor = the best of the goal's methods):",
        "",
        *goals_table(r["goals"]),
        "",
        "The shipped restorers, and each one's held-out PSNR exported to ONNX and run by ONNX "
        "Runtime through `enfold.runtime.load` (must agree with PyTorch within 0.05 dB):",
        "",
        *restorer_table(shipped),
        "",
        "PSNR vs inference steps K (steps beyond the trained K reuse the last step size; dotted: "
        "the degraded input, dashed: the best classical method):",
        "",
        f"![PSNR vs K]({link(args.plot, args.results)})",
        "",
        *k_table(r["psnr_vs_k"], shipped),
        "",
        "Block seams: each restorer with its energy on one patch grid and averaged over the four "
        "shifts of the grid by half a patch (`enfold export --grid-shifts 4`; the restorers were "
        "trained on one grid, so this is an inference choice; shipped: the setting the tables "
        "above use and `make restorers` exports):",
        "",
        "| task | one grid (dB) | 4 grid shifts (dB) | difference | shipped |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {t} | {v['1']:.2f} | {v['4']:.2f} | {v['4'] - v['1']:+.2f} | "
          f"{shipped[t]['grid_shifts']} |" for t, v in r["grid_shifts"].items()),
        "",
        "The two most textured held-out crops (largest pixel std), per task: degraded | "
        "enfold | best classical | clean:",
        "",
        f"![restoration grid]({link(args.grid, args.results)})",
        "",
        f"A whole held-out photo ({photo['photo']}, {photo['size'][0]}x{photo['size'][1]}) "
        f"noised and restored tile by tile through `enfold.runtime` with the noise restorer's "
        f"ONNX export: {photo['psnr_input']:.2f} dB -> {photo['psnr_restored']:.2f} dB.",
        "",
        f"![before and after]({link(args.before_after, args.results)})",
        "",
    ]
    if r["ablations"] is None:
        lines += ["Ablations: not run this time (`--ablations`)."]
    else:
        lines += ["Ablations (each variant changes the shipped config of its task as listed and "
                  "is scored on the same crops, on one patch grid, against the shipped restorer "
                  "on one grid; the mixed model trains on "
                  f"{', '.join(ALL)} for 5x the steps and is scored on every task):", "",
                  *ablation_table(r["ablations"])]
        if seed_groups(r["ablations"]):
            lines += ["", "Training seeds (the variants above run with more than one training "
                      "seed; the row without a seed is seed 0; against the baseline, the "
                      "difference is taken between runs of the same seed):", "",
                      *seed_table(r["ablations"])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
