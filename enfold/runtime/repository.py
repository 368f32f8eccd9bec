"""The models one ``enfold serve`` process serves side by side, each under its own name.

    repo = ModelRepository.from_specs(["exports/classifier.onnx", "den=runs/pre/ckpt.pt"])
    repo.names          # ["classifier", "den"]
    repo["den"].session

A model is named by ``NAME=PATH``, else by its artifact's own name (the sidecar's target and
steps: ``classifier``, ``restorer-k2``, as ``enfold export`` names the file), else (a checkpoint)
by its file stem. Two models with one name are an error naming both paths. The collection is
filled from a list of paths, so any list of artifacts (a registry's shipped models, say) can
become one repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enfold.artifact.formats import is_format
from enfold.errors import EnfoldError
from enfold.runtime.session import InferenceSession, load

# Names appear in URL paths (/v1/models/NAME/..., /v2/models/NAME/...).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ServedModel:
    """One model of a repository: its name, the file it came from and its session."""

    name: str
    path: Path
    session: InferenceSession


def split_spec(spec: str | Path) -> tuple[str | None, Path]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; a plain path -> ``(None, PATH)``."""
    text = str(spec)
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name:
        return name, Path(rest)
    return None, Path(text)


def default_name(path: Path, session: InferenceSession) -> str:
    """The artifact's own name (from its sidecar), or a checkpoint's file stem."""
    from enfold.export.triton_repo import entry_name

    meta = session.metadata
    if not is_format(path, "checkpoint") and meta.target:
        return entry_name(meta)
    return path.stem


class ModelRepository:
    """Named models, in the order given; see the module docstring."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        if not models:
            raise EnfoldError("no model to serve: pass --model PATH (repeat it for several)")
        seen: dict[str, ServedModel] = {}
        for model in models:
            if not NAME_PATTERN.fullmatch(model.name):
                raise EnfoldError(f"model name {model.name!r} ({model.path}) is not usable in a "
                                  "URL: use letters, digits, '.', '_' and '-' (--model "
                                  "NAME=PATH names it)")
            if model.name in seen:
                raise EnfoldError(f"two models are named {model.name!r}: "
                                  f"{seen[model.name].path} and {model.path}; name them apart "
                                  "with --model NAME=PATH")
            seen[model.name] = model
        self._models = seen

    @classmethod
    def from_specs(cls, specs: Sequence[str | Path], backend: str = "auto",
                   device: str | None = None, provider: str | None = None
                   ) -> ModelRepository:
        """Load every ``PATH`` or ``NAME=PATH`` of ``specs``; duplicate names are an error."""
        models = []
        for spec in specs:
            name, path = split_spec(spec)
            session = load(path, backend=backend, device=device, provider=provider)
            models.append(ServedModel(name or default_name(path, session), path, session))
        return cls(models)

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def __getitem__(self, name: str) -> ServedModel:
        if name not in self._models:
            raise KeyError(name)
        return self._models[name]

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
