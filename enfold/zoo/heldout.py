"""The held-out number of a shipped model, measured through the runtime users get.

On a small fixed subset of the held-out split of the model's own data source (rebuilt from the
run's resolved config, which ships beside the model):

- restorer: mean PSNR (dB) on the corrupted region of the first ``count`` held-out images
  (photos: fixed crops of the held-out photos), corrupted with the artifact's task at ``seed``,
  restored by the artifact and with the untouched pixels kept, as ``enfold restore`` does;
- classifier: top-1 (%) on the first ``count`` held-out (test) images;
- encoder: kNN top-1 (%) of its features on the same images, against a fixed class-balanced
  bank of ``bank_per_class`` training images per class (cosine similarity, ``KNN_K``
  neighbours, similarity-weighted vote).

The build records the number and the fixed input; CI recomputes it from the shipped files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enfold.errors import EnfoldError

KNN_K = 10
DEFAULTS = {"restorer": {"count": 32}, "classifier": {"count": 1000},
            "encoder": {"count": 1000, "bank_per_class": 100}}
REFERENCE_IMAGES = 4  # images in the fixed input of the recorded outputs
# a noise-level restorer is scored at one level, the one the earlier specialists trained at
NOISE_SIGMA = 0.1


def load_run_config(path: str | Path):
    """The resolved config a run wrote (``config.yaml``), as a :class:`enfold.config.Config`."""
    from enfold.config import load_config

    return load_config(path)


def missing_data(cfg) -> str | None:
    """Why the held-out data of ``cfg`` cannot be read on this machine, or None."""
    source = cfg.data.source
    if source == "photos":
        from enfold.data.photos import missing_photo_packages

        missing = missing_photo_packages()
        return f"the photos need Debian packages {', '.join(missing)} (make data)" if missing \
            else None
    if source == "fashion-mnist":
        from enfold.data.fashion_mnist import FASHION_MNIST_DIR

        return None if FASHION_MNIST_DIR.is_dir() else (
            "Fashion-MNIST needs the Debian package dataset-fashion-mnist (make data)")
    return None


def _source(cfg, split: str, count: int):
    from enfold.data import build_source

    return build_source(cfg.data.source, split, cfg.model, cfg.data, heldout_count=count)


def _stack(source, indices) -> np.ndarray:
    return torch.stack([source.image(int(i)) for i in indices]).float().numpy()


def _labelled(source, count: int) -> tuple[np.ndarray, list[str]]:
    """The first ``count`` images of a labelled source and their class names."""
    from enfold.data import require_labels

    labels, classes = require_labels(source, "the held-out top-1")
    n = min(count, len(source))
    return _stack(source, range(n)), [classes[labels[i]] for i in range(n)]


def restorer_inputs(session, cfg, count: int, seed: int):
    """``(corrupted, clean, weight)`` pixels of the first ``count`` held-out images,
    corrupted with the artifact's task as ``enfold restore`` corrupts (its metadata's
    settings)."""
    from enfold.corrupt import corrupt_batch
    from enfold.runtime.restore import task_corruption

    source = _source(cfg, "heldout", count)
    images = torch.from_numpy(_stack(source, range(min(count, len(source)))))
    meta = session.metadata
    if "sigma" in session.restorer_inputs:  # one noise level for a comparable number
        meta = replace(meta, corrupt={**(meta.corrupt or {}),
                                      "noise": {"sigma": NOISE_SIGMA, "sigma_max": None}})
    corruption = task_corruption(meta, meta.task)
    return corrupt_batch(corruption, images, seed)


def restorer_extra(session, count: int, weight: torch.Tensor) -> dict[str, np.ndarray]:
    """The second input a restorer's graph takes besides the images: the noise level of a
    noise-level restorer (the one the inputs were corrupted with), or the hole mask of a mask
    restorer (the corruption's own weight)."""
    inputs = session.restorer_inputs
    extra: dict[str, np.ndarray] = {}
    if "sigma" in inputs:
        extra["sigma"] = np.full((count,), NOISE_SIGMA, np.float32)
    if "mask" in inputs:
        extra["mask"] = weight.float().numpy()
    return extra


def _restorer(session, cfg, count: int, seed: int) -> dict[str, Any]:
    from enfold.runtime.restore import assemble

    corrupted, clean, weight = restorer_inputs(session, cfg, count, seed)
    restored = torch.as_tensor(session.restore(
        corrupted.numpy(), **restorer_extra(session, corrupted.shape[0], weight)))
    h, w = corrupted.shape[-2:]
    psnr_in, psnr_out = [], []
    for i in range(corrupted.shape[0]):
        if float(weight[i].sum()) == 0:  # nothing corrupted: no region to score
            continue
        result = assemble(clean[i], corrupted[i:i + 1], restored[i:i + 1], weight[i],
                          (1, 1, h, w), keep_known=True).psnr()
        psnr_in.append(result["psnr_input"])
        psnr_out.append(result["psnr_restored"])
    return {"name": "psnr_restored", "label": "PSNR", "unit": "dB",
            "value": float(np.mean(psnr_out)), "input_value": float(np.mean(psnr_in)),
            "images": len(psnr_out)}


def _classifier(session, cfg, count: int) -> dict[str, Any]:
    images, truth = _labelled(_source(cfg, "heldout", count), count)
    names = session.class_names
    pred = [names[int(i)] for i in np.asarray(session.classify(images)).argmax(1)]
    top1 = 100.0 * float(np.mean([p == t for p, t in zip(pred, truth, strict=True)]))
    return {"name": "top1", "label": "top-1", "unit": "%", "value": top1, "images": len(truth)}


def _encoder(session, cfg, count: int, bank_per_class: int) -> dict[str, Any]:
    from enfold.data import select_per_class

    train = _source(cfg, "train", count)
    if train.labels is None or train.classes is None:
        raise EnfoldError(f"the encoder's kNN number needs labelled data; {cfg.data.source} "
                          "has no labels")
    bank_idx = select_per_class(train.labels, bank_per_class, cfg.train.seed)
    bank = np.asarray(session.features(_stack(train, bank_idx)))
    bank_names = [train.classes[train.labels[i]] for i in bank_idx]
    images, truth = _labelled(_source(cfg, "heldout", count), count)
    feats = np.asarray(session.features(images))

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    sims = unit(feats) @ unit(bank).T
    classes = sorted(set(bank_names))
    bank_cls = np.array([classes.index(n) for n in bank_names])
    top = np.argsort(-sims, axis=1, kind="stable")[:, :KNN_K]
    votes = np.zeros((len(truth), len(classes)))
    for row in range(len(truth)):
        np.add.at(votes[row], bank_cls[top[row]], sims[row, top[row]])
    pred = [classes[i] for i in votes.argmax(1)]
    top1 = 100.0 * float(np.mean([p == t for p, t in zip(pred, truth, strict=True)]))
    return {"name": "knn_top1", "label": f"{KNN_K}-NN top-1", "unit": "%", "value": top1,
            "images": len(truth), "bank": len(bank_idx)}


def measure(artifact: str | Path, config: str | Path, count: int | None = None, seed: int = 0,
            bank_per_class: int | None = None, backend: str = "auto") -> dict[str, Any]:
    """The held-out number of ``artifact`` (see the module docstring), with what it was
    measured on: ``{"name", "label", "unit", "value", "dataset", "count", "seed", ...}``."""
    from enfold.runtime import load

    cfg = load_run_config(config)
    why = missing_data(cfg)
    if why:
        raise EnfoldError(f"cannot measure {artifact} on held-out {cfg.data.source}: {why}")
    session = load(artifact, backend=backend, device="cpu")
    target = session.metadata.target
    if target not in DEFAULTS:
        raise EnfoldError(f"no held-out number is defined for the {target} target")
    defaults = DEFAULTS[target]
    count = count or defaults["count"]
    size = f"{cfg.model.img_size}x{cfg.model.img_size}"
    if target == "restorer":
        metric = _restorer(session, cfg, count, seed)
        what = "crops" if cfg.data.source.startswith("photos") else "images"
        metric["dataset"] = (f"{cfg.data.source} held-out, the first {metric['images']} fixed "
                             f"{size} {what}, {session.metadata.task} corruption"
                             + (f" at sigma {NOISE_SIGMA}" if "sigma" in session.restorer_inputs
                                else "") + f" seed {seed}")
    elif target == "classifier":
        metric = _classifier(session, cfg, count)
        metric["dataset"] = f"{cfg.data.source} held-out, the first {metric['images']} images"
    else:
        bank_per_class = bank_per_class or defaults["bank_per_class"]
        metric = _encoder(session, cfg, count, bank_per_class)
        metric["dataset"] = (f"{cfg.data.source} held-out, the first {metric['images']} "
                             f"images; bank of {bank_per_class} training images per class")
        metric["bank_per_class"] = bank_per_class
    metric.update(count=count, seed=seed, source=cfg.data.source)
    return metric


def reference_input(artifact: str | Path, config: str | Path, seed: int = 0) -> np.ndarray:
    """The fixed input whose outputs the build records: the first held-out images, corrupted as
    the held-out number corrupts them for a restorer."""
    from enfold.runtime import load

    cfg = load_run_config(config)
    session = load(artifact, device="cpu")
    if session.metadata.target == "restorer":
        corrupted, _, _ = restorer_inputs(session, cfg, REFERENCE_IMAGES, seed)
        return corrupted.numpy().astype(np.float32)
    source = _source(cfg, "heldout", REFERENCE_IMAGES)
    return _stack(source, range(min(REFERENCE_IMAGES, len(source))))
