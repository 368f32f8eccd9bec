"""Mixture of pretext tasks: each sample gets one task, drawn with the given weights."""

from __future__ import annotations

import torch

from enfold.corrupt.registry import Corrupted, Corruption
from enfold.errors import ConfigError


class Mix:
    """Pick one corruption per sample with probability proportional to its weight."""

    name = "mix"

    def __init__(self, parts: dict[str, Corruption], weights: list[float] | None = None):
        if weights is None:
            weights = [1.0] * len(parts)
        if len(weights) != len(parts) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"corrupt.weights must hold {len(parts)} non-negative numbers (one per task in "
                f"corrupt.tasks: {list(parts)}), got {weights}"
            )
        self.parts = list(parts.values())
        self.names = list(parts)
        self.probs = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        choice = int(torch.multinomial(self.probs, 1, generator=generator))
        return self.parts[choice](img, generator)
