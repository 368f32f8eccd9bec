"""Checkpoints: tensors and plain containers only, written atomically.

Loading uses ``weights_only=True`` (torch's default since 2.6), so a checkpoint can never run
code; the resolved config and library versions travel inside it.
"""

from __future__ import annotations

import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from enfold.errors import EnfoldError, NonFiniteWeightsError

LAST = "checkpoint-last.pt"


def snapshot_path(run_dir: Path, step: int) -> Path:
    """Where a run keeps its checkpoint of step ``step`` (``train.keep_steps``)."""
    return Path(run_dir) / f"checkpoint-step{step}.pt"


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint atomically: ``dst`` is either absent, the old file or a whole copy."""
    atomic_write_bytes(Path(dst), lambda f: f.write(Path(src).read_bytes()))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in ("enfold", "torch", "torchvision", "timm", "numpy", "onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["cuda"] = str(torch.version.cuda)
    return versions


def atomic_write_bytes(path: Path, write) -> None:
    """Write via ``write(file)`` to a temp file beside ``path``, fsync, then rename over it.

    A crash or SIGKILL at any moment leaves either the old file or the new one, never half;
    the temp files such a kill leaves behind are removed by the next write of ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically save ``payload`` (tensors and plain containers) to ``path``."""
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by enfold, refusing anything that is not plain data."""
    path = Path(path)
    if not path.is_file():
        raise EnfoldError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise EnfoldError(f"checkpoint {path} is empty (0 bytes): it was never written or was "
                          "truncated; use another checkpoint or train again")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnfoldError(f"cannot read checkpoint {path}: {why} (a damaged or foreign "
                          "file; use a checkpoint-last.pt written by enfold)") from exc
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise EnfoldError(f"{path} is not an enfold checkpoint (no 'model' and 'config' entries)")
    check_finite_weights(payload["model"], str(path))
    return payload


def check_finite_weights(state: Any, where: str) -> None:
    """Refuse weights holding NaN or infinity: such a model answers every input with NaN (a
    black image, "nan" scores), so loading it is an error that names the tensors."""
    if not isinstance(state, dict):
        return
    bad = [name for name, t in state.items() if isinstance(t, torch.Tensor)
           and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteWeightsError(
            f"{where} holds NaN or infinite weights ({shown}); it cannot give answers: use an "
            "earlier checkpoint (a run stops before a non-finite update) or train again")
