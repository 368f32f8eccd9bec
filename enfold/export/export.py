"""``enfold export``: one checkpoint, one target, one format -> an artifact and its sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from enfold.artifact.formats import BY_NAME, EXPORT_FORMATS, PRECISIONS, Format, format_named
from enfold.artifact.sidecar import sidecar_path
from enfold.errors import EnfoldError
from enfold.export.graphs import build_spec
from enfold.output_files import clear_outputs, refuse_existing

# what --format takes: the runnable artifacts and safetensors (the encoder as timm weights)
FORMATS = EXPORT_FORMATS


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"1:8:32"`` -> (1, 8, 32); ``"8"`` -> (8, 8, 8)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError as exc:
        raise EnfoldError(f"--batch {text!r} must be MIN:OPT:MAX (e.g. 1:8:32)") from exc
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise EnfoldError(f"--batch {text!r} must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
    return parts[0], parts[1], parts[2]


def artifact_path(out_dir: Path, target: str, fmt: str, precision: str,
                  steps: int | None, grid_shifts: int = 1, step_decay: float = 1.0) -> Path:
    name = target + (f"-k{steps}" if target == "restorer" and steps else "")
    name += f"-g{grid_shifts}" if grid_shifts > 1 else ""
    name += f"-d{step_decay:g}" if step_decay != 1 else ""
    name += "-fp16" if precision == "fp16" else ""
    return out_dir / (name + BY_NAME[fmt].suffix)


def export_artifact(checkpoint: str, target: str, fmt: str, out_dir: str | Path,
                    steps: int | None = None, task: str | None = None, batch: str = "1:8:32",
                    precision: str = "fp32", validate: bool = True,
                    triton_repo: str | Path | None = None,
                    grid_shifts: int | None = None, overwrite: bool = False,
                    step_decay: float | None = None) -> dict[str, Any]:
    """Export and (unless ``validate=False``) validate; returns the paths and the report.

    Every export rewrites the folder's model card (``README.md``); ``triton_repo`` also writes
    the artifact's Triton model repository entry there. An artifact or sidecar that already
    exists is refused before any work unless ``overwrite``. An export that fails (its validation
    included) leaves no artifact or sidecar behind. The checkpoint is read and hashed once, for
    the trace, the validation and the card alike.
    """
    from enfold.checkpoint.load import open_checkpoint
    from enfold.export.model_card import check_card_writable, save_validation, write_model_card

    form = format_named(fmt)
    check_card_writable(out_dir)
    if not form.sidecar:  # timm weights: a folder for timm code, not a runnable artifact
        return _export_weights(form, checkpoint, target, out_dir, precision, validate,
                               triton_repo, overwrite)
    if precision not in PRECISIONS:
        raise EnfoldError(f"unknown --precision {precision!r}; use {' or '.join(PRECISIONS)}")
    if precision not in form.precisions:
        wider = [f.name for f in BY_NAME.values() if f.exporter and precision in f.precisions]
        raise EnfoldError(f"{form.name} artifacts are {' or '.join(form.precisions)}; use "
                          f"--format {' or '.join(wider)} for {precision}")
    lo, opt, hi = parse_batch(batch)
    if form.export_checks:  # fail fast, before any tracing, when the format cannot run here
        form.check()
    opened = open_checkpoint(checkpoint)
    spec = build_spec(opened, target, steps, task, grid_shifts=grid_shifts,
                      step_decay=step_decay)
    out_dir = Path(out_dir)
    path = artifact_path(out_dir, target, fmt, precision, spec.metadata.get("steps"),
                         spec.metadata.get("grid_shifts", 1),
                         spec.metadata.get("step_decay", 1.0))
    planned = [path, sidecar_path(path)]
    for other in form.beside:  # e.g. the ONNX model a TensorRT engine is built from
        beside = path.with_suffix(BY_NAME[other].suffix)
        planned += [beside, sidecar_path(beside)]
    refuse_existing(planned, overwrite)
    clear_outputs(planned)  # the exporters open these paths themselves: never through a link
    with _removed_on_failure(planned):
        result = _write_and_validate(spec, opened, path, form, precision, (lo, opt, hi),
                                     validate)
    save_validation(path, result.get("validation"))
    result["card"] = str(write_model_card(out_dir, opened))
    if triton_repo is not None:
        from enfold.export.triton_repo import write_triton_entry

        result["triton"] = write_triton_entry(path, triton_repo, (lo, opt, hi))
    return result


@contextmanager
def _removed_on_failure(paths: list[Path]) -> Iterator[None]:
    """Remove ``paths`` (and any validation report beside them) when the block fails: an
    artifact that failed validation, or was half written, must not stay to be served."""
    try:
        yield
    except BaseException as exc:
        for path in paths:
            for stale in (path, Path(str(path) + ".validation.json")):
                with suppress(OSError):
                    stale.unlink()
        if isinstance(exc, EnfoldError) and exc.args:
            exc.args = (f"{exc.args[0]} (the export's files were removed: "
                        f"{', '.join(p.name for p in paths)})", *exc.args[1:])
        raise


def _export_weights(form: Format, checkpoint: str, target: str, out_dir: str | Path,
                    precision: str, validate: bool, triton_repo: str | Path | None,
                    overwrite: bool) -> dict[str, Any]:
    """``--format safetensors``: the encoder as timm weights, and the folder's model card (the
    checkpoint read and hashed once for both)."""
    from enfold.checkpoint.load import open_checkpoint
    from enfold.export.model_card import save_validation, write_model_card
    from enfold.export.timm_weights import CONFIG_NAME, WEIGHTS_NAME

    if triton_repo is not None:
        served = ", ".join(f.name for f in BY_NAME.values() if f.triton)
        raise EnfoldError(f"--triton-repo takes {served} exports; safetensors weights are for "
                          "timm code, not Triton")
    if precision not in form.precisions:
        raise EnfoldError("timm weights are written as trained, in fp32: drop --precision "
                          "(timm casts them with model.half() if you need fp16)")
    planned = [Path(out_dir) / WEIGHTS_NAME, Path(out_dir) / CONFIG_NAME]
    refuse_existing(planned, overwrite)
    opened = open_checkpoint(checkpoint)
    with _removed_on_failure(planned):
        result = form.exporter_function()(opened, out_dir, target, validate)
    save_validation(result["artifact"], result.get("validation"))
    result["card"] = str(write_model_card(out_dir, opened))
    return result


def _write_and_validate(spec: Any, checkpoint: Any, path: Path, form: Format, precision: str,
                        profile: tuple[int, int, int], validate: bool) -> dict[str, Any]:
    """Write the artifact and its sidecar at ``path`` with the format's exporter; validate it
    unless told not to."""
    form.exporter_function()(spec, path, precision, profile)
    result: dict[str, Any] = {"artifact": str(path), "sidecar": str(sidecar_path(path))}
    if validate:
        from enfold.export.validate import validate_artifact

        # an artifact built for a batch profile is checked at its ends and its optimum
        batches = tuple(sorted(set(profile))) if form.batch_profile else (1, 3, 8)
        result["validation"] = validate_artifact(path, checkpoint, batches=batches,
                                                 device=form.validate_device)
    return result
