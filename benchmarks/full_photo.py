"""Whole held-out photos restored at full resolution, the way a user's photo is: seams, speed,
memory and quality against the classical methods, plus the noise restorer across noise levels.

Three parts, each measured side by side in one run:

1. **Whole photos** (every held-out photo of the ``photos`` source, reduced once so its shorter
   side is ``--short-side`` pixels, the scale the restorers were trained at): each task's real
   input made from the clean photo (noise at sigma 0.1; a truly low-resolution image, area-
   downsampled x2 / x4; free-form holes drawn at photo scale; the gray photo), restored whole by
   ``enfold.runtime.restore_image`` with blended tiles at the default stride (the shipped
   behaviour), at the earlier default (half a tile, on the patch grid) and abutting (mask: and
   with each tile filling its holes on its own, the earlier start), and by the classical method
   of the task. Whole-photo PSNR, the seam ratio (squared error on the rows
   and columns next to the tile boundaries over the error elsewhere: about 1 without seams; at
   the tiles actually run, and on a fixed 32-pixel grid, where the tile-free classical output
   shows what the patch or super-resolution grid alone gives), seconds per megapixel and peak
   memory.
2. **A 4 MP photo** (``--big``, at its native 2560x1600) denoised at sigma 0.1: enfold against
   BM3D and OpenCV's non-local means on the same photo, with time and memory.
3. **Noise levels**: held-out 32x32 crops at sigma 0.02 ... 0.2, enfold given sigma and with
   sigma estimated from the image (the default passes, and one pass), against BM3D given the
   true sigma. Noise rows of parts 1 and 2 also show one pass, the earlier default.
4. **Super-resolution x4 on crops** (with ``sr4``): held-out 32x32 crops from their true 8x8
   low-resolution images, the x4 restorer against the x2 restorer in two passes and bicubic.
5. **Noise levels on whole photos** (``--photo-sigmas``): the photos of part 1 at more noise
   levels, the default passes against one pass, sigma given and estimated.

Writes ``<out>/full_photo.json``, ``docs/img/full_photo_noise.png`` (the big photo and an
enlarged smooth region: input | enfold | BM3D | clean) and the ``full_photo`` section of
docs/RESULTS.md. Models: registry names or artifact paths (``--model task=NAME_OR_PATH``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from results_doc import write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"
PICTURE = ROOT / "docs" / "img" / "full_photo_noise.png"
TASKS = ("noise", "sr", "sr4", "mask", "gray")
SIGMA = 0.1
SIGMAS = (0.02, 0.05, 0.1, 0.15, 0.2)
TILE = 32
HALF = 16  # the earlier default stride: half a tile, on the patch grid
BEFORE = f"enfold, stride {HALF} (the earlier default)"
FLAT_START = "enfold, holes filled tile by tile (the earlier start)"
TWICE = "enfold, the x2 restorer twice"
ONE_PASS = "enfold, one pass (the earlier default)"
NATIVE = 10**6  # a shorter side no photo reaches: native resolution


# ----------------------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 20 ms, minus
    the resident memory when it started: what one call adds."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    """``(result, seconds, peak MB added)`` of one call."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, mem.added_mb


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float().clamp(0, 1) - b.float()).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


# ----------------------------------------------------------------------------- inputs


