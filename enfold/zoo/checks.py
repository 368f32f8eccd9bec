"""The checks a zoo passes, with no checkpoint at hand (CI runs them on every shipped model):

1. every file of every model is the one the registry describes (size and sha256);
2. every artifact reproduces its recorded outputs on its fixed input (``enfold validate NAME``);
3. the held-out number, measured again from the shipped files, matches the registry's within
   ``TOLERANCE`` (0.05 dB of PSNR, 0.2 points of top-1).

Each check takes one :class:`~enfold.zoo.registry.ZooModel` and raises
:class:`ZooCheckError` naming what differs; :func:`check_zoo` runs all of them on a zoo folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enfold.errors import EnfoldError
from enfold.zoo.registry import ZooModel, file_sha256, list_models

# largest |measured - registry| of a held-out number, by its unit
TOLERANCE = {"dB": 0.05, "%": 0.2}


class ZooCheckError(EnfoldError):
    """A shipped model differs from its registry entry."""


def check_files(model: ZooModel) -> dict[str, Any]:
    """Every file of ``model`` exists with the registry's size and sha256, the artifact's own
    entry included, and its folder holds no file the registry does not list."""
    problems = []
    listed = {model.zoo / rel for rel in model.files}
    if model.artifact not in listed:
        problems.append(f"the artifact {model.artifact.name} is not among the model's files")
    for rel, info in model.files.items():
        path = model.zoo / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        if path.stat().st_size != int(info["size_bytes"]):
            problems.append(f"{rel} has {path.stat().st_size} bytes, registry {info['size_bytes']}")
        elif file_sha256(path) != info["sha256"]:
            problems.append(f"{rel} sha256 differs from the registry's")
    if model.artifact.is_file() and (file_sha256(model.artifact) != model.sha256
                                     or model.artifact.stat().st_size != model.size_bytes):
        problems.append(f"{model.artifact.name}: sha256 or size differs from the entry's")
    extra = sorted(str(p.relative_to(model.zoo)) for p in model.folder.rglob("*")
                   if p.is_file() and p not in listed)
    if extra:
        problems.append(f"files the registry does not list: {', '.join(extra)}")
    if problems:
        raise ZooCheckError(f"{model.name}: " + "; ".join(problems)
                            + " (rebuild with python benchmarks/build_zoo.py)")
    return {"files": len(model.files), "bytes": model.total_bytes}


def check_recorded(model: ZooModel) -> dict[str, Any]:
    """Every artifact of ``model`` reproduces its recorded outputs (the check ``enfold validate
    NAME`` runs)."""
    from enfold.zoo.reference import check_reference

    if not model.references:
        raise ZooCheckError(f"{model.name}: the registry lists no recorded outputs")
    reports = {}
    for name, reference in model.references.items():
        try:
            reports[name] = check_reference(model.folder / name, reference)
        except EnfoldError as exc:
            raise ZooCheckError(f"{model.name}: {exc}") from exc
    return reports


def model_config(model: ZooModel) -> Path:
    """The run's resolved config, shipped beside the model."""
    return model.zoo / model.entry["run_config"]


def check_heldout(model: ZooModel) -> dict[str, Any]:
    """The held-out number measured again from the shipped files matches the registry's."""
    from enfold.zoo.heldout import measure

    want = model.metric
    got = measure(model.artifact, model_config(model), count=want["count"], seed=want["seed"],
                  bank_per_class=want.get("bank_per_class"))
    tol = TOLERANCE[want["unit"]]
    if got["name"] != want["name"] or abs(got["value"] - want["value"]) > tol:
        raise ZooCheckError(f"{model.name}: held-out {got['label']} {got['value']:.4f} "
                            f"{got['unit']} on {got['dataset']}, the registry says "
                            f"{want['value']:.4f} (tolerance {tol}); rebuild with "
                            "python benchmarks/build_zoo.py")
    return {"measured": got["value"], "registry": want["value"], "tolerance": tol}


def check_zoo(zoo: str | Path) -> dict[str, dict[str, Any]]:
    """Every check on every model of the zoo at ``zoo``; raises at the first failure."""
    models = list_models(zoo)
    if not models:
        raise ZooCheckError(f"{zoo} ships no models")
    return {m.name: {"files": check_files(m), "recorded": check_recorded(m),
                     "heldout": check_heldout(m)} for m in models}
