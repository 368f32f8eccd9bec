"""The restoration benchmark's runner: trains or reads back the runs of the experiments
(``restoration_experiments``), corrupts the held-out crops, and scores enfold (PyTorch and ONNX
Runtime) and the classical methods on them."""

from __future__ import annotations

import hashlib
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import finished_pretraining, saved_config, shown
from restoration_experiments import (
    ABLATIONS,
    CALIBRATION_SEED,
    CHUNK,
    CLASSICAL,
    GOALS,
    KS,
    LABELS,
    SHIPPED_GRID_SHIFTS,
    STEP_SCALES,
    TASKS,
    task_config,
)

from enfold.config import Config, to_dict


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


def fmt(v: float | None, digits: int = 2) -> str:
    return "not installed" if v is None else f"{v:.{digits}f}"


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
