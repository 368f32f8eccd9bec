"""``enfold.runtime.load``: one inference API over every backend and artifact.

    session = enfold.runtime.load("exported/classifier.onnx")   # backend="auto"
    probs = session.classify(images)      # images: (B, C, H, W) float32 in [0, 1]
    restored = session.restore(images)    # restorer artifacts and pretrain checkpoints
    energy = session.energy(images)       # energy artifacts and pretrain checkpoints

``load`` checks the request and picks the backend; the session itself (normalisation, batch
sizes, the runners) is ``enfold.artifact.session``, which ``enfold validate`` runs too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from enfold.artifact.formats import BACKENDS, FORMAT_BACKEND, backend_format, is_format
from enfold.artifact.ort import ORT_PROVIDERS
from enfold.artifact.session import InferenceSession, checkpoint_session, open_artifact
from enfold.artifact.sidecar import read_sidecar
from enfold.artifact.targets import TARGET_METHODS
from enfold.errors import EnfoldError

__all__ = ["TARGET_METHODS", "InferenceSession", "default_device", "load"]

# ``auto`` order, fastest first (enfold bench measures it: docs/deployment.md).
AUTO_ORDER = {"cuda": ("tensorrt", "onnxruntime", "torchscript", "torch"),
              "cpu": ("onnxruntime", "torchscript", "torch")}


def default_device() -> str:
    """``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(path: str | Path, backend: str = "auto", device: str | None = None,
         provider: str | None = None) -> InferenceSession:
    """Load an exported artifact (or a checkpoint, served by PyTorch eager, or a shipped model
    by name: ``load("noise")``, see ``enfold.zoo``) for inference.

    ``backend``: ``auto`` (the fastest available for this artifact on ``device``), ``torch``,
    ``torchscript``, ``onnxruntime`` or ``tensorrt``. ``device``: ``cpu`` or ``cuda`` (default:
    ``cuda`` when a GPU is visible). ``provider`` (onnxruntime only): ``tensorrt``, ``cuda`` or
    ``cpu``. A backend or provider that was asked for and is not available is an error, never a
    silent fallback to the CPU; ``auto`` tries the next one and says which it chose.
    """
    from enfold.zoo import resolve

    path = resolve(path)  # an existing path, else a shipped model's name (enfold models)
    if not path.is_file():
        raise EnfoldError(f"{path} is not a file (pass an artifact from `enfold export`, a "
                          "checkpoint-last.pt or a shipped model's name)")
    if backend != "auto" and backend not in BACKENDS:
        raise EnfoldError(f"unknown backend {backend!r}; choose auto or one of "
                          f"{', '.join(BACKENDS)}")
    if device is None:
        device = default_device() if provider is None else ("cpu" if provider == "cpu" else
                                                            "cuda")
    if device not in ("cpu", "cuda"):
        raise EnfoldError(f"unknown device {device!r}; use cpu or cuda")
    if provider is not None and provider not in ORT_PROVIDERS:
        raise EnfoldError(f"unknown provider {provider!r}; use one of {', '.join(ORT_PROVIDERS)}")
    if provider is not None and backend not in ("auto", "onnxruntime"):
        raise EnfoldError(f"--provider selects an onnxruntime provider; --backend is {backend}")
    if provider is not None and backend == "auto":
        backend = "onnxruntime"  # a named provider is an explicit request: no fallback
    if is_format(path, "checkpoint"):
        return checkpoint_session(path, backend, device)
    meta = read_sidecar(path)
    if backend != "auto":
        chosen = [backend]
    else:
        chosen = list(AUTO_ORDER[device])
        own = FORMAT_BACKEND[meta.format]
        # auto never reaches for the checkpoint while an artifact exists, and the own format is
        # always tried even when it is slower than a missing sibling
        chosen = [b for b in chosen if b != "torch" and
                  (b == own or path.with_suffix(backend_format(b).suffix).is_file())]
    errors: list[str] = []
    for name in chosen:
        try:
            return open_artifact(path, name, device, provider)
        except EnfoldError as exc:
            if backend != "auto":
                raise
            errors.append(f"{name}: {exc}")
    raise EnfoldError(f"no backend can run {path} on {device}:\n  " + "\n  ".join(errors))

