"""The restoration error every restorer trains on (the energy ViT and its learned peers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from enfold.config import LossConfig

# what a noise-level restorer says when it is not told the noise level
NEEDS_SIGMA = ("this restorer was trained with model.noise_level_input: give the noise level "
               "sigma (pixel units in [0, 1], e.g. 0.1)")
LOG_ERROR_FLOOR = 1e-6  # per_image_log reduction: log(error + floor), error in normalised units

_ELEMENTWISE = {
    "mse": lambda a, b: (a - b).pow(2),
    "l1": lambda a, b: (a - b).abs(),
    "smooth_l1": lambda a, b: F.smooth_l1_loss(a, b, reduction="none", beta=0.1),
}



def reconstruction_error(restored: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                         loss_cfg: LossConfig) -> torch.Tensor:
    """Mean error over the corrupted region (``weight: (B, 1, H, W)``) or all pixels,
    pooled over the batch, or (``loss.reduction: per_image_log``) the mean over images of
    the log of each image's error."""
    err = _ELEMENTWISE[loss_cfg.kind](restored.float(), clean.float())  # (B, C, H, W)
    pooled = loss_cfg.reduction == "pooled"
    dims = (0, 1, 2, 3) if pooled else (1, 2, 3)  # pooled: a scalar; per image: (B,)
    if loss_cfg.region == "all":
        mean = err.mean(dims)
    else:
        w = weight.to(err.dtype).expand_as(err)
        mean = (err * w).sum(dims) / w.sum(dims).clamp_min(1.0)
    if pooled:
        return mean
    # the floor keeps the gradient of a (nearly) perfect image finite
    return torch.log(mean + LOG_ERROR_FLOOR).mean()


def pair_noise_level(corrupted: torch.Tensor, clean: torch.Tensor, gain: float) -> torch.Tensor:
    """Each image's noise sigma in pixels, read off a (normalised) noisy/clean pair:
    ``(B, C, H, W) x 2 -> (B,)``. ``gain`` is the mean over channels of 1/std^2, which turns
    a pixel variance into a normalised one. The noise is not clipped, so this is within about
    2 % for 32x32 colour crops."""
    var = (corrupted - clean).detach().float().pow(2).mean((1, 2, 3))  # normalised units
    return (var / gain).sqrt()
