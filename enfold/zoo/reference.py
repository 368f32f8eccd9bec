"""An artifact against its own recorded outputs on a fixed input: validation without the
checkpoint it came from.

``record_reference`` runs an artifact on fixed pixels and keeps input and output in one small
``.npz`` (with the artifact's sha256); ``check_reference`` runs the artifact again, the way
``enfold.runtime.load`` runs it, at batch 1 and at the whole batch, and fails beyond the
tolerance of its precision (the one ``enfold validate --checkpoint`` uses). timm weights
(``model.safetensors``) are run through ``timm.create_model``, as a timm user loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from enfold.artifact.formats import is_format
from enfold.errors import EnfoldError
from enfold.zoo.registry import file_sha256

REFERENCE_SUFFIX = ".reference.npz"


class ReferenceMismatch(EnfoldError):
    """The artifact's outputs differ from its recorded ones beyond tolerance."""


def reference_path(artifact: str | Path) -> Path:
    """Where the fixed input and recorded outputs of ``artifact`` live."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + REFERENCE_SUFFIX)


def _is_timm(artifact: Path) -> bool:
    return is_format(artifact, "safetensors")


def _timm_features(artifact: Path, pixels: np.ndarray) -> np.ndarray:
    """Pooled features of timm's model from the folder of ``artifact`` (timm's own loader)."""
    import torch

    from enfold.export.timm_weights import CONFIG_NAME, load_timm_model

    cfg = json.loads((artifact.parent / CONFIG_NAME).read_text())["pretrained_cfg"]
    c = pixels.shape[1]
    mean = np.asarray(cfg["mean"][:c], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["std"][:c], np.float32).reshape(1, -1, 1, 1)
    vit = load_timm_model(artifact.parent)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray((pixels - mean) / std, dtype=np.float32))
        return vit.forward_head(vit.forward_features(x), pre_logits=True).float().numpy()


def fixed_extras(names: list[str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """A restorer's other inputs for the fixed input: the noise level 0.1 for every image, a
    mask with every other 4x4 block missing."""
    b, _, h, w = pixels.shape
    extras: dict[str, np.ndarray] = {}
    if "sigma" in names:
        extras["sigma"] = np.full((b,), 0.1, np.float32)
    if "mask" in names:
        yy, xx = np.meshgrid(np.arange(h) // 4, np.arange(w) // 4, indexing="ij")
        extras["mask"] = np.broadcast_to(((yy + xx) % 2 == 0).astype(np.float32),
                                         (b, 1, h, w)).copy()
    return extras


def _outputs(artifact: Path, pixels: np.ndarray, backend: str,
             extras: dict[str, np.ndarray] | None = None
             ) -> tuple[str, str, np.ndarray, dict[str, np.ndarray]]:
    """``(target, precision, raw outputs, the restorer's other inputs)`` of ``artifact`` on
    ``pixels`` (``extras``: given, or :func:`fixed_extras` for what the restorer takes)."""
    if _is_timm(artifact):
        return "encoder", "fp32", _timm_features(artifact, pixels), {}
    from enfold.runtime import load

    session = load(artifact, backend=backend, device="cpu")
    target = session.metadata.target
    if extras is None:
        extras = fixed_extras(session.restorer_inputs if target == "restorer" else [], pixels)
    return (target, session.metadata.precision or "fp32",
            session.raw(target, pixels, **extras), extras)


def record_reference(artifact: str | Path, pixels: np.ndarray,
                     backend: str = "auto") -> Path:
    """Run ``artifact`` on ``pixels`` (float32 ``(B, C, S, S)`` in [0, 1]) and write the input,
    the raw outputs and the artifact's sha256 beside it; returns the file."""
    artifact = Path(artifact)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    target, precision, out, extras = _outputs(artifact, pixels, backend)
    path = reference_path(artifact)
    np.savez_compressed(path, input=pixels, output=out, target=np.array(target),
                        precision=np.array(precision),
                        artifact_sha256=np.array(file_sha256(artifact)),
                        **{f"extra_{k}": v for k, v in extras.items()})
    return path


def check_reference(artifact: str | Path, reference: str | Path | None = None,
                    tolerance: float | None = None, backend: str = "auto") -> dict[str, Any]:
    """Run ``artifact`` on the fixed input of ``reference`` (default: the one beside it) and
    compare with the recorded outputs; raise :class:`ReferenceMismatch` beyond tolerance."""
    from enfold.export.validate import TOLERANCE

    artifact = Path(artifact)
    reference = Path(reference) if reference is not None else reference_path(artifact)
    if not reference.is_file():
        raise EnfoldError(f"{reference} not found: recorded outputs come from "
                          "benchmarks/build_zoo.py; or validate against the checkpoint with "
                          "--checkpoint")
    try:
        with np.load(reference, allow_pickle=False) as data:
            pixels, recorded = data["input"], data["output"]
            recorded_sha = str(data["artifact_sha256"])
            extras = {k[len("extra_"):]: data[k] for k in data.files if k.startswith("extra_")}
    except (OSError, KeyError, ValueError) as exc:
        raise EnfoldError(f"{reference} is not a reference file of recorded outputs ({exc!r}); "
                          "rebuild it with benchmarks/build_zoo.py") from exc
    sha = file_sha256(artifact)
    if sha != recorded_sha:
        raise ReferenceMismatch(f"{reference} records the outputs of another file (sha256 "
                                f"{recorded_sha[:12]}..., {artifact} has {sha[:12]}...): pass "
                                "the reference recorded for this artifact")
    target, precision, out, _ = _outputs(artifact, pixels, backend, extras)
    _, _, first, _ = _outputs(artifact, pixels[:1], backend,  # batch 1 on its own
                              {k: v[:1] for k, v in extras.items()})
    if out.shape != recorded.shape:
        raise ReferenceMismatch(f"{artifact} gives outputs of shape {out.shape}, recorded "
                                f"{recorded.shape}")
    errors = {str(pixels.shape[0]): float(np.abs(out - recorded).max()),
              "1": float(np.abs(first - recorded[:1]).max())}
    tol = tolerance if tolerance is not None else TOLERANCE[precision]
    if tolerance is None and precision == "fp16":
        tol *= max(1.0, float(np.abs(recorded).max()))
    report: dict[str, Any] = {"artifact": str(artifact), "reference": str(reference),
                              "target": target, "precision": precision,
                              "images": int(pixels.shape[0]), "max_abs_by_batch": errors,
                              "max_abs_error": max(errors.values()), "tolerance": tol}
    if target == "classifier":
        report["top1_agreement"] = float((out.argmax(1) == recorded.argmax(1)).mean())
    report["passed"] = bool(report["max_abs_error"] <= tol
                            and report.get("top1_agreement", 1.0) == 1.0)
    if not report["passed"]:
        raise ReferenceMismatch(
            f"{artifact} differs from its recorded outputs ({reference}): max abs error "
            f"{report['max_abs_error']:.3g} (tolerance {tol:g} for {precision}), top-1 "
            f"agreement {report.get('top1_agreement', 'n/a')}")
    return report
