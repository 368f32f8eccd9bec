"""What ``enfold predict``, ``restore`` and ``score`` do with image files, as plain functions.

An unreadable file never stops the others: it is reported with the reason and the command exits
non-zero at the end, after every readable file has its result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from enfold.errors import EnfoldError, OutputWriteError
from enfold.output_files import entry_identity, file_identity, refuse_existing, write_output
from enfold.runtime.blend import Progress
from enfold.runtime.budget import DEFAULT_BUDGET, WorkBudget
from enfold.runtime.images import decode_image, decode_view, encode_png, side_by_side
from enfold.runtime.session import InferenceSession

FILE_BATCH = 64  # files decoded and run per call


def model_batches(session: InferenceSession, files: list[Path], errors: dict[str, str],
                  budget: WorkBudget = DEFAULT_BUDGET
                  ) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Readable files in chunks, each as ``(files, (B, C, S, S) pixels)``; failures (unreadable
    or over ``budget``) go to ``errors``."""
    for start in range(0, len(files), FILE_BATCH):
        ok, views = [], []
        for path in files[start:start + FILE_BATCH]:
            try:
                views.append(decode_view(path, session.metadata, budget=budget))
                ok.append(path)
            except EnfoldError as exc:
                errors[str(path)] = str(exc)
        if ok:
            yield ok, torch.stack(views)


def predict_files(session: InferenceSession, files: list[Path], top_k: int = 5,
                  budget: WorkBudget = DEFAULT_BUDGET
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Top-k labels and probabilities per file."""
    results, errors = [], {}
    for paths, x in model_batches(session, files, errors, budget):
        for path, ranked in zip(paths, session.top_k(session.classify(x), top_k), strict=True):
            results.append({"file": str(path), "label": ranked[0][0],
                            "top_k": [{"label": n, "score": s} for n, s in ranked]})
    return results, errors


def score_files(session: InferenceSession, files: list[Path],
                budget: WorkBudget = DEFAULT_BUDGET
                ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Energy per file (low: like the training data)."""
    results, errors = [], {}
    for paths, x in model_batches(session, files, errors, budget):
        for path, e in zip(paths, session.energy(x).tolist(), strict=True):
            results.append({"file": str(path), "energy": e})
    return results, errors


def output_names(files: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """``(restored, panel)`` paths in ``out`` for each input, never an input and never shared.

    ``NAME.png`` and ``NAME-panel.png`` when free; otherwise ``NAME-2``, ``NAME-3``, ... So
    restoring a folder into itself writes beside the inputs, and inputs ``a.png`` and
    ``a-panel.png`` get outputs of their own. A name that is the same file as an input (a hard
    link or symlink to it, compared by device and inode) counts as that input.
    """
    taken = {p.resolve() for p in files}
    inputs = {file_identity(p) for p in files} - {None}
    names = []
    for path in files:
        stem, n = path.stem, 1
        while True:
            pair = (out / f"{stem}.png", out / f"{stem}-panel.png")
            if not any(p.resolve() in taken or file_identity(p) in inputs for p in pair):
                break
            n += 1
            stem = f"{path.stem}-{n}"
        taken.update(p.resolve() for p in pair)
        names.append(pair)
    return names


def restore_outputs(files: list[Path], out: Path) -> list[Path]:
    """Every file :func:`restore_files` writes for ``files``: the PNGs and ``restore.json``."""
    return [*(p for pair in output_names(files, out) for p in pair), out / "restore.json"]


def restore_files(session: InferenceSession, files: list[Path], out: Path, task: str | None,
                  seed: int = 0, simulate: bool = False, keep_known: bool = True,
                  budget: WorkBudget = DEFAULT_BUDGET, *, sigma: float | None = None,
                  scale: int | None = None, mask: Path | None = None,
                  progress: Callable[[Path], Progress | None] | None = None,
                  overwrite: bool = False, stride: int | None = None,
                  passes: int | None = None
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Restore each (degraded) file; write ``OUT/<name>.png`` and ``OUT/<name>-panel.png``.

    Files are restored as they are, seamlessly at full resolution
    (:func:`enfold.runtime.restore.restore_image`, which documents ``sigma``, ``scale`` and
    ``mask``; ``mask`` is one hole-mask file for every input, of the inputs' size). With
    ``simulate`` each file is taken as clean, corrupted with ``task`` (seeded by ``seed``),
    restored and scored. The panel is clean | degraded | restored (degraded | restored
    without ``simulate``), enlarged for small images. Output names never replace an input and
    are never shared between inputs (:func:`output_names`); ``OUT/restore.json`` maps every
    input to its own outputs, PSNRs (``simulate``) and noise level (noise-level restorers:
    ``sigma`` and ``sigma_source``, given or estimated; ``passes`` and the level of each,
    ``sigma_passes``). Files over ``budget`` (pixels, aspect
    ratio, tiles) are refused from their header. ``progress(file)`` may return a callback
    ``(tiles done, tiles in all)`` for that file; ``stride``: pixels between tile corners
    (default half a tile; see :func:`enfold.runtime.blend.blend_tiles`).
    Existing outputs are refused before any work unless ``overwrite``; every output is written
    by :func:`enfold.output_files.write_output` (never through a link), and one that cannot be
    written is that file's error, not the batch's.
    """
    from enfold.runtime.restore import check_enlarged, check_restore_options, restore_image

    if seed < 0:
        raise EnfoldError(f"--seed must be 0 or more, got {seed}")
    # a wrong task or option fails before any work
    task = check_restore_options(session, task, simulate, sigma, scale, mask is not None,
                                 passes)
    holes = None
    if mask is not None:
        holes = decode_image(mask, 1, name=f"--mask {mask}", budget=budget)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnfoldError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    names = output_names(files, out)
    refuse_existing(restore_outputs(files, out), overwrite)
    guard = {entry_identity(p) for p in files}
    results, errors = [], {}
    for path, (restored_png, panel_png) in zip(files, names, strict=True):
        try:
            img = decode_image(path, session.in_chans, budget=budget,
                               tile_size=session.img_size)
            if scale:
                check_enlarged(budget, session, img, scale, str(path))
            rest = restore_image(session, img, task, seed=seed, simulate=simulate,
                                 keep_known=keep_known, sigma=sigma, scale=scale, mask=holes,
                                 progress=progress(path) if progress else None,
                                 stride=stride, passes=passes)
        except EnfoldError as exc:
            errors[str(path)] = str(exc)
            continue
        cols = ([rest.degraded, rest.restored] if rest.clean is None else
                [rest.clean, rest.degraded, rest.restored])
        panel = side_by_side(cols)
        try:
            write_output(restored_png, encode_png(rest.restored), guard)
            write_output(panel_png, encode_png(panel, scale=max(1, 128 // panel.shape[1])), guard)
        except OutputWriteError as exc:
            errors[str(path)] = str(exc)
            continue
        results.append({"file": str(path), "restored": str(restored_png),
                        "panel": str(panel_png), **rest.info(), **rest.psnr()})
    write_output(out / "restore.json", json.dumps({"results": results, "errors": errors},
                                                  indent=2), guard)
    return results, errors
