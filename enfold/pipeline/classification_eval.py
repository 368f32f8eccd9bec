"""Classification metrics: top-1, top-5, per-class accuracy and a confusion-matrix picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enfold.data import build_eval_loader
from enfold.output_files import write_output


@torch.no_grad()
def predict(net: nn.Module, dataset, device: torch.device,
            batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, classes)`` and labels ``(N,)`` of a labelled dataset, in order."""
    net.eval()
    logits, labels = [], []
    for x, y in build_eval_loader(dataset, batch_size):
        logits.append(net(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor,
                           classes: list[str]) -> dict[str, Any]:
    """Top-1, top-5 (or top-C for fewer classes), per-class accuracy and the confusion matrix."""
    num = len(classes)
    k = min(5, num)
    topk = scores.topk(k, dim=1).indices  # (N, k)
    pred = topk[:, 0]
    confusion = torch.zeros(num, num, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = {
        classes[c]: float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None
        for c in range(num)
    }
    return {
        "top1": float((pred == labels).float().mean()),
        f"top{k}": float((topk == labels[:, None]).any(1).float().mean()),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": classes,
        "count": int(labels.numel()),
    }


def save_confusion_png(confusion: list[list[int]], classes: list[str], path: Path,
                       title: str = "") -> None:
    """Row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    conf = torch.tensor(confusion, dtype=torch.float)
    norm = conf / conf.sum(1, keepdim=True).clamp_min(1)
    n = len(classes)
    size = min(12, 2 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if conf[i, j] > 0:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    try:
        write_output(path, lambda f: fig.savefig(f, format="png", dpi=100))  # never via a link
    finally:
        plt.close(fig)


def report(metrics: dict[str, Any], out_dir: Path | None, title: str = "") -> dict[str, float]:
    """Write ``eval.json`` and ``confusion.png`` into ``out_dir``; return ``eval/*`` scalars."""
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_output(out_dir / "eval.json", json.dumps(metrics, indent=2))
        save_confusion_png(metrics["confusion"], metrics["classes"], out_dir / "confusion.png",
                           title)
    return {f"eval/{k}": v for k, v in metrics.items() if k.startswith("top")}
