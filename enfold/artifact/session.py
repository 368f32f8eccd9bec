"""The inference session over any runner: pixels in, pixels (or scores) out.

    session = open_artifact("exported/classifier.onnx", "onnxruntime")
    probs = session.classify(images)      # images: (B, C, H, W) float32 in [0, 1]

Arrays go in and come out as pixels in [0, 1]; the session normalises with the artifact's own
mean and std, so callers never see the model's input space, and cuts or pads batches to the sizes
an artifact accepts. Outputs have the input's type (numpy in, numpy out; torch in, torch out).
``enfold.runtime.load`` (which also picks the backend) and ``enfold validate`` both open artifacts
here, so validation runs the code users run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from enfold.artifact.formats import backend_format
from enfold.artifact.runners import Backend, TorchBackend
from enfold.artifact.sidecar import (
    CHECKPOINT_FORMAT,
    Sidecar,
    check_agrees,
    read_sidecar,
    sidecar_path,
    verify_artifact,
)
from enfold.artifact.targets import CHECKPOINT_TARGETS
from enfold.digest import file_sha256
from enfold.errors import EnfoldError, NonFiniteOutputError

EXPORT_HINT = "enfold export --checkpoint CKPT --target {target} --format {fmt} --out {out}"

Array = np.ndarray | torch.Tensor


class InferenceSession:
    """A loaded model: ``classify``, ``restore``, ``energy`` and ``features`` on pixel batches."""

    def __init__(self, metadata: Sidecar, runners: dict[str, Backend]) -> None:
        self.metadata = metadata
        self.runners = runners
        self.in_chans = metadata.in_chans
        self.img_size = metadata.img_size
        self.mean = list(metadata.mean)[: self.in_chans]
        self.std = list(metadata.std)[: self.in_chans]

    # -- what is loaded
    @property
    def targets(self) -> list[str]:
        """The targets this session serves."""
        return list(self.runners)

    def describe(self) -> str:
        """e.g. ``onnxruntime (cpu, CPUExecutionProvider) serving restorer``."""
        first = next(iter(self.runners.values()))
        return f"{first.describe()} serving {', '.join(self.targets)}"

    @property
    def class_names(self) -> list[str]:
        """The classifier's class names, or a clear error for models without them."""
        names = self.metadata.class_names
        if not names:
            raise EnfoldError("this model has no class names: classify needs a fine-tuned "
                              "classifier (enfold finetune, then export --target classifier)")
        return list(names)

    # -- the API
    @property
    def restorer_inputs(self) -> list[str]:
        """The restorer's inputs besides the images: ``"sigma"`` (the noise level of a
        noise-level restorer, ``(B,)`` pixels) and/or ``"mask"`` (``(B, 1, H, W)``, 1 in the
        holes, for a mask restorer); empty for the others."""
        return list(self.metadata.restorer_inputs or [])

    def raw(self, target: str, images: Array, **extra: Any) -> np.ndarray:
        """The runner's own output for pixel ``images`` (logits, the restored image in the
        normalised space, energies, features), through the same normalisation and batching as
        every other call; validation compares this with PyTorch. ``extra``: the restorer's
        other inputs (:attr:`restorer_inputs`), fed as they are."""
        x = self._check(images)
        return self._run(target, x, self._extras(target, x.shape[0], extra))

    def classify(self, images: Array) -> Array:
        """Class probabilities ``(B, num_classes)`` (softmax of the logits)."""
        logits = self.raw("classifier", images)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return _like(shifted / shifted.sum(axis=1, keepdims=True), images)

    def restore(self, images: Array, sigma: Array | float | None = None,
                mask: Array | None = None) -> Array:
        """Restored pixels ``(B, C, H, W)`` in [0, 1]: K steps down the energy (or a learned
        peer's one forward pass, ``restorer`` in the sidecar).

        ``sigma``: the noise level in pixel units (a number or one per image) of a noise-level
        restorer, estimated from each image when not given; ``mask``: ``(B, 1, H, W)``, 1 where
        pixels are missing, for a mask restorer that takes one (see :attr:`restorer_inputs`)."""
        if sigma is None and "sigma" in self.restorer_inputs:
            # a noise-level restorer told nothing: each image's own wavelet estimate
            from enfold.corrupt.noise import estimate_sigma

            sigma = np.array([estimate_sigma(img) for img in np.asarray(images)], np.float32)
        extra = {k: v for k, v in (("sigma", sigma), ("mask", mask)) if v is not None}
        out = self.raw("restorer", images, **extra)
        return _like(np.clip(out * self._std + self._mean, 0.0, 1.0), images)

    def energy(self, images: Array) -> Array:
        """Energy per image ``(B,)``: low for images like the training data."""
        return _like(self.raw("energy", images).reshape(-1), images)

    def features(self, images: Array) -> Array:
        """Pooled encoder features ``(B, D)``."""
        return _like(self.raw("encoder", images), images)

    def top_k(self, probs: Array, k: int = 5) -> list[list[tuple[str, float]]]:
        """``[(label, probability), ...]`` best first, for each row of ``classify``'s output."""
        p = probs.numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        names = self.class_names
        if p.ndim != 2 or p.shape[1] != len(names):
            raise EnfoldError(f"{len(names)} class names for scores of shape {tuple(p.shape)}: "
                              "the model's metadata does not match its outputs; re-export it")
        order = np.argsort(-p, axis=1, kind="stable")[:, :k]
        return [[(names[int(i)], float(row[i])) for i in idx] for row, idx in zip(p, order,
                                                                                  strict=True)]

    # -- internals
    # Pre- and post-processing are numpy on purpose: a torch op here would wake PyTorch's
    # OpenMP pool, whose spinning threads then take the cores from ONNX Runtime's own pool
    # (measured: 2x slower ONNX Runtime calls on 2 cores).
    @property
    def _mean(self) -> np.ndarray:
        return np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)

    @property
    def _std(self) -> np.ndarray:
        return np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)

    def _check(self, images: Array) -> np.ndarray:
        """Pixels ``(B, C, H, W)`` float32 -> the normalised batch, or a clear error."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.float32:
                raise EnfoldError(
                    f"images must be float32 pixels in [0, 1], got dtype {images.dtype}"
                    + (" (divide uint8 images by 255)" if images.dtype == np.uint8 else ""))
            x = images
        elif isinstance(images, torch.Tensor):
            if images.dtype != torch.float32:
                raise EnfoldError(f"images must be float32 pixels in [0, 1], got {images.dtype}")
            x = images.detach().cpu().numpy()
        else:
            raise EnfoldError(f"images must be a numpy array or torch tensor, got "
                              f"{type(images).__name__} (image files: enfold.runtime.load_images)")
        want = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want or x.shape[0] == 0:
            hint = " (add a batch axis: images[None])" if tuple(x.shape) == want else ""
            raise EnfoldError(f"images must have shape (B, {want[0]}, {want[1]}, {want[2]}) with "
                              f"B >= 1, got {tuple(x.shape)}{hint}")
        return np.ascontiguousarray((x - self._mean) / self._std, dtype=np.float32)

    def _extras(self, target: str, batch: int, extra: dict[str, Any]) -> list[np.ndarray]:
        """The restorer's other inputs in the artifact's order, checked, as float32 arrays."""
        wanted = self.restorer_inputs if target == "restorer" else []
        unknown = sorted(set(extra) - set(wanted))
        if unknown:
            raise EnfoldError(f"this {target} takes no {' or '.join(unknown)} input"
                              + (f" (it takes {', '.join(wanted)})" if wanted else ""))
        out = []
        for name in wanted:
            if name not in extra:
                hint = ("the noise level sigma, in pixel units (e.g. sigma=0.05)"
                        if name == "sigma" else "the hole mask (B, 1, H, W), 1 where missing")
                raise EnfoldError(f"this restorer needs {hint}: restore(images, {name}=...)")
            value = extra[name]
            arr = (value.detach().cpu().numpy() if isinstance(value, torch.Tensor)
                   else np.asarray(value))
            arr = arr.astype(np.float32)
            if name == "sigma":
                if arr.size == 1:  # one level for every image
                    arr = np.full((batch,), float(arr.reshape(-1)[0]), np.float32)
                arr = arr.reshape(-1) if arr.size == batch else arr
                if arr.shape != (batch,) or not (np.isfinite(arr).all() and (arr > 0).all()):
                    raise EnfoldError(f"sigma must be one positive noise level or one per image "
                                      f"({batch}), got shape {tuple(arr.shape)}")
            else:
                want = (batch, 1, self.img_size, self.img_size)
                if arr.shape != want:
                    raise EnfoldError(f"mask must have shape {want}, got {tuple(arr.shape)}")
            out.append(np.array(arr, dtype=np.float32, order="C"))  # a writable copy
        return out

    def _run(self, target: str, x: np.ndarray, extras: list[np.ndarray] | None = None
             ) -> np.ndarray:
        runner = self.runners.get(target)
        if runner is None:
            raise EnfoldError(
                f"this model serves {', '.join(self.targets)}, not the {target}: "
                + ("export it with " + EXPORT_HINT.format(target=target, fmt="onnx", out="DIR")
                   if target != "classifier" else
                   "fine-tune (enfold finetune) and export --target classifier"))
        # Artifacts with a fixed batch (traced TorchScript restorers) or a batch profile
        # (TensorRT engines) get chunks of an allowed size; padding rows are dropped.
        if runner.fixed_batch:
            chunk = lo = runner.fixed_batch
        elif runner.batch_range:
            lo, chunk = runner.batch_range
        else:
            lo, chunk = 1, x.shape[0]
        outs = []
        for start in range(0, x.shape[0], chunk):
            parts = [a[start:start + chunk] for a in [x, *(extras or [])]]
            n = parts[0].shape[0]
            if n < lo:
                parts = [np.concatenate([p, np.repeat(p[-1:], lo - n, axis=0)]) for p in parts]
            outs.append(runner(*(torch.from_numpy(p) for p in parts)).numpy()[:n])
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        finite = np.isfinite(out.reshape(out.shape[0], -1)).all(axis=1)
        if not finite.all():
            raise NonFiniteOutputError(
                f"the model produced NaN/Inf for {int((~finite).sum())} of {len(finite)} "
                f"input(s) (the {target}); no answer is given: its weights or numerics are "
                "broken (an fp16 overflow, a damaged artifact), not the image",
                rows=[int(i) for i in np.flatnonzero(~finite)])
        return out


def _like(out: np.ndarray, like: Array) -> Array:
    """numpy in, numpy out; torch in, torch out."""
    out = np.ascontiguousarray(out, dtype=np.float32)
    return torch.from_numpy(out) if isinstance(like, torch.Tensor) else out


def checkpoint_session(path: Path, backend: str, device: str) -> InferenceSession:
    """A checkpoint served by PyTorch eager: every target its stage can serve."""
    from enfold.checkpoint.load import open_checkpoint

    if backend != "auto" and backend_format(backend).sidecar:
        raise EnfoldError(f"{path} is a checkpoint, which only the torch backend runs; for "
                          f"--backend {backend} export it first: "
                          + EXPORT_HINT.format(target="restorer|classifier",
                                               fmt=backend_format(backend).name, out="DIR"))
    opened = open_checkpoint(path)  # read and hashed once for all the targets it serves
    stage = opened.stage
    if stage not in CHECKPOINT_TARGETS:
        raise EnfoldError(f"{path} is a '{stage}' checkpoint; serve a pretrain or finetune one")
    runners: dict[str, Backend] = {}
    meta: dict[str, Any] = {}
    for target in CHECKPOINT_TARGETS[stage]:
        runners[target] = TorchBackend(opened, target, device)
        meta.update(runners[target].spec.metadata)
    meta.update(target=CHECKPOINT_TARGETS[stage][0], format=CHECKPOINT_FORMAT, precision="fp32")
    # the checkpoint is its own truth: a model whose step sizes overflowed still loads, and its
    # outputs are refused call by call (NonFiniteOutputError)
    return InferenceSession(Sidecar.from_dict(meta, str(path), formats=(CHECKPOINT_FORMAT,),
                                              check=False), runners)


def _artifact_for(path: Path, meta: Sidecar, backend: str) -> Path:
    """The artifact ``backend`` runs: ``path`` itself, or its sibling in that format."""
    fmt = backend_format(backend)
    if meta.format == fmt.name:
        return path
    sibling = path.with_suffix(fmt.suffix)
    if sibling.is_file() and sidecar_path(sibling).is_file():
        other = read_sidecar(sibling)
        same = all(getattr(other, k) == getattr(meta, k)
                   for k in ("target", "checkpoint_sha256", "steps", "task", "precision"))
        if same:
            return sibling
        raise EnfoldError(f"{sibling} was exported from another checkpoint or with other "
                          f"settings than {path}; re-export both from the same checkpoint")
    raise EnfoldError(f"--backend {backend} runs {fmt.name} artifacts and {path} is "
                      f"{meta.format}; export it beside: "
                      + EXPORT_HINT.format(target=meta.target, fmt=fmt.name, out=path.parent))


def torch_runner(path: Path, meta: Sidecar, device: str,
                 provider: str | None = None) -> TorchBackend:
    """PyTorch eager on the checkpoint an artifact was exported from (checked by hash): the
    torch backend's runner in the formats table."""
    from enfold.checkpoint.load import open_checkpoint

    ckpt = Path(meta.checkpoint or "")
    if not ckpt.is_file():
        raise EnfoldError(f"--backend torch needs the checkpoint this artifact came from, "
                          f"{ckpt}, which is missing; pass the checkpoint itself as --model")
    digest = file_sha256(ckpt)  # checked before the file is read
    if digest != meta.checkpoint_sha256:
        raise EnfoldError(f"{ckpt} changed since the artifact was exported (sha256 differs); "
                          "re-export, or pass the checkpoint itself as --model")
    return TorchBackend(open_checkpoint(ckpt, sha256=digest), meta.target, device,
                        steps=meta.steps, task=meta.task, grid_shifts=meta.grid_shifts,
                        step_decay=meta.step_decay)


