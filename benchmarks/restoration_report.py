"""The restoration benchmark's report: the pictures (PSNR vs K, the grid of crops, a whole
photo before and after) and the ``restoration`` section of docs/RESULTS.md, from what
``restoration_runs`` measured."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from common import machine, shown
from restoration_experiments import (
    ALL,
    CLASSICAL,
    KS,
    LABELS,
    SEED_BASELINES,
    SEEDED,
    SHIPPED,
    TASKS,
)
from restoration_runs import fmt, hwc

from enfold.config import Config

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
