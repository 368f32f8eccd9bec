"""Restoring image files of any size: the one function the CLI, ``/v1/restore`` and the Python
API share.

    rest = restore_image(session, img)                    # a degraded photo, as it is
    rest = restore_image(session, img, sigma=0.05)        # noise, a known level
    rest = restore_image(session, small, "sr", scale=2)   # twice the size out
    rest = restore_image(session, small, "sr", scale=4)   # an x2 restorer, in two passes
    rest = restore_image(session, img, "mask", mask=holes)
    rest = restore_image(session, img, simulate=True)     # corrupt a clean image first, PSNR

The input is taken as already degraded; it is prepared as the task's training corruption
would have left it (a low-resolution image enlarged as the ``sr`` corruption enlarges, a gray
photo as luma in every channel, holes set to the mask's fill) and restored by overlapping,
blended tiles (:mod:`enfold.runtime.blend`), so the result has no tile seams and memory stays
bounded. ``simulate=True`` is the demonstration: the clean image is corrupted with the task's
own corruption (tile by tile, each tile with its own seeded generator), restored, and scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from enfold.corrupt.noise import estimate_sigma  # noqa: F401  (re-exported)
from enfold.errors import EnfoldError
from enfold.runtime.blend import (
    TILE_BATCH,
    Progress,
    blend_tile_count,
    blend_tiles,
    default_stride,
    pad_to,
)
from enfold.runtime.fill import push_pull_fill
from enfold.runtime.images import tile, untile
from enfold.runtime.session import InferenceSession

if TYPE_CHECKING:
    from enfold.artifact.sidecar import Sidecar
    from enfold.runtime.budget import WorkBudget

TASKS = ("mask", "shuffle", "sr", "noise", "gray")
# A noise-level restorer's one step leaves noise behind, the more the higher sigma; a further
# pass at the level estimated from the previous pass's output removes much of it (whole
# held-out photos: +0.2 dB at sigma 0.1, +0.9 at 0.2) but costs a little at low levels (-0.16
# at 0.05; docs/RESULTS.md). Without ``passes``, a second pass runs from this level up: between
# 0.05, where the photos lose, and 0.1, where photos and crops gain.
SECOND_PASS_FROM = 0.075
MAX_PASSES = 4
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the gray corruption uses
SR_SCALES = (2, 4)


@dataclass
class Restoration:
    """One restored image; every tensor is ``(C, H, W)`` (weight ``(1, H, W)``) in [0, 1].

    ``degraded`` is what the model restored (for ``sr`` with a scale, the enlarged input);
    ``clean`` exists only for simulated corruptions. ``sigma`` is the noise level given to a
    noise-level restorer, ``sigma_source`` ``"given"`` or ``"estimated"``.
    """

    degraded: torch.Tensor
    restored: torch.Tensor
    clean: torch.Tensor | None = None
    weight: torch.Tensor | None = None  # 1 where the image is corrupted (holes of a mask)
    sigma: float | None = None
    sigma_source: str | None = None
    task: str | None = None
    sigma_passes: list[float] | None = None  # the level each pass was given (noise)

    def psnr(self) -> dict[str, float]:
        """PSNR (dB) of the degraded and restored image against the clean one, on the region."""
        from enfold.metrics import region_psnr

        if self.clean is None or self.weight is None:
            return {}
        clean, w = self.clean[None], self.weight[None]
        return {"psnr_input": float(region_psnr(self.degraded[None], clean, w)[0]),
                "psnr_restored": float(region_psnr(self.restored[None], clean, w)[0])}

    def info(self) -> dict[str, Any]:
        """What a report says about this restoration besides PSNR: task and noise level."""
        out: dict[str, Any] = {"task": self.task}
        if self.sigma is not None:
            out.update(sigma=self.sigma, sigma_source=self.sigma_source)
        if self.sigma_passes is not None:
            out.update(passes=len(self.sigma_passes), sigma_passes=self.sigma_passes)
        return out


def task_corruption(meta: Sidecar, task: str):
    """The corruption callable for ``task``, rebuilt from the artifact's metadata."""
    from enfold.config import CorruptConfig, from_dict
    from enfold.corrupt import CorruptionContext, build_one

    settings = meta.corrupt
    if not settings:
        raise EnfoldError("this artifact's metadata has no corruption settings (exported by an "
                          "older enfold); re-export it, or restore degraded images without "
                          "--simulate")
    if task not in settings:
        raise EnfoldError(f"unknown task {task!r}; choose one of {', '.join(sorted(settings))}")
    cfg = from_dict(CorruptConfig, {task: settings[task]})
    return build_one(task, getattr(cfg, task), CorruptionContext.from_metadata(meta))


