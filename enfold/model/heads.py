"""Energy heads: token features ``(B, L, D)`` -> one scalar energy per image ``(B,)``."""

from __future__ import annotations

import torch
from torch import nn

from enfold.errors import ConfigError
from enfold.model.backbone import FlatLinear


class SquaredNormEnergy(nn.Module):
    """Half the mean squared token norm: E = 0.5 * mean_t ||h_t||^2. No parameters of its own."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return 0.5 * tokens.pow(2).sum(-1).mean(-1)


class LinearEnergy(nn.Module):
    """A learned linear energy per token, averaged: E = mean_t (w . h_t).

    No bias: a constant shift of the energy leaves its gradient, the restoration, unchanged.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = FlatLinear(dim, 1, bias=False)
        nn.init.normal_(self.proj.weight, std=dim**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens).squeeze(-1).mean(-1)


class ReconstructionEnergy(nn.Module):
    """E(x) = 0.5 * ||x - N(x)||^2 summed per pixel, averaged per image: the gradient-step
    denoiser's energy, with N the same ViT followed by a per-token linear map back to pixels.

    One step of size 1 gives ``N(x) + J_N^T (x - N(x))``: the network's own reconstruction plus
    a correction, so this head lets the input gradient act as a decoder's output. ``forward``
    takes the tokens and the image they came from. The map starts small rather than at zero: at
    zero the reconstruction, and every gradient through it, would vanish.
    """

    needs_image = True

    def __init__(self, dim: int, patch: int, in_chans: int):
        super().__init__()
        self.patch, self.in_chans = patch, in_chans
        self.proj = FlatLinear(dim, patch * patch * in_chans)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def reconstruct(self, tokens: torch.Tensor, size: int) -> torch.Tensor:
        """N(x): tokens ``(B, L, D)`` -> image ``(B, C, size, size)``."""
        b, p, c, g = tokens.shape[0], self.patch, self.in_chans, size // self.patch
        pix = self.proj(tokens).reshape(b, g, g, p, p, c)  # one p x p x C patch per token
        return pix.permute(0, 5, 1, 3, 2, 4).reshape(b, c, size, size)

    def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        residual = x - self.reconstruct(tokens, x.shape[-1])  # (B, C, H, W)
        return 0.5 * residual.pow(2).flatten(1).sum(-1) / (x.shape[-1] * x.shape[-2])


ENERGY_HEADS = {"sqnorm": SquaredNormEnergy, "linear": LinearEnergy,
                "recon": ReconstructionEnergy}


def build_energy_head(name: str, dim: int, patch: int = 1, in_chans: int = 3) -> nn.Module:
    """Build energy head ``name`` for tokens of width ``dim`` (``patch`` and ``in_chans``: the
    patch size and channels the ``recon`` head maps back to)."""
    if name == "sqnorm":
        return SquaredNormEnergy()
    if name == "linear":
        return LinearEnergy(dim)
    if name == "recon":
        return ReconstructionEnergy(dim, patch, in_chans)
    raise ConfigError(f"unknown model.energy_head '{name}'; use one of {sorted(ENERGY_HEADS)}")
