"""The JSON sidecar beside every artifact (``<artifact>.json``): the metadata every backend
reads (target, sizes, normalisation, class names, corruption settings, checkpoint hash) and the
artifact's own sha256.

Integrity: reading a sidecar checks its structure and values (std positive, sizes positive,
one class name per class); :func:`verify_artifact` checks the artifact's sha256 against the
sidecar; :func:`check_agrees` compares the fields that change results with another source of
truth (the metadata inside the artifact, or the checkpoint). A hand-edited sidecar is a clear
error, never a silently different answer.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from enfold.artifact.formats import FORMATS
from enfold.artifact.targets import TARGETS
from enfold.errors import EnfoldError
from enfold.output_files import write_output

# Sidecar fields that change what an artifact computes or how its inputs and outputs are read.
RESULT_KEYS = ("target", "img_size", "in_chans", "mean", "std", "patch_size", "class_names",
               "steps", "step_sizes", "task", "tasks", "corrupt", "checkpoint_sha256")
REQUIRED = ("format", "target", "img_size", "in_chans", "mean", "std")
REEXPORT = "export it again with `enfold export`"


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as the sidecar of ``artifact`` (which must be written already), with the
    artifact's sha256; returns its path."""
    from enfold.digest import file_sha256

    side = sidecar_path(artifact)
    write_output(side, json.dumps({**meta, "sha256": file_sha256(artifact)}, indent=2))
    return side


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The metadata of ``artifact``, checked (:func:`check_metadata`); a clear error when the
    sidecar is missing, not JSON or holds impossible values."""
    side = sidecar_path(artifact)
    if not side.is_file():
        raise EnfoldError(f"{side} not found: enfold artifacts travel with a JSON sidecar; "
                          "re-export with `enfold export`")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EnfoldError(f"{side} is not a readable JSON sidecar ({exc}); {REEXPORT}") from exc
    check_metadata(meta, str(side))
    return meta


def _numbers(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_metadata(meta: Any, where: str) -> None:
    """Raise :class:`EnfoldError` naming the field unless ``meta`` is a usable artifact
    description: known format and target, positive sizes, finite mean, positive std, class
    names (classifiers), steps and one step size per step (restorers)."""
    def bad(what: str) -> EnfoldError:
        return EnfoldError(f"{where}: {what}; {REEXPORT} (or restore the sidecar)")

    if not isinstance(meta, dict):
        raise bad(f"a sidecar is a JSON object, not {type(meta).__name__}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if meta["format"] not in FORMATS:
        raise bad(f"unknown format {meta['format']!r} (one of {', '.join(FORMATS)})")
    if meta["target"] not in TARGETS:
        raise bad(f"unknown target {meta['target']!r} (one of {', '.join(TARGETS)})")
    for key in ("img_size", "patch_size", "steps", "fixed_batch"):
        if key in meta and not _positive_int(meta[key]):
            raise bad(f"{key} must be a positive integer, got {meta[key]!r}")
    if meta["in_chans"] not in (1, 3) or isinstance(meta["in_chans"], bool):
        raise bad(f"in_chans must be 1 or 3, got {meta['in_chans']!r}")
    for key in ("mean", "std"):
        if not _numbers(meta[key]) or len(meta[key]) < meta["in_chans"]:
            raise bad(f"{key} must list {meta['in_chans']} finite numbers, got {meta[key]!r}")
    if any(v <= 0 for v in meta["std"]):
        raise bad(f"std must be positive (it divides the pixels), got {meta['std']!r}")
    names = meta.get("class_names")
    if meta["target"] == "classifier" or names is not None:
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)):
            raise bad(f"class_names must list the class names, got {names!r}")
        if len(set(names)) != len(names):
            raise bad("class_names holds the same name twice")
    if meta.get("grid_shifts", 1) not in (1, 4):
        raise bad(f"grid_shifts must be 1 or 4, got {meta['grid_shifts']!r}")
    if meta["target"] == "restorer":
        if "steps" not in meta:
            raise bad("a restorer needs steps")
        sizes = meta.get("step_sizes")
        if sizes is not None and (not _numbers(sizes) or len(sizes) != meta["steps"]):
            raise bad(f"step_sizes must list {meta['steps']} finite numbers, got {sizes!r}")


def verify_artifact(artifact: str | Path, meta: dict[str, Any]) -> None:
    """The artifact is the file its sidecar describes: its sha256 matches the sidecar's (a
    sidecar from before sha256 was recorded gives a warning)."""
    from enfold.digest import file_sha256

    want = meta.get("sha256")
    if want is None:  # exported before sidecars recorded it: still usable, said once per load
        warnings.warn(f"{sidecar_path(artifact)} records no sha256 of {artifact} (exported by "
                      f"an older enfold), so the file cannot be checked; {REEXPORT}",
                      UserWarning, stacklevel=2)
        return
    if not isinstance(want, str) or file_sha256(artifact) != want:
        raise EnfoldError(f"{artifact} is not the file its sidecar describes (sha256 differs): "
                          f"it was changed or replaced after export; {REEXPORT}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_agrees(meta: dict[str, Any], truth: dict[str, Any], what: str,
                 where: str) -> None:
    """Raise :class:`EnfoldError` naming every field of :data:`RESULT_KEYS` in which ``meta``
    (a sidecar) differs from ``truth`` (``what``: e.g. the metadata inside the artifact).
    Fields ``truth`` does not hold are not compared."""
    differ = [k for k in RESULT_KEYS if k in truth and
              _canonical(meta.get(k)) != _canonical(truth[k])]
    if differ:
        raise EnfoldError(f"{where} disagrees with {what} on {', '.join(differ)}: the sidecar "
                          f"was edited or belongs to another export; {REEXPORT}")