def sr_factor(meta: Sidecar) -> int:
    """The super-resolution factor the artifact was trained for."""
    return int((meta.corrupt or {}).get("sr", {}).get("factor", 2))


def sr_passes(meta: Sidecar, scale: int) -> int:
    """How many times the restorer runs to enlarge ``scale`` times: ``scale`` must be a power
    of the factor it was trained for (an x2 restorer enlarges x4 in two passes, each on the
    previous one's output; on the held-out photos that beats the one-pass x4 restorer,
    docs/RESULTS.md)."""
    factor, passes, reach = sr_factor(meta), 1, sr_factor(meta)
    while reach < scale:
        reach, passes = reach * factor, passes + 1
    if reach != scale:
        raise EnfoldError(f"--scale {scale}: this restorer was trained to enlarge {factor} "
                          f"times, and {scale} is no power of {factor}; use --scale {factor} "
                          f"or an x{scale} sr restorer")
    return passes


def enlarge(img: torch.Tensor, scale: int) -> torch.Tensor:
    """A low-resolution ``(C, h, w)`` image enlarged ``scale`` times as the ``sr`` corruption
    enlarges: bilinear, ``align_corners=False``."""
    import torch.nn.functional as F

    h, w = img.shape[-2:]
    return F.interpolate(img[None], size=(h * scale, w * scale), mode="bilinear",
                         align_corners=False)[0]


def to_luma(img: torch.Tensor, channels: int) -> torch.Tensor:
    """A gray (1-channel) or colour image as its luma in ``channels`` channels, as the ``gray``
    corruption leaves a colour image."""
    if img.shape[0] == 3:
        img = (img * torch.tensor(LUMA, dtype=img.dtype).view(3, 1, 1)).sum(0, keepdim=True)
    return img[:1].expand(channels, *img.shape[1:]).clone()


def mask_fill(meta: Sidecar, channels: int) -> torch.Tensor:
    """The pixel value the mask corruption puts in holes, ``(C, 1, 1)``: zero, or the data
    mean (for a noise fill, which cannot be reproduced, the mean)."""
    fill = (meta.corrupt or {}).get("mask", {}).get("fill", "zero")
    if fill == "zero":
        return torch.zeros(channels, 1, 1)
    return torch.tensor(list(meta.mean)[:channels], dtype=torch.float32).view(-1, 1, 1)


