"""Data consistency: after every restoration step, put back what the measurement pins down.

Unrolled optimisation for inverse problems gets much of its strength from this: the corrupted
input ``x_0`` fixes part of the answer exactly, so after each gradient step the image is
projected back onto the images that agree with ``x_0``. Each projection below is orthogonal in
pixel space onto a set that holds the clean image, so it can only bring the step closer to it.

    prepare(x_0, weight) -> state          once per restoration (what the measurement says)
    start(x_0, state)    -> x              the first guess the steps descend from
    apply(x, state)      -> x              after every step

* ``sr``: the input is ``up(y)``, a bilinear enlargement of the low-resolution image
  ``y = area_down(clean)``. ``y`` is recovered exactly from ``x_0`` (``area_down(up(.))`` is a
  fixed, well-conditioned linear map per axis whose inverse is a buffer), and each step is
  projected onto ``{x : area_down(x) = y}`` by adding the nearest-neighbour enlargement of
  ``y - area_down(x)``.
* ``gray``: the luma of the colour answer must equal the gray input; the projection moves each
  pixel along the luma weights.
* ``mask``: the pixels the mask left visible are pasted back. Training passes the mask; without
  it (inference, the exported graph) the holes are found in the image itself: the patches whose
  every pixel holds the corruption's fill value (``corrupt.mask.fill`` zero or mean; a noise fill
  cannot be found, and then nothing is pasted). With ``model.fill_holes`` = n > 0 the steps start
  from a smooth guess instead of the flat fill: the holes are filled from the visible pixels
  around them by a normalised 9x9 average, then n Jacobi sweeps of the harmonic (Laplace)
  equation. That guess alone scores about 27 dB on the held-out photos against 9 dB for the
  fill, so the energy steps spend their capacity on detail instead of on the mean colour.
  ``model.fill_biharmonic`` = m > 0 then runs m steps of the biharmonic flow
  ``x <- x - tau * w * lap(lap(x))`` with heavy-ball momentum, in the holes only: the harmonic
  fill is flat where the surroundings slope; the biharmonic one continues their gradients
  (about +2 dB on the held-out photos, near scikit-image's biharmonic inpainting).

Everything works on normalised images (``(pixel - mean) / std``) and is written with reshapes,
means and matmuls, so the unrolled restorer with consistency inside still traces and exports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from enfold.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the gray corruption uses
TASKS_WITH_CONSISTENCY = ("mask", "sr", "gray")


def enlarge_nearest(y: torch.Tensor, f: int) -> torch.Tensor:
    """Each pixel repeated ``f`` x ``f``: ``(B, C, h, w) -> (B, C, hf, wf)``, by reshapes
    (``interpolate`` would put an arange made on a fixed device into the exported graph)."""
    b, c, h, w = y.shape
    return y[:, :, :, None, :, None].expand(b, c, h, f, w, f).reshape(b, c, h * f, w * f)


class Consistency(nn.Module):
    """The identity projection; the others override what their measurement pins down."""

    task = "none"

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
        """What the measurement says, computed once from the corrupted input ``x0``."""
        return None

    def start(self, x0: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """The first guess the restoration steps descend from: the input itself."""
        return x0

    def apply(self, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Project a step back onto the images that agree with the measurement."""
        return x


class NoConsistency(Consistency):
    """Nothing in the input is known exactly (noise, shuffled patches)."""