def hwc8(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W, C)`` uint8 (what OpenCV takes)."""
    return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def from_hwc(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).float()
    if a.dtype == np.uint8:
        t = t / 255
    return t.permute(2, 0, 1).clamp(0, 1)


def noisy(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1)


def low_res(clean: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low-resolution image, the clean photo cropped to a multiple of scale)``: area
    downsampling, as the sr corruption makes its input."""
    h, w = (s // scale * scale for s in clean.shape[-2:])
    clean = clean[:, :h, :w]
    return F.interpolate(clean[None], size=(h // scale, w // scale), mode="area")[0], clean


def freeform_mask(h: int, w: int, seed: int, coverage: float = 0.12) -> torch.Tensor:
    """``(H, W)`` 1 where pixels are missing: strokes and blobs drawn at photo scale until
    about ``coverage`` of the photo is covered (scratches, blemishes, small objects)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    side = min(h, w)
    for _ in range(500):
        if np.asarray(canvas).mean() / 255 >= coverage:
            break
        if rng.random() < 0.6:  # a stroke: a few joined segments
            pts = [tuple(rng.integers(0, [w, h]))]
            for _ in range(rng.integers(2, 5)):
                step = rng.normal(0, side / 8, 2)
                pts.append((int(np.clip(pts[-1][0] + step[0], 0, w - 1)),
                            int(np.clip(pts[-1][1] + step[1], 0, h - 1))))
            draw.line(pts, fill=255, width=int(rng.integers(max(3, side // 100),
                                                            max(6, side // 35))))
        else:  # a blob
            cx, cy = rng.integers(0, [w, h])
            r = rng.integers(max(3, side // 80), max(6, side // 25), 2)
            draw.ellipse([cx - r[0], cy - r[1], cx + r[0], cy + r[1]], fill=255)
    return torch.from_numpy(np.asarray(canvas) > 127).float()


# ----------------------------------------------------------------------------- methods


def bm3d_denoise(img: torch.Tensor, sigma: float) -> torch.Tensor | None:
    try:
        import bm3d
    except ImportError:
        return None
    out = bm3d.bm3d(img.permute(1, 2, 0).double().numpy(), sigma_psd=sigma)
    return from_hwc(np.asarray(out, dtype=np.float32))


def nl_means(img: torch.Tensor, sigma: float) -> torch.Tensor | None:
    """OpenCV's fastNlMeansDenoisingColored with h = hColor = 0.8 * sigma (of 255), the
    scale scikit-image recommends for its own non-local means (h = 0.8 sigma)."""
    try:
        import cv2
    except ImportError:
        return None
    h = 0.8 * sigma * 255
    out = cv2.fastNlMeansDenoisingColored(hwc8(img)[..., ::-1].copy(), None, h, h, 7, 21)
    return from_hwc(out[..., ::-1])


def telea(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    try:
        import cv2
    except ImportError:
        return None
    m = (mask.numpy() > 0).astype(np.uint8) * 255
    return from_hwc(cv2.inpaint(hwc8(img), m, 3, cv2.INPAINT_TELEA))


def biharmonic(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from skimage.restoration import inpaint_biharmonic

    out = inpaint_biharmonic(img.permute(1, 2, 0).double().numpy(), mask.numpy() > 0,
                             channel_axis=-1)
    return from_hwc(out.astype(np.float32))


def bicubic(small: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = small.shape[-2:]
    return F.interpolate(small[None], size=(h * scale, w * scale), mode="bicubic",
                         align_corners=False)[0].clamp(0, 1)


def luma(img: torch.Tensor) -> torch.Tensor:
    from enfold.corrupt.gray import LUMA

    return (img * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True).expand_as(img).clone()


def enfold_restore(session, img: torch.Tensor, task: str, stride: int | None = None,
                   **options) -> torch.Tensor:
    from enfold.runtime.restore import restore_image

    return restore_image(session, img, runtime(task), stride=stride, **options).restored


def runtime(task: str) -> str:
    return "sr" if task == "sr4" else task  # sr4 is the sr task at scale 4


def used_stride(session, task: str, stride: int | None) -> int:
    from enfold.runtime.restore import tile_stride

    return tile_stride(session, runtime(task), stride)


# ----------------------------------------------------------------------------- experiments


def task_case(task: str, clean: torch.Tensor, seed: int):
    """``(real input, clean reference, enfold options, {classical name: fn})`` of one photo."""
    if task == "noise":
        x = noisy(clean, SIGMA, seed)
        return x, clean, {"sigma": SIGMA}, {"BM3D": lambda: bm3d_denoise(x, SIGMA),
                                            "NL-means (OpenCV)": lambda: nl_means(x, SIGMA)}
    if task in ("sr", "sr4"):
        scale = 2 if task == "sr" else 4
        small, ref = low_res(clean, scale)
        return small, ref, {"scale": scale}, {"bicubic": lambda: bicubic(small, scale)}
    if task == "mask":
        mask = freeform_mask(*clean.shape[-2:], seed)
        x = clean * (1 - mask)
        return x, clean, {"mask": mask}, {"biharmonic (scikit-image)": lambda: biharmonic(x, mask),
                                          "Telea (OpenCV)": lambda: telea(x, mask)}
    if task == "gray":
        x = luma(clean)
        return x, clean, {}, {"gray input": lambda: x}
    raise ValueError(task)


def input_psnr(task: str, x: torch.Tensor, ref: torch.Tensor, options: dict) -> float:
    if task in ("sr", "sr4"):  # the low-resolution image, enlarged as the corruption does
        from enfold.runtime.restore import enlarge

        return psnr(enlarge(x, options["scale"]).clamp(0, 1), ref)
    return psnr(x, ref)


def whole_photos(sessions: dict, photos: list[str], short_side: int, seed: int,
                 twice=None) -> list[dict]:
    """Part 1: every task on every held-out photo at the training scale; sr x4 also with the
    x2 restorer ``twice`` in two passes, when given."""
    from enfold.data.photos import load_collection_photo

    rows = []
    for name in photos:
        clean = load_collection_photo(name, short_side).float() / 255
        for task, session in sessions.items():
            x, ref, options, classical = task_case(task, clean, seed)
            mp = ref.shape[-1] * ref.shape[-2] / 1e6
            row = {"photo": name, "task": task, "size": list(ref.shape[-2:]),
                   "input": input_psnr(task, x, ref, options)}
            default = used_stride(session, task, None)
            phase = options.get("scale")  # super-resolution: its low-resolution pixel grid
            variants = [("enfold", None, {}), (BEFORE, HALF, {}),
                        ("enfold, abutting tiles", TILE, {})]
            if task == "mask":  # the earlier start: each tile fills its holes on its own
                variants.insert(1, (FLAT_START, None, {"smooth_start": False}))
            if task == "noise":  # no second pass at the noise the first one left
                variants.insert(1, (ONE_PASS, None, {"passes": 1}))
            for label, stride, more in variants:
                if stride == default:  # the default already is this stride (sr x4)
                    continue
                out, sec, mb = timed(partial(enfold_restore, session, x, task, stride,
                                             **options, **more))
                used = used_stride(session, task, stride)
                row[label] = {"psnr": psnr(out, ref), "s_per_mp": sec / mp, "peak_mb": mb,
                              "stride": used, "seam_tiles": seam(out, ref, TILE, used),
                              "seam_32": seam(out, ref, TILE), **phased(out, ref, phase, used)}
            if task == "sr4" and twice is not None:
                row[TWICE] = in_passes(twice, x, ref, options["scale"], mp)
            for label, fn in classical.items():
                out, sec, mb = timed(fn)
                row[label] = None if out is None else {"psnr": psnr(out, ref),
                                                       "s_per_mp": sec / mp, "peak_mb": mb,
                                                       "seam_32": seam(out, ref, TILE),
                                                       **phased(out, ref, phase)}
            print(json.dumps({k: v for k, v in row.items()}), flush=True)
            rows.append(row)
    return rows


def seam(out: torch.Tensor, ref: torch.Tensor, tile: int, stride: int | None = None,
         phase: int | None = None, more: tuple[tuple[int, int], ...] = ()) -> float:
    from enfold.runtime.blend import seam_ratio

    return seam_ratio(out, ref, tile, stride, phase, more)


def phased(out: torch.Tensor, ref: torch.Tensor, phase: int | None,
           stride: int | None = None, more: tuple[tuple[int, int], ...] = ()
           ) -> dict[str, float]:
    """Super-resolution's seam ratios against interior rows and columns of the same phase on
    the low-resolution pixel grid (``seam_ratio(phase=)``): at its tiles when ``stride`` is
    given (and ``more`` tilings of further passes), and on the 32 grid."""
    if phase is None:
        return {}
    got = {"seam_32_phase": seam(out, ref, TILE, None, phase)}
    if stride is not None:
        got["seam_tiles_phase"] = seam(out, ref, TILE, stride, phase, more)
    return got


def in_passes(session, x: torch.Tensor, ref: torch.Tensor, scale: int, mp: float) -> dict:
    """sr by ``scale`` with a restorer of a smaller factor, one pass per factor
    (``restore_image`` does it): PSNR, time, memory, and the seam ratios at the tiles of every
    pass (the first pass's tiles, in the output's pixels, are ``scale / factor`` times
    larger), of the first pass's tiles alone, and on the 32 grid."""
    from enfold.runtime.restore import sr_factor

    out, sec, mb = timed(partial(enfold_restore, session, x, "sr", None, scale=scale))
    used = used_stride(session, "sr", None)
    grow = scale // sr_factor(session.metadata)
    first = ((TILE * grow, used * grow),) if grow > 1 else ()
    got = {"psnr": psnr(out, ref), "s_per_mp": sec / mp, "peak_mb": mb, "stride": used,
           "seam_tiles": seam(out, ref, TILE, used, None, first),
           "seam_32": seam(out, ref, TILE), **phased(out, ref, scale, used, first)}
    if first:
        got["first_pass"] = list(first[0])
        got["seam_first_pass"] = seam(out, ref, *first[0])
        got["seam_first_pass_phase"] = seam(out, ref, *first[0], scale)
    return got


def big_photo(session, name: str, seed: int, skip: tuple[str, ...] = ()
              ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Part 2: one native-resolution photo denoised by enfold, BM3D and NL-means (but those
    in ``skip``)."""
    from enfold.data.photos import load_collection_photo

    clean = load_collection_photo(name, NATIVE).float() / 255
    x = noisy(clean, SIGMA, seed)
    mp = clean.shape[-1] * clean.shape[-2] / 1e6
    row: dict = {"photo": name, "size": list(clean.shape[-2:]), "input": psnr(x, clean)}
    outs = {"input": x, "clean": clean}
    methods = {"enfold": lambda: enfold_restore(session, x, "noise", None, sigma=SIGMA),
               ONE_PASS: lambda: enfold_restore(session, x, "noise", None, sigma=SIGMA,
                                                passes=1),
               BEFORE: lambda: enfold_restore(session, x, "noise", HALF, sigma=SIGMA),
               "BM3D": lambda: bm3d_denoise(x, SIGMA),
               "NL-means (OpenCV)": lambda: nl_means(x, SIGMA)}
    for label, fn in methods.items():
        if label in skip:
            continue
        out, sec, mb = timed(fn)
        if out is None:
            row[label] = None
            continue
        outs[label] = out
        row[label] = {"psnr": psnr(out, clean), "seconds": sec, "s_per_mp": sec / mp,
                      "peak_mb": mb, "seam_32": seam(out, clean, TILE)}
        if label.startswith("enfold"):
            stride = used_stride(session, "noise", HALF if label == BEFORE else None)
            row[label]["stride"] = stride
            row[label]["seam_tiles"] = seam(out, clean, TILE, stride)
        print(label, json.dumps(row[label]), flush=True)
    return row, outs


def noise_levels(session, crops: torch.Tensor, seed: int) -> list[dict]:
    """Part 3: held-out crops at each sigma, each restored as ``enfold restore`` does
    (``restore_image``): given sigma and estimating it, with the default passes and with one
    pass; BM3D given the true sigma."""
    from enfold.runtime.restore import estimate_sigma, restore_image

    def each(x: torch.Tensor, **options) -> tuple[torch.Tensor, list]:
        rests = [restore_image(session, img, "noise", **options) for img in x]
        return torch.stack([r.restored for r in rests]), [r.sigma_passes for r in rests]

    rows = []
    for sigma in SIGMAS:
        x = torch.stack([noisy(c, sigma, seed + i) for i, c in enumerate(crops)])
        given, levels = each(x, sigma=sigma)
        estimated, _ = each(x)
        given_once, _ = each(x, sigma=sigma, passes=1)
        estimated_once, _ = each(x, passes=1)
        est = torch.tensor([estimate_sigma(img) for img in x])
        bm = [bm3d_denoise(img, sigma) for img in x]
        row = {"sigma": sigma, "input": mean_psnr(x, crops),
               "enfold, sigma given": mean_psnr(given, crops),
               "enfold, sigma estimated": mean_psnr(estimated, crops),
               "passes (sigma given)": float(np.mean([len(v) for v in levels])),
               "one pass, sigma given": mean_psnr(given_once, crops),
               "one pass, sigma estimated": mean_psnr(estimated_once, crops),
               "estimated sigma (mean)": float(est.mean()),
               "BM3D, true sigma": None if bm[0] is None else mean_psnr(torch.stack(bm), crops)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def photo_sigmas(session, photos: list[str], short_side: int, seed: int,
                 sigmas: list[float]) -> list[dict]:
    """Part 5: the whole held-out photos noised at more levels, restored as ``enfold restore``
    does, with the default passes and with one pass, sigma given and estimated (no classical
    method: this checks the passes rule on photos it was not chosen on)."""
    from enfold.data.photos import load_collection_photo
    from enfold.runtime.restore import restore_image

    cleans = [load_collection_photo(name, short_side).float() / 255 for name in photos]
    rows = []
    for sigma in sigmas:
        got: dict[str, list[float]] = {}
        for i, clean in enumerate(cleans):
            x = noisy(clean, sigma, seed + i)
            got.setdefault("input", []).append(psnr(x, clean))
            for label, options in (("given", {"sigma": sigma}), ("estimated", {}),
                                   ("one pass, given", {"sigma": sigma, "passes": 1}),
                                   ("one pass, estimated", {"passes": 1})):
                rest = restore_image(session, x, "noise", **options)
                got.setdefault(label, []).append(psnr(rest.restored, clean))
                if label == "given":
                    got.setdefault("passes", []).append(len(rest.sigma_passes or [sigma]))
        row = {"sigma": sigma, "photos": len(cleans),
               **{k: float(np.mean(v)) for k, v in got.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def sr4_crops(one_pass, twice, crops: torch.Tensor) -> dict:
    """Part 4: sr x4 of held-out crops from their true low-resolution images: the x4 restorer,
    the x2 restorer in two passes and bicubic, as ``restore_image`` runs them; mean PSNR and
    the crops where two passes beat one."""
    scores: dict[str, list[float]] = {"input": [], "enfold x4": [], TWICE: [], "bicubic": []}
    for clean in crops:
        small, ref = low_res(clean, 4)
        scores["input"].append(input_psnr("sr4", small, ref, {"scale": 4}))
        scores["enfold x4"].append(psnr(enfold_restore(one_pass, small, "sr4", scale=4), ref))
        scores[TWICE].append(psnr(enfold_restore(twice, small, "sr4", scale=4), ref))
        scores["bicubic"].append(psnr(bicubic(small, 4), ref))
    got = {k: float(np.mean(v)) for k, v in scores.items()}
    got["crops"] = len(crops)
    got["twice ahead"] = int(sum(a > b for a, b in zip(scores[TWICE], scores["enfold x4"],
                                                        strict=True)))
    print(json.dumps(got), flush=True)
    return got


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.mean([psnr(x, y) for x, y in zip(a, b, strict=True)]))


# ----------------------------------------------------------------------------- report


def zoom_picture(outs: dict[str, torch.Tensor], path: Path) -> None:
    """The whole photo and an enlarged smooth region: input | enfold | BM3D | clean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = outs["clean"]
    h, w = clean.shape[-2:]
    # the smoothest 160x160 window (lowest gradient energy) shows a tile grid best
    gray = clean.mean(0)
    grad = (gray[1:, :-1] - gray[:-1, :-1]).abs() + (gray[:-1, 1:] - gray[:-1, :-1]).abs()
    box = 160
    pooled = F.avg_pool2d(grad[None, None], box, stride=40)[0, 0]
    iy, ix = divmod(int(pooled.argmin()), pooled.shape[1])
    y0, x0 = iy * 40, ix * 40
    cols = [k for k in ("input", "enfold", "BM3D", "clean") if k in outs]
    fig, axes = plt.subplots(2, len(cols), figsize=(3.6 * len(cols), 5.4))
    for j, key in enumerate(cols):
        img = outs[key].clamp(0, 1)
        axes[0, j].imshow(img.permute(1, 2, 0).numpy())
        axes[0, j].add_patch(plt.Rectangle((x0, y0), box, box, fill=False, color="yellow"))
        title = key if key in ("input", "clean") else f"{key} {psnr(img, clean):.2f} dB"
        if key == "input":
            title = f"input (sigma {SIGMA}) {psnr(img, clean):.2f} dB"
        axes[0, j].set_title(title, fontsize=9)
        crop = img[:, y0:y0 + box, x0:x0 + box]
        axes[1, j].imshow(crop.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[1, j].set_title(f"{box}x{box} smooth region, enlarged", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(f"Held-out photo, {w}x{h}, restored whole", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def seam_text(stride: int | None, at_tiles: float | None, grid: float | None,
              phased: tuple[float | None, float | None] = (None, None)) -> str:
    """``at its tiles (stride) / on the 32 grid``, ``-`` where not measured; then the same
    against interior rows and columns of the same low-resolution pixel phase, where measured."""
    if grid is None:
        return "-"
    text = f"{fmt(at_tiles)} (stride {stride}) / {fmt(grid)}" if at_tiles is not None else (
        f"- / {fmt(grid)}")
    if phased[1] is not None:
        text += f"; same phase: {fmt(phased[0])} / {fmt(phased[1])}"
    return text


def report(args, rows: list[dict], big: dict | None, levels: list[dict], minutes: float,
           models: dict[str, str], crops_sr4: dict | None = None,
           sweep: list[dict] | None = None) -> str:
    from enfold.runtime.restore import SECOND_PASS_FROM

    title = ("## Full photos: seamless restoration, speed and memory (held-out photos)"
             if args.section == "full_photo" else
             f"### Full photos, continued: {', '.join(t for t in models if t in TASKS)} (a run "
             "of its own)")
    lines = [title, "",
             f"Command: `{args.command}`. Machine: {os.cpu_count()} CPU threads "
             f"({platform.machine()}), torch {torch.__version__}, every method on the same "
             f"threads; took {minutes:.1f} min. Models: "
             + ", ".join(f"{t} `{m}`" for t, m in models.items())
             + (f". Whole photos: the {len(set(r['photo'] for r in rows))} held-out photos of "
                f"the `photos` source reduced to a shorter side of {args.short_side} pixels (the "
                "scale the restorers trained at), restored whole through `enfold.runtime` as "
                "`enfold restore` does" if rows else "")
             + ". Seam ratio: squared error on the rows and columns next to "
             "tile boundaries over the error elsewhere, about 1.0 without seams; first at the "
             "tiles the method ran (its stride in brackets), then on a fixed 32-pixel grid, "
             "where a tile-free classical output shows what the grids already in the task give "
             "(the super-resolution grid; the 8-pixel JPEG blocks of the clean photos). For "
             "super-resolution, \"same phase\" compares the boundary rows and columns only with "
             "interior ones at the same position on the low-resolution pixel grid, whose error "
             "pattern repeats every `scale` pixels: what the tiles add beyond that grid. Peak MB: "
             "resident memory a call added."
             + (" Photo-level numbers are means over the photos." if rows else ""), ""]
    if rows:
        lines += ["| task | input (dB) | method | PSNR (dB) | seam ratio at its tiles / on a 32 "
                  "grid | s per MP | peak MB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        methods = [k for k in sub[0] if isinstance(sub[0][k], dict) or sub[0][k] is None]
        methods = [m for m in methods if m not in ("photo", "task", "size", "input")]
        for m in methods:
            vals = [r[m] for r in sub if r[m] is not None]
            if not vals:
                lines.append(f"| {task} | | {m} | not installed | | | |")
                continue

            def mean(key: str, vals=vals) -> float | None:
                got = [v[key] for v in vals if key in v]
                return float(np.mean(got)) if got else None

            seam_cell = seam_text(vals[0].get("stride"), mean("seam_tiles"), mean("seam_32"),
                                  (mean("seam_tiles_phase"), mean("seam_32_phase")))
            lines.append(f"| {task} | {fmt(float(np.mean([r['input'] for r in sub])))} | {m} "
                         f"| {fmt(mean('psnr'))} | {seam_cell} | {fmt(mean('s_per_mp'), 1)} "
                         f"| {fmt(mean('peak_mb'), 0)} |")
    first = [r[TWICE] for r in rows if isinstance(r.get(TWICE), dict)]
    if first:
        def avg(key: str) -> str:
            return fmt(float(np.mean([v[key] for v in first])))

        tile, step = first[0]["first_pass"]
        lines += ["", f"{TWICE}: its seam ratio at its tiles counts the boundaries of both "
                  f"passes' tiles (the first pass's are {tile}-pixel tiles in the output's "
                  f"pixels, {step} apart, all on the x4 grid); at the first pass's tiles "
                  f"alone it is {avg('seam_first_pass')} ({avg('seam_first_pass_phase')} "
                  "against interior rows and columns of the same phase)."]
    if big:
        lines += ["", f"A {big['size'][1]}x{big['size'][0]} photo (`{big['photo']}`, native "
                  f"resolution, held out) noised with sigma {SIGMA} (input "
                  f"{big['input']:.2f} dB):", "",
                  "| method | PSNR (dB) | seconds | s per MP | peak MB | seam ratio at its "
                  "tiles / on a 32 grid |", "| --- | --- | --- | --- | --- | --- |"]
        for m in ("enfold", ONE_PASS, BEFORE, "BM3D", "NL-means (OpenCV)"):
            if m not in big:
                continue  # --big-skip
            v = big[m]
            if v is None:
                lines.append(f"| {m} | not installed | | | | |")
                continue
            seam_cell = seam_text(v.get("stride"), v.get("seam_tiles"), v.get("seam_32"))
            lines.append(f"| {m} | {fmt(v['psnr'])} | {fmt(v['seconds'], 1)} | "
                         f"{fmt(v['s_per_mp'], 1)} | {fmt(v['peak_mb'], 0)} | {seam_cell} |")
        if "BM3D" in big:  # the picture is drawn only with BM3D beside
            lines += ["", f"![full photo]({PICTURE.relative_to(RESULTS.parent).as_posix()})"]
    if levels:
        lines += ["", f"Noise levels: {args.crops} held-out 32x32 crops, one noise draw per "
                  "crop and sigma, each restored as `enfold restore` does; sigma estimated per "
                  "crop by scikit-image's wavelet estimate (what `enfold restore` uses when no "
                  "`--sigma` is given). Passes: a second pass, given the noise level estimated "
                  f"from the first pass's output, runs from sigma {SECOND_PASS_FROM} up "
                  "(`--passes`); one pass is the earlier default.", "",
                  "| sigma | input | enfold, sigma given | enfold, sigma estimated | passes | one "
                  "pass, given | one pass, estimated | mean estimate | BM3D, true sigma |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in levels:
            lines.append(f"| {r['sigma']} | {fmt(r['input'])} | {fmt(r['enfold, sigma given'])} "
                         f"| {fmt(r['enfold, sigma estimated'])} | "
                         f"{fmt(r['passes (sigma given)'], 0)} | "
                         f"{fmt(r['one pass, sigma given'])} | "
                         f"{fmt(r['one pass, sigma estimated'])} | "
                         f"{fmt(r['estimated sigma (mean)'], 3)} | {fmt(r['BM3D, true sigma'])} |")
    if sweep:
        lines += ["", f"Noise levels on the whole photos ({sweep[0]['photos']} held-out photos "
                  f"at a shorter side of {args.short_side}, as part 1), restored "
                  "as `enfold restore` does, with the default passes and with one pass:", "",
                  "| sigma | input | enfold, sigma given | passes | one pass, given | enfold, "
                  "sigma estimated | one pass, estimated |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in sweep:
            lines.append(f"| {r['sigma']} | {fmt(r['input'])} | {fmt(r['given'])} | "
                         f"{fmt(r['passes'], 0)} | {fmt(r['one pass, given'])} | "
                         f"{fmt(r['estimated'])} | {fmt(r['one pass, estimated'])} |")
    if crops_sr4:
        c = crops_sr4
        lines += ["", f"Super-resolution x4 of {c['crops']} held-out 32x32 crops from their true "
                  "low-resolution images (8x8), as `enfold restore --scale 4` runs them: input "
                  f"(bilinear) {fmt(c['input'])} dB, the x4 restorer {fmt(c['enfold x4'])}, "
                  f"the x2 restorer twice {fmt(c[TWICE])} (ahead on {c['twice ahead']} of "
                  f"{c['crops']} crops), bicubic {fmt(c['bicubic'])}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[],
                        help="task=NAME_OR_PATH (default: the shipped model of each task)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--short-side", type=int, default=512)
    parser.add_argument("--photos", type=int, default=12, help="held-out photos (at most 12)")
    parser.add_argument("--big", default="plasma:Path", help="native-resolution photo ('' off)")
    parser.add_argument("--big-skip", default="",
                        help="comma-separated methods the big photo leaves out (e.g. BM3D)")
    parser.add_argument("--crops", type=int, default=32, help="crops per noise level (0 off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photo-sigmas", default="",
                        help="comma-separated noise levels for the whole photos besides 0.1 "
                             "(noise: default passes against one pass)")
    parser.add_argument("--no-whole", action="store_true",
                        help="skip part 1 (the photos still serve --photo-sigmas)")
    parser.add_argument("--no-twice", dest="twice", action="store_false",
                        help="sr x4 without the x2 restorer in two passes beside it")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "full_photo")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/RESULTS.md")
    parser.add_argument("--section", default="full_photo",
                        help="the docs/RESULTS.md section to write (a partial run: its own)")
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/full_photo.py",
                               *(sys.argv[1:] if argv is None else argv)])
    from enfold.data.photos import photo_split
    from enfold.runtime import load

    t0 = time.time()
    given = dict(m.split("=", 1) for m in args.model)
    tasks = [t for t in args.tasks.split(",") if t]
    models = {t: given.get(t, t) for t in tasks}
    sessions = {t: load(m) for t, m in models.items()}
    twice = load(given.get("sr", "sr")) if "sr4" in tasks and args.twice else None
    if twice is not None:
        models["sr4 in two passes"] = given.get("sr", "sr")
    for task, session in sessions.items():  # load lazily built parts before anything is timed
        warm = torch.rand(3, 64, 64)
        enfold_restore(session, warm, task, None, **task_case(task, warm, 0)[2])
        if task == "sr4" and twice is not None:
            enfold_restore(twice, warm, task, None, **task_case(task, warm, 0)[2])
    photos = [p.name for p in photo_split("heldout")][:args.photos]
    rows = [] if args.no_whole else whole_photos(sessions, photos, args.short_side, args.seed,
                                                 twice)
    big, outs = (None, {})
    if args.big and "noise" in sessions:
        big, outs = big_photo(sessions["noise"], args.big, args.seed,
                              tuple(m for m in args.big_skip.split(",") if m))
        if "BM3D" in outs:  # the README's picture shows it
            zoom_picture(outs, PICTURE)
    levels: list[dict] = []
    if args.crops and "noise" in sessions:
        from restoration import held_out, task_config

        levels = noise_levels(sessions["noise"], held_out(task_config("noise"), args.crops),
                              args.seed)
    sweep: list[dict] = []
    if args.photo_sigmas and "noise" in sessions:
        sweep = photo_sigmas(sessions["noise"], photos, args.short_side, args.seed,
                             [float(v) for v in args.photo_sigmas.split(",") if v])
    crops_sr4 = None
    if args.crops and twice is not None:
        from restoration import held_out, task_config

        crops_sr4 = sr4_crops(sessions["sr4"], twice, held_out(task_config("sr4"), args.crops))
    minutes = (time.time() - t0) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.section}.json").write_text(json.dumps(
        {"models": models, "photos": rows, "big": big, "noise_levels": levels,
         "sr4_crops": crops_sr4, "photo_sigmas": sweep, "minutes": minutes}, indent=2))
    text = report(args, rows, big, levels, minutes, models, crops_sr4, sweep)
    print(text)
    if not args.no_doc:
        write_section(RESULTS, args.section, text)


if __name__ == "__main__":
    main()
