"""The JSON sidecar beside every artifact (``<artifact>.json``): the metadata every backend
reads (target, sizes, normalisation, class names, corruption settings, checkpoint hash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enfold.errors import EnfoldError


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as the sidecar of ``artifact``; returns its path."""
    side = sidecar_path(artifact)
    side.write_text(json.dumps(meta, indent=2))
    return side


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The metadata of ``artifact``, or a clear error when its sidecar is missing."""
    side = sidecar_path(artifact)
    if not side.is_file():
        raise EnfoldError(f"{side} not found: enfold artifacts travel with a JSON sidecar; "
                          "re-export with `enfold export`")
    return json.loads(side.read_text())
