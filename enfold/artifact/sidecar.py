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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from enfold.artifact.formats import BY_BACKEND, FORMATS
from enfold.artifact.targets import TARGETS
from enfold.errors import SidecarError
from enfold.output_files import write_output

# Sidecar fields that change what an artifact computes or how its inputs and outputs are read.
RESULT_KEYS = ("target", "img_size", "in_chans", "mean", "std", "patch_size", "class_names",
               "steps", "step_sizes", "step_decay", "task", "tasks", "corrupt",
               "checkpoint_sha256")
REQUIRED = ("format", "target", "img_size", "in_chans", "mean", "std")
REEXPORT = "export it again with `enfold export`"
# what PyTorch eager on a checkpoint describes itself as (a session's metadata, never a file)
CHECKPOINT_FORMAT = BY_BACKEND["torch"].name  # a checkpoint, run by PyTorch eager
# JSON lists held as tuples, so a sidecar cannot change after it was checked
_TUPLES = ("mean", "std", "tasks", "class_names", "step_sizes", "restorer_inputs",
           "batch_profile")


@dataclass(frozen=True)
class Sidecar:
    """An artifact's metadata, the one typed view every backend, the server and the export
    read. :meth:`read` / :meth:`from_dict` check it; :meth:`to_dict` / :meth:`write` give
    back exactly the JSON object it came from. Fields absent from older sidecars are None."""

    # what the artifact is and takes
    format: str
    target: str
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str | None = None
    patch_size: int | None = None
    arch: str | None = None
    preprocess: str | None = None
    class_names: tuple[str, ...] | None = None
    # where it came from
    enfold_version: str | None = None
    torch_version: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_stage: str | None = None
    # the pretext tasks and their settings ({task: {setting: value}})
    tasks: tuple[str, ...] | None = None
    corrupt: dict[str, dict[str, Any]] | None = None
    # the restorer
    steps: int | None = None
    trained_steps: int | None = None
    task: str | None = None
    step_sizes: tuple[float, ...] | None = None
    restorer_inputs: tuple[str, ...] | None = None
    noise_ref: float | None = None
    grid_shifts: int | None = None
    step_decay: float | None = None  # steps beyond the trained K shrink by it; absent: 1
    # "energy" (K steps down the energy) or a learned peer ("direct_vit", "dncnn": one forward
    # pass); absent from sidecars written before peers could be exported, all of them energy
    restorer: str | None = None
    # the file's format
    opset: int | None = None
    input: str | None = None
    output: str | None = None
    fixed_batch: int | None = None
    batch_profile: tuple[int, int, int] | None = None
    pooling: dict[str, Any] | None = None  # timm weights (config.json's "enfold" entry)
    sha256: str | None = None  # of the artifact file

    @classmethod
    def from_dict(cls, meta: Any, where: str = "the sidecar",
                  formats: tuple[str, ...] = FORMATS, check: bool = True) -> Sidecar:
        """The checked sidecar of the JSON object ``meta`` read from ``where``; a
        :class:`SidecarError` naming the file and every unknown or missing field, or the first
        impossible value. ``formats``: the formats accepted (artifact files by default);
        ``check=False`` (a checkpoint describing itself, whose values are the truth) checks
        the fields' names only."""
        if not isinstance(meta, dict):
            raise _bad(where, f"a sidecar is a JSON object, not {type(meta).__name__}")
        unknown = sorted(set(meta) - FIELDS)
        if unknown:
            raise _bad(where, f"unknown field{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)} (written by another enfold?)")
        if check:
            check_metadata(meta, where, formats)
        else:
            missing = [k for k in REQUIRED if k not in meta]
            if missing:
                raise _bad(where, f"missing {', '.join(missing)}")
        return cls(**{k: tuple(v) if k in _TUPLES and v is not None else v
                      for k, v in meta.items()})

    @classmethod
    def read(cls, artifact: str | Path) -> Sidecar:
        """The checked sidecar of ``artifact`` (``<artifact>.json``)."""
        side = sidecar_path(artifact)
        if not side.is_file():
            raise SidecarError(f"{side} not found: enfold artifacts travel with a JSON sidecar; "
                               "re-export with `enfold export`")
        try:
            meta = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SidecarError(f"{side} is not a readable JSON sidecar ({exc}); "
                               f"{REEXPORT}") from exc
        return cls.from_dict(meta, str(side))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field that is set, lists as lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if f.name in _TUPLES else value
        return out

    def write(self, artifact: str | Path) -> Path:
        """Write this as the sidecar of ``artifact`` (which must be written already), with
        the artifact's sha256; returns its path."""
        from enfold.digest import file_sha256

        side = sidecar_path(artifact)
        body = {**self.to_dict(), "sha256": file_sha256(artifact)}
        write_output(side, json.dumps(body, indent=2))
        return side


FIELDS = frozenset(f.name for f in fields(Sidecar))


def _bad(where: str, what: str) -> SidecarError:
    return SidecarError(f"{where}: {what}; {REEXPORT} (or restore the sidecar)")


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, meta: Sidecar | dict[str, Any]) -> Path:
    """Check ``meta`` and write it as the sidecar of ``artifact`` (:meth:`Sidecar.write`)."""
    if isinstance(meta, dict):
        meta = Sidecar.from_dict({k: v for k, v in meta.items() if k != "sha256"},
                                 f"the sidecar of {artifact}")
    return meta.write(artifact)


