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


ENERGY_HEADS = {"sqnorm": SquaredNormEnergy, "linear": LinearEnergy}


def build_energy_head(name: str, dim: int) -> nn.Module:
    """Build energy head ``name`` for tokens of width ``dim``."""
    if name == "sqnorm":
        return SquaredNormEnergy()
    if name == "linear":
        return LinearEnergy(dim)
    raise ConfigError(f"unknown model.energy_head '{name}'; use one of {sorted(ENERGY_HEADS)}")