def build_runner(backend: str, path: Path, meta: Sidecar, device: str,
                 provider: str | None = None) -> Backend:
    """The runner of ``backend`` for the artifact at ``path`` (metadata ``meta``): the artifact
    itself, its sibling in the backend's format, or (torch) the checkpoint it came from."""
    fmt = backend_format(backend)
    fmt.check()  # say what is missing before looking for a file
    if fmt.sidecar:
        artifact = _artifact_for(path, meta, backend)
        if artifact != path:
            meta = read_sidecar(artifact)
        verify_artifact(artifact, meta)  # the file is the one its sidecar describes
        path = artifact
    return fmt.runner_factory()(path, meta, device, provider)


def open_artifact(path: str | Path, backend: str, device: str = "cpu",
                  provider: str | None = None) -> InferenceSession:
    """The artifact at ``path`` run by ``backend`` on ``device``, as an :class:`InferenceSession`:
    the one way ``enfold.runtime.load`` and ``enfold validate`` open an artifact."""
    path = Path(path)
    meta = read_sidecar(path)
    runner = build_runner(backend, path, meta, device, provider)
    if runner.embedded:  # the sidecar must say what the file (or checkpoint) itself says
        source = ("the checkpoint it was exported from" if backend == "torch" else
                  "the metadata inside the artifact")
        check_agrees(meta, runner.embedded, source, str(sidecar_path(path)))
    session = InferenceSession(meta, {meta.target: runner})
    if meta.target == "classifier":
        _check_class_count(session, path)
    return session


def _check_class_count(session: InferenceSession, path: Path) -> None:
    """One class name per output of the classifier (one probe call tells the outputs)."""
    probe = np.zeros((1, session.in_chans, session.img_size, session.img_size), np.float32)
    outputs = session.raw("classifier", probe).shape[-1]
    names = session.class_names
    if len(names) != outputs:
        raise EnfoldError(f"{sidecar_path(path)} names {len(names)} classes but {path} has "
                          f"{outputs} outputs; export it again with `enfold export`")
