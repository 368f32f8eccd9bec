"""What ``enfold predict``, ``restore`` and ``score`` do with image files, as plain functions.

An unreadable file never stops the others: it is reported with the reason and the command exits
non-zero at the end, after every readable file has its result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from enfold.errors import EnfoldError
from enfold.runtime.images import decode_image, encode_png, model_view, side_by_side
from enfold.runtime.session import InferenceSession

FILE_BATCH = 64  # files decoded and run per call


def model_batches(session: InferenceSession, files: list[Path],
                  errors: dict[str, str]) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Readable files in chunks, each as ``(files, (B, C, S, S) pixels)``; failures go to
    ``errors``."""
    for start in range(0, len(files), FILE_BATCH):
        ok, views = [], []
        for path in files[start:start + FILE_BATCH]:
            try:
                views.append(model_view(decode_image(path, session.in_chans), session.metadata))
                ok.append(path)
            except EnfoldError as exc:
                errors[str(path)] = str(exc)
        if ok:
            yield ok, torch.stack(views)


def predict_files(session: InferenceSession, files: list[Path], top_k: int = 5
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Top-k labels and probabilities per file."""
    results, errors = [], {}
    for paths, x in model_batches(session, files, errors):
        for path, ranked in zip(paths, session.top_k(session.classify(x), top_k), strict=True):
            results.append({"file": str(path), "label": ranked[0][0],
                            "top_k": [{"label": n, "score": s} for n, s in ranked]})
    return results, errors


def score_files(session: InferenceSession, files: list[Path]
                ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Energy per file (low: like the training data)."""
    results, errors = [], {}
    for paths, x in model_batches(session, files, errors):
        for path, e in zip(paths, session.energy(x).tolist(), strict=True):
            results.append({"file": str(path), "energy": e})
    return results, errors


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:  # two inputs with the same name in different folders
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    return stem


def restore_files(session: InferenceSession, files: list[Path], out: Path, task: str | None,
                  seed: int = 0, degraded: bool = False, keep_known: bool = True
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Restore each file; write ``OUT/<name>.png`` and ``OUT/<name>-panel.png``.

    The panel is clean | degraded | restored (degraded | restored with ``degraded``), enlarged
    for small images. ``OUT/restore.json`` lists every file with its PSNRs.
    """
    from enfold.runtime.restore import restore_image, task_corruption

    if not degraded:
        task = task or session.metadata.get("task")
        task_corruption(session.metadata, task)  # an unknown task fails before any work
    out.mkdir(parents=True, exist_ok=True)
    results, errors, used = [], {}, set()
    for path in files:
        try:
            img = decode_image(path, session.in_chans)
        except EnfoldError as exc:
            errors[str(path)] = str(exc)
            continue
        rest = restore_image(session, img, task, seed=seed, degraded=degraded,
                             keep_known=keep_known)
        stem = _unique_stem(path, used)
        restored_png, panel_png = out / f"{stem}.png", out / f"{stem}-panel.png"
        restored_png.write_bytes(encode_png(rest.restored))
        cols = ([rest.degraded, rest.restored] if rest.clean is None else
                [rest.clean, rest.degraded, rest.restored])
        panel = side_by_side(cols)
        panel_png.write_bytes(encode_png(panel, scale=max(1, 128 // panel.shape[1])))
        results.append({"file": str(path), "restored": str(restored_png),
                        "panel": str(panel_png), "task": None if degraded else task,
                        **rest.psnr()})
    (out / "restore.json").write_text(json.dumps({"results": results, "errors": errors},
                                                 indent=2))
    return results, errors