def read_sidecar(artifact: str | Path) -> Sidecar:
    """The checked metadata of ``artifact`` (:meth:`Sidecar.read`)."""
    return Sidecar.read(artifact)


def _numbers(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_metadata(meta: dict[str, Any], where: str, formats: tuple[str, ...] = FORMATS) -> None:
    """Raise :class:`SidecarError` naming the field unless ``meta`` is a usable artifact
    description: required fields present, known format and target, positive sizes, finite
    mean, positive std, class names (classifiers), steps and one step size per step
    (restorers)."""
    def bad(what: str) -> SidecarError:
        return _bad(where, what)

    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise bad(f"missing {', '.join(missing)} (required field{'s' if len(missing) > 1 else ''})")
    if meta["format"] not in formats:
        raise bad(f"unknown format {meta['format']!r} (one of {', '.join(formats)})")
    if meta["target"] not in TARGETS:
        raise bad(f"unknown target {meta['target']!r} (one of {', '.join(TARGETS)})")
    for key in ("img_size", "patch_size", "steps", "fixed_batch"):
        if meta.get(key) is not None and not _positive_int(meta[key]):
            raise bad(f"{key} must be a positive integer, got {meta[key]!r}")
    if meta["in_chans"] not in (1, 3) or isinstance(meta["in_chans"], bool):
        raise bad(f"in_chans must be 1 or 3, got {meta['in_chans']!r}")
    for key in ("mean", "std"):
        if not _numbers(meta[key]) or len(meta[key]) < meta["in_chans"]:
            raise bad(f"{key} must list {meta['in_chans']} finite numbers, got {meta[key]!r}")
    if any(v <= 0 for v in meta["std"]):
        raise bad(f"std must be positive (it divides the pixels), got {meta['std']!r}")
    _check_lists(meta, bad)


def _check_lists(meta: dict[str, Any], bad) -> None:
    """Class names, grid shifts, steps and step sizes, and the other list fields."""
    names = meta.get("class_names")
    if meta["target"] == "classifier" or names is not None:
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)):
            raise bad(f"class_names must list the class names, got {names!r}")
        if len(set(names)) != len(names):
            raise bad("class_names holds the same name twice")
    if meta.get("grid_shifts", 1) not in (1, 4):
        raise bad(f"grid_shifts must be 1 or 4, got {meta['grid_shifts']!r}")
    decay = meta.get("step_decay", 1)
    if not _numbers([decay]) or not 0 < decay <= 1:
        raise bad(f"step_decay must be a number in (0, 1], got {decay!r}")
    if meta["target"] == "restorer":
        if "steps" not in meta:
            raise bad("a restorer needs steps")
        sizes = meta.get("step_sizes")
        if sizes is not None and (not _numbers(sizes) or len(sizes) != meta["steps"]):
            raise bad(f"step_sizes must list {meta['steps']} finite numbers, got {sizes!r}")
        kind = meta.get("restorer", "energy")
        if not isinstance(kind, str):
            raise bad(f"restorer must name the restorer kind, got {kind!r}")
        if kind != "energy" and meta["steps"] != 1:
            raise bad(f"a {kind} peer restores in one forward pass, got steps {meta['steps']!r}")
    for key in ("tasks", "restorer_inputs", "batch_profile"):
        if meta.get(key) is not None and not isinstance(meta[key], list):
            raise bad(f"{key} must be a list, got {meta[key]!r}")
    if meta.get("corrupt") is not None and not isinstance(meta["corrupt"], dict):
        raise bad(f"corrupt must map each task to its settings, got {meta['corrupt']!r}")


def verify_artifact(artifact: str | Path, meta: Sidecar) -> None:
    """The artifact is the file its sidecar describes: its sha256 matches the sidecar's (a
    sidecar from before sha256 was recorded gives a warning)."""
    from enfold.digest import file_sha256

    want = meta.sha256
    if want is None:  # exported before sidecars recorded it: still usable, said once per load
        warnings.warn(f"{sidecar_path(artifact)} records no sha256 of {artifact} (exported by "
                      f"an older enfold), so the file cannot be checked; {REEXPORT}",
                      UserWarning, stacklevel=2)
        return
    if not isinstance(want, str) or file_sha256(artifact) != want:
        raise SidecarError(f"{artifact} is not the file its sidecar describes (sha256 differs): "
                          f"it was changed or replaced after export; {REEXPORT}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_agrees(meta: Sidecar, truth: dict[str, Any], what: str,
                 where: str) -> None:
    """Raise :class:`SidecarError` naming every field of :data:`RESULT_KEYS` in which
    ``meta`` (a sidecar) differs from ``truth`` (``what``: e.g. the metadata inside the
    artifact). Fields ``truth`` does not hold are not compared."""
    mine = meta.to_dict()
    differ = [k for k in RESULT_KEYS if k in truth and
              _canonical(mine.get(k)) != _canonical(truth[k])]
    if differ:
        raise SidecarError(f"{where} disagrees with {what} on {', '.join(differ)}: the sidecar "
                          f"was edited or belongs to another export; {REEXPORT}")
