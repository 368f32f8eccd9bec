"""Data consistency: after every restoration step, put back what the measurement pins down.

Unrolled optimisation for inverse problems gets much of its strength from this: the corrupted
input ``x_0`` fixes part of the answer exactly, so after each gradient step the image is
projected back onto the images that agree with ``x_0``. Each projection below is orthogonal in
pixel space onto a set that holds the clean image, so it can only bring the step closer to it.

    prepare(x_0, weight) -> state          once per restoration (what the measurement says)
    apply(x, state)      -> x              after every step

* ``sr``: the input is ``up(y)``, a bilinear enlargement of the low-resolution image
  ``y = area_down(clean)``. ``y`` is recovered exactly from ``x_0`` (``area_down(up(.))`` is a
  fixed, well-conditioned linear map per axis whose inverse is a buffer), and each step is
  projected onto ``{x : area_down(x) = y}`` by adding the nearest-neighbour enlargement of
  ``y - area_down(x)``.
* ``gray``: the luma of the colour answer must equal the gray input; the projection moves each
  pixel along the luma weights.
* ``mask``: the pixels the mask left visible are pasted back. They are known only where the mask
  is (training, or a caller that passes ``weight``); the exported graph takes the image alone and
  the runtime pastes the known pixels after the last step.

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


class NoConsistency(nn.Module):
    """Nothing in the input is known exactly (noise, shuffled patches)."""

    task = "none"

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def apply(self, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        return x


class KeepVisible(nn.Module):
    """Masked patches: the visible pixels (``weight == 0``) are the input's own."""

    task = "mask"

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
        if weight is None:
            return None
        return torch.cat([x0, weight.to(x0.dtype)], dim=1)  # (B, C + 1, H, W)

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


class LowResProjection(nn.Module):
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

    def up_nearest(self, y: torch.Tensor) -> torch.Tensor:
        """Each low-resolution pixel repeated ``f`` x ``f``: ``(B, C, h, w) -> (B, C, hf, wf)``."""
        b, c, h, w = y.shape
        f = self.factor
        return y[:, :, :, None, :, None].expand(b, c, h, f, w, f).reshape(b, c, h * f, w * f)

    def prepare(self, x0: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        # x0 = bilinear_up(y), so down(x0) = M y M^T per channel: y = M^-1 down(x0) M^-T.
        z = self.down(x0)  # (B, C, h, h)
        return self.inverse @ z @ self.inverse.T

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.up_nearest(y - self.down(x))


class LumaProjection(nn.Module):
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


def build_consistency(
    task: str | None, img_size: int, sr_factor: int, mean: list[float], std: list[float]
) -> nn.Module:
    """The projection for ``task`` (``None``: none). Only single-task models use one."""
    if task is None or task in ("noise", "shuffle"):
        return NoConsistency()
    if task == "mask":
        return KeepVisible()
    if task == "sr":
        return LowResProjection(img_size, sr_factor)
    if task == "gray":
        return LumaProjection(mean, std)
    raise ConfigError(f"no data consistency is defined for task {task!r}")
