"""``enfold export``: one checkpoint, one target, one format -> an artifact and its sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from enfold.artifact.formats import FORMATS as ARTIFACT_FORMATS
from enfold.artifact.formats import SUFFIX
from enfold.artifact.sidecar import sidecar_path
from enfold.errors import EnfoldError
from enfold.export.graphs import build_spec
from enfold.output_files import clear_outputs, refuse_existing

# safetensors: the encoder as timm weights (export/timm_weights.py), not a runnable artifact
FORMATS = (*ARTIFACT_FORMATS, "safetensors")


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
                  steps: int | None, grid_shifts: int = 1) -> Path:
    name = target + (f"-k{steps}" if target == "restorer" and steps else "")
    name += f"-g{grid_shifts}" if grid_shifts > 1 else ""
    name += "-fp16" if precision == "fp16" else ""
    return out_dir / (name + SUFFIX[fmt])


def export_artifact(checkpoint: str, target: str, fmt: str, out_dir: str | Path,
                    steps: int | None = None, task: str | None = None, batch: str = "1:8:32",
                    precision: str = "fp32", validate: bool = True,
                    triton_repo: str | Path | None = None,
                    grid_shifts: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export and (unless ``validate=False``) validate; returns the paths and the report.

    Every export rewrites the folder's model card (``README.md``); ``triton_repo`` also writes
    the artifact's Triton model repository entry there. An artifact or sidecar that already
    exists is refused before any work unless ``overwrite``. An export that fails (its validation
    included) leaves no artifact or sidecar behind. The checkpoint is read and hashed once, for
    the trace, the validation and the card alike.
    """
    from enfold.checkpoint.load import open_checkpoint
    from enfold.export.model_card import check_card_writable, save_validation, write_model_card

    if fmt not in FORMATS:
        raise EnfoldError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_card_writable(out_dir)
    if fmt == "safetensors":
        if triton_repo is not None:
            raise EnfoldError("--triton-repo takes onnx, tensorrt or torchscript exports; "
                              "safetensors weights are for timm code, not Triton")
        if precision != "fp32":
            raise EnfoldError("timm weights are written as trained, in fp32: drop --precision "
                              "(timm casts them with model.half() if you need fp16)")
        from enfold.export.timm_weights import CONFIG_NAME, WEIGHTS_NAME, export_timm_weights

        planned = [Path(out_dir) / WEIGHTS_NAME, Path(out_dir) / CONFIG_NAME]
        refuse_existing(planned, overwrite)
        opened = open_checkpoint(checkpoint)
        with _removed_on_failure(planned):
            result = export_timm_weights(opened, out_dir, target, validate)
        save_validation(result["artifact"], result.get("validation"))
        result["card"] = str(write_model_card(out_dir, opened))
        return result
    if precision not in ("fp32", "fp16"):
        raise EnfoldError(f"unknown --precision {precision!r}; use fp32 or fp16")
    if fmt == "torchscript" and precision != "fp32":
        raise EnfoldError("TorchScript artifacts are fp32; use --format onnx or tensorrt for fp16")
    lo, opt, hi = parse_batch(batch)
    if fmt == "tensorrt":  # fail fast, before any tracing, when TensorRT cannot run here
        from enfold.artifact.tensorrt_engine import import_tensorrt, require_gpu

        import_tensorrt()
        require_gpu()
    opened = open_checkpoint(checkpoint)
    spec = build_spec(opened, target, steps, task, grid_shifts=grid_shifts)
    out_dir = Path(out_dir)
    path = artifact_path(out_dir, target, fmt, precision, spec.metadata.get("steps"),
                         spec.metadata.get("grid_shifts", 1))
    planned = [path, sidecar_path(path)]
    if fmt == "tensorrt":  # the engine is built from an ONNX file written beside it
        planned += [path.with_suffix(".onnx"), sidecar_path(path.with_suffix(".onnx"))]
    refuse_existing(planned, overwrite)
    clear_outputs(planned)  # the exporters open these paths themselves: never through a link
    with _removed_on_failure(planned):
        result = _write_and_validate(spec, opened, path, fmt, precision, (lo, opt, hi),
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


def _write_and_validate(spec: Any, checkpoint: Any, path: Path, fmt: str, precision: str,
                        profile: tuple[int, int, int], validate: bool) -> dict[str, Any]:
    """Write the artifact and its sidecar at ``path``; validate it unless told not to."""
    lo, opt, hi = profile
    out_dir = path.parent
    if fmt == "torchscript":
        from enfold.export.torchscript_export import export_torchscript

        export_torchscript(spec, path, batch=opt)
    else:
        from enfold.artifact.sidecar import write_sidecar
        from enfold.export.onnx_export import export_onnx

        onnx_path = path.with_suffix(".onnx")
        export_onnx(spec, onnx_path, precision)
        if fmt == "tensorrt":
            from enfold.export.tensorrt_build import build_engine

            build_engine(onnx_path, path, (lo, opt, hi), (spec.in_chans, spec.img_size,
                                                          spec.img_size), precision,
                         timing_cache=out_dir / "timing.cache")
            write_sidecar(path, {**spec.metadata, "format": "tensorrt", "precision": precision,
                                 "batch_profile": [lo, opt, hi]})
    result: dict[str, Any] = {"artifact": str(path), "sidecar": str(sidecar_path(path))}
    if validate:
        from enfold.export.validate import validate_artifact

        batches = (1, 3, 8) if fmt != "tensorrt" else tuple(sorted({lo, opt, hi}))
        result["validation"] = validate_artifact(path, checkpoint, batches=batches,
                                                 device="cuda" if fmt == "tensorrt" else "cpu")
    return result
