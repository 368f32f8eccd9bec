"""Build the corruptions a config asks for: the training one (a task or a mixture) and each task
on its own (for per-task evaluation)."""

from __future__ import annotations

from enfold.config import CorruptConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.mix import Mix, mixture_probs
from enfold.corrupt.registry import Corruption, available, build_one
from enfold.errors import ConfigError


def build_tasks(corrupt_cfg: CorruptConfig, context: CorruptionContext
                ) -> dict[str, Corruption]:
    """Each task of ``corrupt.tasks`` on its own, in config order."""
    tasks = list(corrupt_cfg.tasks)
    if not tasks:
        raise ConfigError("corrupt.tasks is empty; name at least one of " + ", ".join(available()))
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"corrupt.tasks names a task twice: {tasks}; use corrupt.weights to "
                          "make a task more frequent")
    return {name: build_one(name, getattr(corrupt_cfg, name, None), context) for name in tasks}


def build_corruption(corrupt_cfg: CorruptConfig, context: CorruptionContext) -> Corruption:
    """The training corruption: the one task of ``corrupt.tasks``, or a per-sample mixture of
    them with ``corrupt.weights``."""
    parts = build_tasks(corrupt_cfg, context)
    if len(parts) == 1:
        mixture_probs(corrupt_cfg.weights, list(parts))  # a one-task config's weights must fit too
        return next(iter(parts.values()))
    return Mix(parts, corrupt_cfg.weights)
