"""One registry for every pretext task (corruption).

A corruption is a small callable ``(img, generator) -> (corrupted, clean, weight)`` working on one
image ``img: (C, H, W)`` in [0, 1] pixel space; ``weight: (1, H, W)`` is 1 where the image was
corrupted. All randomness comes from the generator, so a sample is reproducible from its seed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Protocol

import torch

from enfold.corrupt.context import CorruptionContext
from enfold.errors import ConfigError

Corrupted = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Corruption(Protocol):
    """The interface every pretext task implements."""

    name: str

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted: ...


# name -> factory(task_cfg, context): the task's config section and the model/data context
_REGISTRY: dict[str, Callable[[Any, CorruptionContext], Corruption]] = {}


def register(name: str) -> Callable:
    """Decorator: register a factory that builds corruption ``name`` from its config section."""

    def wrap(factory: Callable[[Any, CorruptionContext], Corruption]) -> Callable:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    """Names of all registered pretext tasks."""
    return sorted(_REGISTRY)


def build_one(name: str, cfg: Any, context: CorruptionContext) -> Corruption:
    """Build a single registered corruption from ``cfg`` (the ``corrupt.<name>`` section)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, available(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown pretext task '{name}'{hint}; available: {', '.join(available())}"
        )
    return _REGISTRY[name](cfg, context)


def patch_grid(img: torch.Tensor, patch: int) -> tuple[int, int]:
    """Number of patch rows and columns; the image must tile exactly."""
    _, h, w = img.shape
    if h % patch or w % patch:
        raise ConfigError(
            f"image size {h}x{w} is not divisible by the corruption patch size {patch}"
        )
    return h // patch, w // patch


def patch_mask_to_pixels(flags: torch.Tensor, rows: int, cols: int, patch: int) -> torch.Tensor:
    """Per-patch flags ``(rows*cols,)`` -> per-pixel weight ``(1, rows*patch, cols*patch)``."""
    grid = flags.float().reshape(1, rows, cols)
    return grid.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
