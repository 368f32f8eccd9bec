"""Which features a linear probe reads: every block of the encoder, pooled, side by side.

    python benchmarks/probe_protocol.py            # enfold and the MAE at 16 epochs (Fashion-MNIST)

The learning curves probe the pooled output of the last block after the final norm (the
pipeline's ``finetune.mode=linear``: batch norm without affine, then a linear layer, MAE's
protocol). An energy model's last block feeds the energy head, so its features may serve the
energy more than the classes; the earlier blocks may probe better. For each encoder (the
learning curves' enfold and MAE checkpoints at the same budget) and each readout (block 1 .. depth
mean-pooled over patch tokens; the pipeline's final-norm readout; all blocks concatenated) this
fits the same head on frozen features of 10 labelled images per class (seeds 0, 1, 2; the
pipeline's optimiser, schedule and label smoothing, 300 steps of 64) and scores top-1 on the full
10,000-image test set, and 20-NN top-1 with the labelled images as the bank. The features are
computed once, without the pipeline's horizontal flips, so the "final norm" row is this script's
own baseline for the others, not a copy of the learning curves' number. Writes the section
``probe_protocol`` of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F
from results_doc import write_section
from torch import nn

ROOT = common.ROOT
CURVES = ROOT / "runs" / "learning_curves_long"
FINETUNE = ROOT / "configs" / "finetune" / "fmnist-tiny.yaml"
FINAL = "final norm, mean (the pipeline's probe)"
ALL = "blocks 1-4 concatenated, mean each"


def encoders(budget: int) -> dict[str, Path]:
    """The learning curves' checkpoints at ``budget`` steps: enfold at fmnist-tiny's learning
    rate and at twice it (the shipped fmnist-16ep recipe), and the MAE."""
    return {"enfold": CURVES / "enfold-h15000" / "pretrain" / f"checkpoint-step{budget}.pt",
            "enfold, lr x2 (shipped)": CURVES / "enfold-base_lr-1.6e-2-h15000" / "pretrain"
            / f"checkpoint-step{budget}.pt",
            "MAE": CURVES / "mae-h15000" / f"at-{budget}" / "pretrain" / "checkpoint-last.pt"}


@torch.no_grad()
def readouts(checkpoint: Path, cfg, images: torch.Tensor, batch: int = 500
             ) -> dict[str, torch.Tensor]:
    """Every readout's features of ``images`` ``(N, C, H, W) -> {name: (N, D)}``."""
    from enfold.checkpoint.load import build_classifier

    net = build_classifier(cfg, 10, checkpoint).eval()
    net = getattr(net, "backbone", net)  # a linear-mode config wraps the ViTClassifier
    vit = net.vit
    depth = len(vit.blocks)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch):
        x = images[start:start + batch]
        blocks = vit.forward_intermediates(x, indices=depth, norm=False, output_fmt="NLC",
                                           intermediates_only=True)  # depth x (B, N, D)
        got = {f"block {i + 1}, mean": b.mean(1) for i, b in enumerate(blocks)}
        got[FINAL] = net.features(x)  # (B, D)
        got[ALL] = torch.cat([b.mean(1) for b in blocks], dim=1)  # (B, depth * D)
        for name, f in got.items():
            parts.setdefault(name, []).append(f.float())
    return {name: torch.cat(fs) for name, fs in parts.items()}


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, cfg, seed: int) -> nn.Module:
    """Batch norm without affine and a linear layer, trained as the pipeline's linear arm:
    AdamW at its learning rate and weight decay, warmup then cosine, label smoothing."""
    from enfold.pipeline.schedule import lr_at, scaled_lr

    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(train_x.shape[1], affine=False, eps=1e-6),
                         nn.Linear(train_x.shape[1], 10))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    t = cfg.train
    lr = scaled_lr(t.base_lr, cfg.data.batch_size, t.lr_batch_base)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=t.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for step in range(t.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, t.max_steps, t.warmup_steps)
        idx = torch.randint(0, train_x.shape[0], (cfg.data.batch_size,), generator=gen)
        loss = F.cross_entropy(head(train_x[idx]), train_y[idx],
                               label_smoothing=cfg.finetune.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def knn_top1(bank: torch.Tensor, bank_y: torch.Tensor, test: torch.Tensor,
             test_y: torch.Tensor) -> float:
    from enfold.pipeline.knn import knn_scores

    scores = knn_scores(F.normalize(bank, dim=1), bank_y, F.normalize(test, dim=1), 10)
    return float((scores.argmax(1) == test_y).float().mean())


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a labelled set (evaluation samples: normalised, no flips) and its label."""
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=15000, help="pretraining steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()
    from enfold.config import load_config

    t0 = time.time()
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    from enfold.pipeline.finetune import labelled_sets

    test_x = test_y = None
    by_seed = {}
    for seed in args.seeds:
        cfg = load_config(FINETUNE, ["finetune.mode=linear", f"train.seed={seed}",
                                     "data.labels_per_class=10"])
        train, heldout = labelled_sets(cfg)
        by_seed[seed] = (cfg, *stack(train))
        if test_x is None:  # the same full test set for every seed: read once
            test_x, test_y = stack(heldout)
    for name, ckpt in encoders(args.budget).items():
        cfg0 = by_seed[args.seeds[0]][0]
        test_feats = readouts(ckpt, cfg0, test_x)
        for seed, (cfg, tx, ty) in by_seed.items():
            train_feats = readouts(ckpt, cfg, tx)
            for readout, feats in train_feats.items():
                head = fit_probe(feats, ty, cfg, seed)
                with torch.no_grad():
                    top1 = float((head(test_feats[readout]).argmax(1) == test_y).float().mean())
                got = scores.setdefault((name, readout), {"probe": [], "knn": []})
                got["probe"].append(top1)
                got["knn"].append(knn_top1(feats, ty, test_feats[readout], test_y))
                print(f"{name} | {readout} | seed {seed}: probe {top1:.4f} "
                      f"knn {got['knn'][-1]:.4f}", flush=True)
    minutes = (time.time() - t0) / 60
    command = shlex.join(["python", "benchmarks/probe_protocol.py", *sys.argv[1:]])
    lines = [
        "## Probe protocol: which features the linear probe reads (Fashion-MNIST)", "",
        f"Command: `{command}`. Encoders: the learning curves' enfold (both learning rates) "
        "and MAE checkpoints at "
        f"{args.budget} steps (`runs/learning_curves_long`). Each readout: batch norm without "
        "affine and a linear layer on frozen features of 10 labelled images per class (seeds "
        f"{', '.join(map(str, args.seeds))}), trained as the pipeline's linear arm "
        "(`configs/finetune/fmnist-tiny.yaml`: AdamW, 300 steps of 64, warmup and cosine, label "
        "smoothing) but on features computed once without horizontal flips; top-1 on the full "
        "test set; 20-NN top-1 (cosine, the labelled images as the bank). "
        f"{common.machine()}; took {minutes:.1f} min.", "",
        "| encoder | readout | probe top-1 | 20-NN top-1 |", "| --- | --- | --- | --- |"]
    for (name, readout), got in scores.items():
        lines.append(f"| {name} | {readout} | {common.fmt_seeds(got['probe'])} | "
                     f"{common.fmt_seeds(got['knn'])} |")
    text = "\n".join(lines)
    print(text)
    write_section(args.results, "probe_protocol", text)


if __name__ == "__main__":
    main()
