"""Pretext tasks: corruptions that the energy model learns to undo."""

from enfold.corrupt import gray, lowres, mask, noise, shuffle  # noqa: F401  (registration)
from enfold.corrupt.batch import corrupt_batch
from enfold.corrupt.build import build_corruption, build_tasks
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.mix import Mix
from enfold.corrupt.registry import Corruption, available, build_one, register

__all__ = [
    "Corruption",
    "CorruptionContext",
    "Mix",
    "available",
    "build_corruption",
    "build_one",
    "build_tasks",
    "corrupt_batch",
    "register",
]
