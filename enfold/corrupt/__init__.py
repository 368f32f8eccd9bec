"""Pretext tasks: corruptions that the energy model learns to undo."""

from enfold.corrupt import gray, lowres, mask, noise, shuffle  # noqa: F401  (registration)
from enfold.corrupt.mix import Mix
from enfold.corrupt.registry import (
    Corruption,
    available,
    build_corruption,
    build_one,
    build_tasks,
    register,
)

__all__ = [
    "Corruption",
    "Mix",
    "available",
    "build_corruption",
    "build_one",
    "build_tasks",
    "register",
]
