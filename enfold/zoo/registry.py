"""The model zoo's registry: the trained models that ship inside the package, by name.

A zoo is a folder holding ``registry.json`` and ``models/<name>/`` (the exported artifact with
its sidecar, a model card, the run's resolved config and, per artifact, a fixed input with its
recorded outputs). The shipped zoo is this package's own folder; ``ENFOLD_ZOO=DIR`` points every
caller (CLI, ``enfold.runtime.load``) at another one. ``benchmarks/build_zoo.py`` writes it.

Only JSON and paths here: listing or resolving a model loads no model code.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enfold.artifact.formats import BY_SUFFIX
from enfold.digest import file_sha256  # noqa: F401  (re-exported)
from enfold.errors import EnfoldError

SHIPPED_ZOO = Path(__file__).resolve().parent
REGISTRY_NAME = "registry.json"
MODELS_DIR = "models"
ZOO_ENV = "ENFOLD_ZOO"
REGISTRY_VERSION = 1
# suffixes that make a --model value a file name rather than a model name
FILE_SUFFIXES = tuple(BY_SUFFIX)


class UnknownModelError(EnfoldError):
    """A name that is neither an existing file nor a model of the zoo."""


@dataclass(frozen=True)
class ZooModel:
    """One registry entry; paths are absolute (inside ``zoo``)."""

    name: str
    task: str  # restorers: their corruption task; classifier "classify"; encoder "features"
    target: str
    img_size: int
    in_chans: int
    precision: str
    artifact: Path  # the file ``enfold.runtime.load`` opens
    size_bytes: int  # of the artifact
    sha256: str  # of the artifact
    metric: dict[str, Any]  # name, value, dataset (and the fp32/fp16 values measured)
    reproduce: list[str]  # the commands that rebuild it from nothing
    config: str  # the config it was trained from (repository path)
    files: dict[str, dict[str, Any]]  # every file of the model: relative path -> size, sha256
    references: dict[str, Path]  # artifact file name -> its fixed input and recorded outputs
    zoo: Path
    entry: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def folder(self) -> Path:
        """The model's folder in the zoo."""
        return self.artifact.parent

    @property
    def total_bytes(self) -> int:
        """Bytes of every file of the model (what it adds to an install)."""
        return sum(int(f["size_bytes"]) for f in self.files.values())

    def describe_metric(self) -> str:
        """e.g. ``PSNR 28.41 dB on photos held-out: 32 fixed 32x32 crops``."""
        m = self.metric
        unit = " dB" if m.get("unit") == "dB" else (" %" if m.get("unit") == "%" else "")
        return f"{m['label']} {m['value']:.2f}{unit} on {m['dataset']}"


def zoo_dir(zoo: str | Path | None = None) -> Path:
    """The zoo folder: ``zoo``, else ``$ENFOLD_ZOO``, else the one shipped in the package."""
    if zoo is not None:
        return Path(zoo)
    env = os.environ.get(ZOO_ENV)
    return Path(env) if env else SHIPPED_ZOO


def read_registry(zoo: str | Path | None = None) -> dict[str, Any]:
    """The registry document of ``zoo`` (an empty one when the zoo has no registry yet)."""
    root = zoo_dir(zoo)
    path = root / REGISTRY_NAME
    if not path.is_file():
        if root.resolve() != SHIPPED_ZOO:  # a zoo that was asked for by name must exist
            how = f"{ZOO_ENV}={root}" if os.environ.get(ZOO_ENV) == str(root) else str(root)
            raise EnfoldError(f"{how} holds no {REGISTRY_NAME}: point it at a folder written by "
                              "benchmarks/build_zoo.py" + (", or unset it" if "=" in how else ""))
        return {"version": REGISTRY_VERSION, "models": []}
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EnfoldError(f"{path} is not a readable registry ({exc}); rebuild it with "
                          "python benchmarks/build_zoo.py") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise EnfoldError(f"{path} holds no model list; rebuild it with "
                          "python benchmarks/build_zoo.py")
    return doc


def model_from_entry(entry: dict[str, Any], root: Path) -> ZooModel:
    try:
        return ZooModel(
            name=entry["name"], task=entry["task"], target=entry["target"],
            img_size=int(entry["img_size"]), in_chans=int(entry["in_chans"]),
            precision=entry["precision"], artifact=root / entry["artifact"],
            size_bytes=int(entry["size_bytes"]), sha256=entry["sha256"],
            metric=dict(entry["metric"]), reproduce=list(entry["reproduce"]),
            config=entry["config"], files=dict(entry["files"]),
            references={k: root / v for k, v in entry["references"].items()},
            zoo=root, entry=entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise EnfoldError(f"{root / REGISTRY_NAME}: entry {entry.get('name', '?')!r} is "
                          f"incomplete ({exc!r}); rebuild it with python benchmarks/build_zoo.py"
                          ) from exc


def list_models(zoo: str | Path | None = None) -> list[ZooModel]:
    """Every model of the zoo, in registry order."""
    root = zoo_dir(zoo)
    return [model_from_entry(e, root) for e in read_registry(root)["models"]]


def names(zoo: str | Path | None = None) -> list[str]:
    """The model names of the zoo."""
    return [m.name for m in list_models(zoo)]


def _unknown(name: str, known: list[str], what: str) -> str:
    if not known:
        return (f"{what}; no models ship with this install yet (python benchmarks/build_zoo.py "
                "builds them)")
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{what}{hint} (shipped models: {', '.join(known)}; see `enfold models`)"


def get(name: str, zoo: str | Path | None = None) -> ZooModel:
    """The model called ``name``; an unknown name is an error with the closest known name."""
    models = list_models(zoo)
    for model in models:
        if model.name == name:
            return model
    raise UnknownModelError(_unknown(name, [m.name for m in models],
                                     f"no shipped model is called {name!r}"))


def for_task(task: str, zoo: str | Path | None = None) -> ZooModel:
    """The shipped model of ``task`` (a restorer's corruption task, ``classify`` or
    ``features``); a task no model ships for is an error naming the tasks that have one."""
    models = list_models(zoo)
    for model in models:
        if model.task == task:
            return model
    tasks = sorted({m.task for m in models})
    if not tasks:
        raise UnknownModelError(f"no model ships for task {task!r}: no models ship with this "
                                "install yet; pass --model with an exported artifact")
    raise UnknownModelError(f"no model ships for task {task!r} (shipped tasks: "
                            f"{', '.join(tasks)}); pass --model with an artifact trained for it")


def resolve(name_or_path: str | Path, zoo: str | Path | None = None) -> Path:
    """The file ``name_or_path`` means: an existing path as it is, else the artifact of the
    model of that name, else an error listing the shipped names."""
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    looks_like_file = (os.sep in text or "/" in text or path.suffix in FILE_SUFFIXES)
    models = list_models(zoo)
    for model in models:
        if model.name == text:
            return model.artifact
    known = [m.name for m in models]
    if looks_like_file:
        what = (f"{text} does not exist (pass an artifact from `enfold export`, a "
                "checkpoint-last.pt, or a shipped model's name")
        return _raise(what + (f": {', '.join(known)})" if known else ")"))
    return _raise(_unknown(text, known, f"{text!r} is neither a file nor a shipped model"))


def _raise(message: str) -> Path:
    raise UnknownModelError(message)