def check_mask(mask: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """A hole mask as ``(1, H, W)`` of 0 and 1 (white, above half, is a hole), or a clear error
    when its size is not the image's."""
    m = mask.float()
    if m.ndim == 3:
        m = m.mean(0, keepdim=True)
    elif m.ndim == 2:
        m = m[None]
    else:
        raise EnfoldError(f"a mask must be (H, W) or (C, H, W), got shape {tuple(mask.shape)}")
    if tuple(m.shape[-2:]) != tuple(img.shape[-2:]):
        mh, mw = m.shape[-2:]
        ih, iw = img.shape[-2:]
        raise EnfoldError(f"the mask is {mw}x{mh} pixels but the image is {iw}x{ih}: give a "
                          "mask of the image's size (white = missing)")
    return (m > 0.5).float()


def fill_holes_of(x: torch.Tensor, fill: torch.Tensor, patch: int) -> torch.Tensor:
    """``(1, H, W)``: 1 on the whole ``patch`` x ``patch`` patches (of the grid from the top
    left) that hold ``fill`` in every pixel and channel, as a patch-mask corruption leaves them."""
    import torch.nn.functional as F

    at_fill = ((x - fill).abs() < 0.5 / 255).all(0, keepdim=True).float()  # (1, H, W)
    h, w = x.shape[-2:]
    hp, wp = h - h % patch, w - w % patch
    whole = torch.zeros_like(at_fill)
    if hp and wp:
        pooled = F.avg_pool2d(at_fill[None, :, :hp, :wp], patch) > 1 - 1e-6
        whole[:, :hp, :wp] = pooled[0].float().repeat_interleave(patch, 1).repeat_interleave(
            patch, 2)
    return whole


def _simulate(session: InferenceSession, img: torch.Tensor, task: str, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a clean image with ``task``: ``(degraded, weight)``, the same for the same image
    and seed. The whole image is corrupted at once (padded by reflection to the task's patch
    grid), so the corruption itself has no tile seams; ``shuffle``, whose patches move within
    one model-sized crop in training, is corrupted tile by tile (tile ``i`` with the generator
    of sample ``(seed, 0, i)``)."""
    from enfold.data import sample_generator  # the seeding rule of corrupt_batch

    corruption = task_corruption(session.metadata, task)
    if task == "shuffle":
        tiles, layout = tile(img, session.img_size)
        parts = [corruption(t, sample_generator(seed, 0, i))[::2] for i, t in enumerate(tiles)]
        degraded, weight = (torch.stack(p) for p in zip(*parts, strict=True))
        return untile(degraded, layout), untile(weight, layout)
    align = _grid(session.metadata, task)
    h, w = img.shape[-2:]
    padded = pad_to(img, -(-h // align) * align, -(-w // align) * align)
    degraded, _, weight = corruption(padded, sample_generator(seed, 0, 0))
    return degraded[:, :h, :w], weight[:, :h, :w]


def _grid(meta: Sidecar, task: str) -> int:
    """A simulated corruption's grid falls on multiples of this: the patch size, and for
    ``sr`` also the factor."""
    align = meta.patch_size or 1
    return int(np.lcm(align, sr_factor(meta))) if task == "sr" else align


def tile_stride(session: InferenceSession, task: str, stride: int | None = None) -> int:
    """The pixels between tile corners :func:`restore_image` uses for ``task``: ``stride``, or
    the default for the task's tile alignment and the model's patch size
    (:func:`enfold.runtime.blend.default_stride`)."""
    meta = session.metadata
    return stride or default_stride(session.img_size, _tile_align(meta, task),
                                    meta.patch_size or 1)


def _tile_align(meta: Sidecar, task: str) -> int:
    """Tile corners fall on multiples of this: the factor for ``sr`` (the enlarged input's
    phase must be the one trained on), the patch size for ``shuffle`` (its input is moved
    whole patches) and ``mask`` (holes need the wider half-tile overlap the patch grid's
    default keeps: the shorter one lost 0.17 dB on whole photos, docs/RESULTS.md), else any
    pixel, so that overlapping tiles see the patch grid at different offsets
    (:func:`enfold.runtime.blend.default_stride`)."""
    if task == "sr":
        return sr_factor(meta)
    return (meta.patch_size or 1) if task in ("shuffle", "mask") else 1


def _prepare(session: InferenceSession, img: torch.Tensor, task: str, scale: int | None,
             mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A real degraded input as the task's corruption would have left it: ``(x, weight)``."""
    meta, chans = session.metadata, session.in_chans
    if img.shape[0] != chans:
        img = img[:1].expand(chans, *img.shape[1:]).clone() if img.shape[0] == 1 else (
            to_luma(img, chans))
    if task == "sr" and scale is not None:
        return enlarge(img, scale).clamp(0, 1), None
    if task == "gray":
        return to_luma(img, chans), None
    if task == "mask" and mask is not None:
        weight = check_mask(mask, img)
        fill = mask_fill(meta, chans).expand_as(img)
        return torch.where(weight.bool().expand_as(img), fill, img), weight
    return img, None


def check_restore_options(session: InferenceSession, task: str | None, simulate: bool = False,
                          sigma: float | None = None, scale: int | None = None,
                          has_mask: bool = False, passes: int | None = None) -> str:
    """The task to restore (``task`` or the artifact's), or a clear error for options that do
    not fit it or the restorer; cheap, so callers check before decoding anything."""
    meta = session.metadata
    task = task or meta.task
    if task not in TASKS:
        raise EnfoldError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if simulate:
        task_corruption(meta, task)
        if scale is not None or has_mask:
            raise EnfoldError("--simulate makes its own corruption from a clean image: drop "
                              "--scale and --mask")
    if sigma is not None:
        if task != "noise":
            raise EnfoldError(f"--sigma is the noise level of the noise task, not {task!r}")
        if not (np.isfinite(sigma) and 0 < sigma < 1):
            raise EnfoldError(f"--sigma is the noise level in pixel units, in (0, 1) (e.g. "
                              f"0.05 for 13 of 255), got {sigma}")
        if "sigma" not in session.restorer_inputs:
            raise EnfoldError("this restorer takes no noise level (it was trained for one; "
                              "model.noise_level_input was off): drop --sigma")
    if scale is not None:
        if task != "sr":
            raise EnfoldError(f"--scale applies to the sr task, not {task!r}")
        if scale not in SR_SCALES:
            raise EnfoldError(f"--scale must be 2 or 4, got {scale}")
        sr_passes(meta, scale)
    if has_mask and task != "mask":
        raise EnfoldError(f"--mask applies to the mask task, not {task!r}")
    if passes is not None:
        if task != "noise" or "sigma" not in session.restorer_inputs:
            raise EnfoldError("--passes applies to the noise task with a restorer that takes "
                              "a noise level (model.noise_level_input)")
        if not 1 <= passes <= MAX_PASSES:
            raise EnfoldError(f"--passes must be 1 to {MAX_PASSES}, got {passes}")
    if task == "gray" and session.in_chans != 3:
        raise EnfoldError("the gray (colorization) task needs a 3-channel restorer")
    return task


def restore_image(session: InferenceSession, img: torch.Tensor, task: str | None = None,
                  seed: int = 0, simulate: bool = False, keep_known: bool = True, *,
                  sigma: float | None = None, scale: int | None = None,
                  mask: torch.Tensor | None = None, stride: int | None = None,
                  batch: int = TILE_BATCH, progress: Progress | None = None,
                  run: Any = None, smooth_start: bool = True,
                  passes: int | None = None) -> Restoration:
    """Restore ``img`` (``(C, H, W)`` in [0, 1], any size) with the session's restorer.

    * ``task``: the pretext task the input suffers from (default: the artifact's);
    * ``simulate``: corrupt the (clean) ``img`` with ``task`` first, seeded by ``seed``, and
      keep the clean image for :meth:`Restoration.psnr`;
    * ``sigma``: the noise level (pixel units in [0, 1]) for a noise-level restorer; estimated
      from the image (:func:`estimate_sigma`) when not given;
    * ``passes``: noise-level restorers: how many times to restore, each pass given the noise
      level estimated from the previous pass's output; default 2 from ``sigma`` >=
      :data:`SECOND_PASS_FROM` up, else 1;
    * ``scale``: ``sr`` only: ``img`` is the low-resolution image, the result ``scale`` times
      larger (the artifact's factor, or a power of it: one pass per factor,
      :func:`sr_passes`); without it ``img`` is taken as already enlarged;
    * ``mask``: ``mask`` only: ``(H, W)`` or ``(1, H, W)``, 1 (white) where pixels are missing,
      any shape; without it the holes are found from the fill value in whole patches;
    * ``keep_known``: pixels known exactly (outside the holes) are the input's own;
    * ``smooth_start``: ``mask`` only: the tiles start from the holes filled smoothly from the
      whole image (:func:`enfold.runtime.fill.push_pull_fill`), not from the flat fill;
    * ``stride``, ``batch``, ``progress``: the tiling (see :func:`enfold.runtime.blend.
      blend_tiles`); ``run(tiles, extra)`` replaces ``session.restore`` (the server's batcher).
    """
    meta = session.metadata
    task = check_restore_options(session, task, simulate, sigma, scale, mask is not None,
                                 passes)
    if task == "sr" and scale is not None and sr_passes(meta, scale) > 1:
        return _restore_in_passes(session, img, scale, keep_known=keep_known, stride=stride,
                                  batch=batch, progress=progress, run=run)
    takes_sigma = "sigma" in session.restorer_inputs
    clean = None
    if simulate:
        if img.shape[0] != session.in_chans:
            img = img[:1].expand(session.in_chans, *img.shape[1:]).clone()
        clean = img
        x, weight = _simulate(session, img, task, seed)
    else:
        x, weight = _prepare(session, img, task, scale, mask)
    source = None
    if takes_sigma:
        source = "given" if sigma is not None else "estimated"
        sigma = float(sigma) if sigma is not None else estimate_sigma(x)
        sigma = min(max(sigma, 1e-4), 0.999)
    feed_mask = "mask" in session.restorer_inputs
    if feed_mask and weight is None:  # no mask given: the holes are whole patches of the fill
        weight = (fill_holes_of(x, mask_fill(meta, x.shape[0]), meta.patch_size or 1)
                  if task == "mask" else torch.zeros(1, *x.shape[1:]))
    chans = x.shape[0]
    restore = run or session.restore

    levels = [sigma] if takes_sigma else []  # the last is the level of the pass running

    def run_tiles(tiles: torch.Tensor, _corners: list) -> torch.Tensor:
        extra: dict[str, Any] = {}
        if takes_sigma:
            extra["sigma"] = torch.full((tiles.shape[0],), levels[-1], dtype=torch.float32)
        if feed_mask:
            extra["mask"] = tiles[:, chans:].contiguous()
        return torch.as_tensor(restore(tiles[:, :chans].contiguous(), **extra))

    start = x
    if task == "mask" and smooth_start and feed_mask and weight is not None:
        # the graph is told where the holes are, so they may hold a guess instead of the fill;
        # holes wider than a tile need the whole photo for it
        start = push_pull_fill(x, weight)
    stack = torch.cat([start, weight]) if feed_mask else start
    count = 1
    if task == "noise" and takes_sigma:
        count = passes or (2 if sigma >= SECOND_PASS_FROM else 1)
    out = _blend_passes(session, stack, task, run_tiles, levels, count, stride, batch, progress)
    if keep_known and weight is not None:
        out = weight * out + (1 - weight) * x
    return Restoration(degraded=x, restored=out.clamp(0, 1), clean=clean, weight=weight,
                       sigma=sigma if takes_sigma else None, sigma_source=source, task=task,
                       sigma_passes=levels if task == "noise" and takes_sigma else None)


def _blend_passes(session: InferenceSession, stack: torch.Tensor, task: str,
                  run_tiles: Any, levels: list[float], count: int, stride: int | None,
                  batch: int, progress: Progress | None) -> torch.Tensor:
    """``stack`` restored ``count`` times by blended tiles; before every pass after the first,
    the noise level the previous pass left is estimated and appended to ``levels`` (which
    ``run_tiles`` feeds the restorer). ``progress`` counts the tiles of every pass."""
    step, align = tile_stride(session, task, stride), _tile_align(session.metadata, task)
    tiles = blend_tile_count(*stack.shape[-2:], session.img_size, step, align)
    out = stack
    for k in range(count):
        if k:  # the noise the previous pass left
            levels.append(min(max(estimate_sigma(out), 1e-4), 0.999))
        report = (None if progress is None else
                  lambda n, _t, k=k: progress(k * tiles + n, count * tiles))
        out = blend_tiles(out, session.img_size, run_tiles, step, align, batch, report)
        if k + 1 < count:
            out = out.clamp(0, 1)
    return out


def _restore_in_passes(session: InferenceSession, img: torch.Tensor, scale: int,
                       progress: Progress | None = None, stride: int | None = None,
                       **options: Any) -> Restoration:
    """Super-resolution by a power of the restorer's factor: each pass enlarges the previous
    pass's restored image ``factor`` times. ``progress`` counts the tiles of every pass."""
    meta, size = session.metadata, session.img_size
    factor, passes = sr_factor(meta), sr_passes(meta, scale)
    h, w = img.shape[-2:]
    step = tile_stride(session, "sr", stride)
    counts = [blend_tile_count(h * factor ** (i + 1), w * factor ** (i + 1), size, step, factor)
              for i in range(passes)]
    total, x = sum(counts), img
    for i in range(passes):
        done = sum(counts[:i])
        report = (None if progress is None else
                  lambda n, _t, done=done: progress(done + n, total))
        x = restore_image(session, x, "sr", scale=factor, stride=stride, progress=report,
                          **options).restored
    first = _prepare(session, img, "sr", None, None)[0]  # the channels the restorer takes
    return Restoration(degraded=enlarge(first, scale).clamp(0, 1), restored=x, task="sr")


def sr_tile_count(session: InferenceSession, height: int, width: int, scale: int) -> int:
    """Tiles every pass of an ``sr`` restoration ``scale`` times larger runs, at most (at a
    half-tile stride, as :func:`enfold.runtime.budget.tile_count` counts)."""
    from enfold.runtime.budget import tile_count

    factor = sr_factor(session.metadata)
    return sum(tile_count(height * factor ** (i + 1), width * factor ** (i + 1),
                          session.img_size)
               for i in range(sr_passes(session.metadata, scale)))


def check_enlarged(budget: WorkBudget, session: InferenceSession, img: torch.Tensor,
                   scale: int, name: str) -> None:
    """Raise :class:`enfold.errors.LimitError` when ``img`` enlarged ``scale`` times (``sr``),
    or the tiles of all its passes, is over ``budget``: the result holds scale^2 times the
    input's pixels."""
    h, w = img.shape[-2:]
    budget.check(w * scale, h * scale, f"{name} enlarged {scale} times", session.img_size,
                 sr_tile_count(session, h, w, scale))


def assemble(img: torch.Tensor, corrupted: torch.Tensor, restored: torch.Tensor,
             weight: torch.Tensor | None, layout: tuple, keep_known: bool = True
             ) -> Restoration:
    """Stitch abutting restored tiles (``(N, C, s, s)`` with :func:`enfold.runtime.images.tile`'s
    layout) into one :class:`Restoration`: the plain tiling, for benchmarks that score model
    outputs tile by tile. With ``keep_known`` the pixels the corruption left untouched (weight
    0) are taken from the input."""
    degraded, out = untile(corrupted, layout), untile(restored, layout)
    if keep_known and weight is not None:
        out = weight * out + (1 - weight) * degraded
    return Restoration(degraded=degraded, restored=out,
                       clean=None if weight is None else img, weight=weight)
