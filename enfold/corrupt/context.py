"""What every pretext task may need to know about the model and data: built in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enfold.config import Config


@dataclass(frozen=True)
class CorruptionContext:
    """The model's patch size and channels and the data mean (in pixel space, [0, 1])."""

    patch_size: int
    in_chans: int
    mean: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: Config) -> CorruptionContext:
        """The context of a resolved run config (``model`` and ``data`` sections)."""
        return cls(cfg.model.patch_size, cfg.model.in_chans, tuple(cfg.data.mean))

    @classmethod
    def from_metadata(cls, meta: Any) -> CorruptionContext:
        """The context an exported artifact records (its typed sidecar,
        ``enfold.artifact.sidecar.Sidecar``: ``patch_size``, ``in_chans``, ``mean``)."""
        return cls(int(meta.patch_size), int(meta.in_chans), tuple(meta.mean))
