"""Mixture of pretext tasks: each sample gets one task, drawn with the given weights."""

from __future__ import annotations

import torch

from enfold.corrupt.registry import Corrupted, Corruption
from enfold.errors import ConfigError


def mixture_probs(weights: list[float] | None, names: list[str]) -> torch.Tensor:
    """``corrupt.weights`` as probabilities over ``names`` (uniform when None), checked here
    only: one non-negative number per task, not all zero."""
    if weights is None:
        weights = [1.0] * len(names)
    if len(weights) != len(names) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"corrupt.weights must hold {len(names)} non-negative numbers (one per task in "
            f"corrupt.tasks: {names}), got {weights}"
        )
    return torch.tensor(weights, dtype=torch.float64) / sum(weights)


class Mix:
    """Pick one corruption per sample with probability proportional to its weight."""

    name = "mix"

    def __init__(self, parts: dict[str, Corruption], weights: list[float] | None = None):
        self.parts = list(parts.values())
        self.names = list(parts)
        self.probs = mixture_probs(weights, self.names)

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        choice = int(torch.multinomial(self.probs, 1, generator=generator))
        return self.parts[choice](img, generator)
