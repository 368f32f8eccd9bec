"""Held-out restoration quality: PSNR of corrupted and restored images, and picture grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from enfold.data import CorruptedDataset, build_eval_loader, denormalize
from enfold.metrics import region_psnr
from enfold.output_files import write_output


def panel_columns(corrupted: torch.Tensor, xs: list[torch.Tensor], clean: torch.Tensor,
                  mean: list[float], std: list[float]) -> list[torch.Tensor]:
    """Columns of a picture: corrupted, step 1 .. step K, clean; each ``(B, C, H, W)`` in [0,1]."""
    cols = [corrupted, *xs, clean]
    return [denormalize(c, mean, std).clamp(0, 1).float().cpu() for c in cols]


def column_labels(columns: list[torch.Tensor], weight: torch.Tensor) -> list[str]:
    """``corrupted``, ``step k``, ``clean`` with each column's mean PSNR (dB) against the clean
    one (the last) on the corrupted region: ``(B, C, H, W)`` columns, ``(B, 1, H, W)`` weight."""
    clean = columns[-1]
    names = ["corrupted", *(f"step {k}" for k in range(1, len(columns) - 1)), "clean"]
    return [f"{name} {float(region_psnr(col, clean, weight).mean()):.1f} dB"
            if i < len(columns) - 1 else name
            for i, (name, col) in enumerate(zip(names, columns, strict=True))]


def save_grid(columns: list[torch.Tensor], path: Path, scale: int = 1,
              labels: list[str] | None = None) -> None:
    """Write a PNG with one row per image and one column per entry of ``columns``; ``labels``
    (one per column) are written above the columns in PIL's default font."""
    from PIL import ImageDraw, ImageFont

    rows = torch.stack(columns, dim=1).flatten(0, 1)  # (B * cols, C, H, W), row-major
    grid = make_grid(rows, nrow=len(columns), padding=1, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if labels:
        font = ImageFont.load_default()
        # "step 1 18.2 dB" -> "step 1" over "18.2 dB": two short lines fit narrow columns
        lines = [[p[0], f"{p[1]} dB"] if len(p := label.rsplit(" ", 2)) == 3 and p[2] == "dB"
                 else [label] for label in labels]
        line_h = 12
        header = Image.new(img.mode, (img.width, line_h * max(map(len, lines)) + 4),
                           255 if img.mode == "L" else (255, 255, 255))
        draw = ImageDraw.Draw(header)
        col_w = img.width / len(labels)
        for i, parts in enumerate(lines):
            for j, text in enumerate(parts):
                draw.text((i * col_w + 2, 2 + j * line_h), text, font=font,
                          fill=0 if img.mode == "L" else (0, 0, 0))
        framed = Image.new(img.mode, (img.width, img.height + header.height))
        framed.paste(header, (0, 0))
        framed.paste(img, (0, header.height))
        img = framed
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, lambda f: img.save(f, format="PNG"))  # never through a link


def evaluate_restoration(model, tasks: dict, source, mean: list[float], std: list[float],
                         eval_cfg, device: torch.device, grid_paths: dict[str, Path] | None = None,
                         steps: int | None = None) -> dict[str, float]:
    """For each task: mean PSNR of input and restored image on the corrupted region.

    Returns ``{"eval/<task>/psnr_input": dB, "eval/<task>/psnr_restored": dB}`` and writes a
    PNG (corrupted | step 1..K | clean) for each task named in ``grid_paths``.
    """
    metrics: dict[str, float] = {}
    n = min(eval_cfg.num_images, len(source))
    for name, corruption in tasks.items():
        data = CorruptedDataset(source, corruption, mean, std, seed=eval_cfg.seed, augment=False)
        loader = build_eval_loader(torch.utils.data.Subset(data, range(n)), eval_cfg.batch_size)
        psnr_in, psnr_out, cols, labels = [], [], None, None
        for corrupted, clean, weight in loader:
            corrupted, clean, weight = corrupted.to(device), clean.to(device), weight.to(device)
            # a noise-level restorer gets each image's true sigma, as a user who knows it would
            sigma = model.noise_level(corrupted, clean) if model.noise_level_input else None
            xs = model.restore_steps(corrupted, steps, sigma=sigma)  # the grid shows every step
            restored = xs[-1]
            keep = weight.flatten(1).sum(1) > 0
            pix = [denormalize(t, mean, std) for t in (corrupted, restored, clean)]
            psnr_in.append(region_psnr(pix[0], pix[2], weight)[keep].cpu())
            psnr_out.append(region_psnr(pix[1], pix[2], weight)[keep].cpu())
            if cols is None:  # the first batch's steps make the picture; no second restore
                g = eval_cfg.grid_images
                cols = panel_columns(corrupted[:g], [x[:g] for x in xs], clean[:g], mean, std)
                labels = column_labels(cols, weight[:g].float().cpu())
        metrics[f"eval/{name}/psnr_input"] = float(torch.cat(psnr_in).mean())
        metrics[f"eval/{name}/psnr_restored"] = float(torch.cat(psnr_out).mean())
        if grid_paths and name in grid_paths and cols is not None:
            size = cols[0].shape[-1]
            save_grid(cols, grid_paths[name], scale=max(1, math.ceil(64 / size)), labels=labels)
    return metrics