class KeepVisible(Consistency):
    """Masked patches: the visible pixels (``weight == 0``) are the input's own."""

    task = "mask"

    # the biharmonic flow's step and momentum: stable up to tau * 64 < 2 * (1 + momentum), as the
    # 3x3 Laplacian applied twice has eigenvalues up to 64
    FLOW_STEP = 1 / 32
    FLOW_MOMENTUM = 0.98

    def __init__(self, fill: list[float] | None, patch: int, fill_holes: int = 0,
                 fill_biharmonic: int = 0):
        super().__init__()
        # the fill in normalised units, (1, C, 1, 1); None: a noise fill, holes cannot be found
        value = None if fill is None else torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("fill", value, persistent=False)
        self.patch = patch
        self.fill_holes = fill_holes
        self.fill_biharmonic = fill_biharmonic
        # the 5-point neighbour sum as a depthwise 3x3 kernel per channel, (C, 1, 3, 3): a fixed
        # channel count, as the exporters need for a grouped conv
        plus = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        channels = 1 if value is None else value.shape[1]
        self.register_buffer("plus", plus.expand(channels, 1, 3, 3).contiguous(),
                             persistent=False)

    def find_holes(self, x0: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)``, 1 on the patches that hold the fill everywhere."""
        at_fill = ((x0 - self.fill).abs() < 1e-4).to(x0.dtype).amin(dim=1, keepdim=True)
        p = self.patch
        whole = (F.avg_pool2d(at_fill, p, p) > 1 - 1e-6).to(x0.dtype)  # (B, 1, H/p, W/p)
        return enlarge_nearest(whole, p)

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
        if weight is None:
            if self.fill is None:
                return None
            weight = self.find_holes(x0)
        return torch.cat([x0, weight.to(x0.dtype)], dim=1)  # (B, C + 1, H, W)

    def start(self, x0: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        if state is None or self.fill_holes <= 0:
            return x0
        x0, w = state[:, :-1], state[:, -1:]
        known = 1 - w
        # normalised average of the visible pixels within 4 pixels; holes wider than that keep
        # the fill until the sweeps reach them
        num = F.avg_pool2d(x0 * known, 9, 1, padding=4)  # zero padding cancels in num / den
        den = F.avg_pool2d(known, 9, 1, padding=4)
        x = w * torch.where(den > 1e-6, num / den.clamp_min(1e-6), x0) + known * x0
        for _ in range(self.fill_holes):  # Jacobi sweeps: each hole pixel -> its 3x3 mean
            x = w * F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False) + known * x0
        if self.fill_biharmonic <= 0:
            return x
        # in-image neighbours of each pixel (4, 3 on edges, 2 in corners), made from w so no
        # factory op enters the traced graph
        neighbours = F.conv2d(w * 0 + 1, self.plus[:1], padding=1)  # (B, 1, H, W)
        velocity = None  # heavy-ball momentum
        for _ in range(self.fill_biharmonic):
            step = -self.FLOW_STEP * w * self._lap(self._lap(x, neighbours), neighbours)
            velocity = step if velocity is None else self.FLOW_MOMENTUM * velocity + step
            x = x + velocity
        return x

    def _lap(self, x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """The 5-point Laplacian per channel with mirrored (Neumann) edges, i.e. the edge pixels
        replicated outward: the sum of the in-image neighbours minus their count times the
        pixel. ``(B, C, H, W)`` -> same; one grouped conv, which exports and traces cheaply."""
        return F.conv2d(x, self.plus, padding=1, groups=x.shape[1]) - neighbours * x

    def apply(self, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        if state is None:
            return x
        x0, w = state[:, :-1], state[:, -1:]
        return w * x + (1 - w) * x0


def _area_of_bilinear(size: int, factor: int) -> torch.Tensor:
    """The ``(size/f, size/f)`` matrix of ``area_down(bilinear_up(.))`` along one axis."""
    small = size // factor
    eye = torch.eye(small, dtype=torch.float64)[:, None, :]  # (n, 1, n): one basis row each
    up = F.interpolate(eye, size=size, mode="linear", align_corners=False)
    return F.avg_pool1d(up, factor)[:, 0, :].T.contiguous()  # column i = image of e_i


class LowResProjection(Consistency):
    """Super-resolution by ``factor``: stay consistent with the low-resolution image."""

    task = "sr"

    def __init__(self, img_size: int, factor: int):
        super().__init__()
        if factor < 2 or img_size % factor:
            raise ConfigError(
                f"sr consistency needs model.img_size ({img_size}) divisible by "
                f"corrupt.sr.factor ({factor})"
            )
        self.factor = factor
        inverse = torch.linalg.inv(_area_of_bilinear(img_size, factor)).float()
        self.register_buffer("inverse", inverse, persistent=False)  # (h, h), h = img_size / f

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """Area downsampling: ``(B, C, H, W) -> (B, C, H/f, W/f)``."""
        b, c, h, w = x.shape
        f = self.factor
        return x.reshape(b, c, h // f, f, w // f, f).mean(dim=(3, 5))

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        # x0 = bilinear_up(y), so down(x0) = M y M^T per channel: y = M^-1 down(x0) M^-T.
        z = self.down(x0)  # (B, C, h, h)
        return self.inverse @ z @ self.inverse.T

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + enlarge_nearest(y - self.down(x), self.factor)


class LumaProjection(Consistency):
    """Colorization: the answer's luma must be the gray input's."""

    task = "gray"

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError("gray consistency needs 3-channel images (model.in_chans=3)")
        w = torch.tensor(LUMA).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("w", w, persistent=False)
        self.register_buffer("s", s, persistent=False)
        self.register_buffer("m", m, persistent=False)
        # Orthogonal projection in pixel space moves a pixel by t * w / ||w||^2, i.e. by
        # t * w / (||w||^2 * s) in normalised units.
        self.register_buffer("direction", w / (w.pow(2).sum() * s), persistent=False)

    def luma(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel-space luma of a normalised image: ``(B, 3, H, W) -> (B, 1, H, W)``."""
        return ((x * self.s + self.m) * self.w).sum(dim=1, keepdim=True)

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return self.luma(x0)

    def apply(self, x: torch.Tensor, luma0: torch.Tensor) -> torch.Tensor:
        return x + (luma0 - self.luma(x)) * self.direction


def mask_fill_value(fill: str, mean: list[float], std: list[float]) -> list[float] | None:
    """The mask corruption's fill in normalised units per channel (None for a noise fill)."""
    if fill == "zero":
        return [-m / s for m, s in zip(mean, std, strict=True)]
    if fill == "mean":
        return [0.0] * len(mean)
    return None


def build_consistency(
    task: str | None, img_size: int, sr_factor: int, mean: list[float], std: list[float],
    mask_fill: str = "zero", mask_patch: int = 4, fill_holes: int = 0,
    fill_biharmonic: int = 0,
) -> Consistency:
    """The projection for ``task`` (``None``: none). Only single-task models use one."""
    for name, value in (("fill_holes", fill_holes), ("fill_biharmonic", fill_biharmonic)):
        if value < 0:
            raise ConfigError(f"model.{name} must be 0 (off) or a positive number of "
                              f"iterations, got {value}")
        if value and task != "mask":
            raise ConfigError(f"model.{name} applies to the mask task only, not {task!r}; "
                              "set it to 0")
    if task is None or task in ("noise", "shuffle"):
        return NoConsistency()
    if task == "mask":
        return KeepVisible(mask_fill_value(mask_fill, mean, std), mask_patch, fill_holes,
                           fill_biharmonic)
    if task == "sr":
        return LowResProjection(img_size, sr_factor)
    if task == "gray":
        return LumaProjection(mean, std)
    raise ConfigError(f"no data consistency is defined for task {task!r}")
