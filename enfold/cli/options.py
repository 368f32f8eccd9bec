"""The choices and options the commands share.

Every option whose value is one of a fixed set is a str-valued :class:`enum.Enum`, so ``--help``
lists the values and Typer rejects any other with the choices; the values are the ones users
type. The formats, backends, targets and providers come from their tables (``enfold.artifact``),
which import nothing heavy; the task names are checked against their registries by the tests.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from enfold.artifact.formats import BACKENDS, EXPORT_FORMATS, PRECISIONS
from enfold.artifact.ort import ORT_PROVIDERS
from enfold.artifact.target_table import TARGETS


def _choices(name: str, values: tuple[str, ...]) -> Any:
    """A str-valued Enum whose members are named and valued as ``values``."""
    return Enum(name, [(value, value) for value in values], type=str)


Target = _choices("Target", TARGETS)
ExportFormat = _choices("ExportFormat", EXPORT_FORMATS)
Precision = _choices("Precision", PRECISIONS)
Backend = _choices("Backend", ("auto", *BACKENDS))
Device = _choices("Device", ("cpu", "cuda"))
Provider = _choices("Provider", ORT_PROVIDERS)
# finetune.mode (enfold.config.FinetuneConfig.mode)
FinetuneMode = _choices("FinetuneMode", ("full", "linear", "knn"))
# the pretext tasks a restorer is trained for (enfold.runtime.restore.TASKS)
Task = _choices("Task", ("mask", "shuffle", "sr", "noise", "gray"))
# restore --task: a pretext task, or a shipped restorer's task (sr4: the x4 sr restorer)
RestoreTask = _choices("RestoreTask", ("mask", "shuffle", "sr", "sr4", "noise", "gray"))


def typed(choice: Enum | str | None) -> str | None:
    """The string a user typed for ``choice`` (``None`` stays ``None``)."""
    return choice.value if isinstance(choice, Enum) else choice


# The rich help panels ``enfold --help`` groups the commands under.
TRAINING_PANEL = "Training"
DEPLOYMENT_PANEL = "Deployment"

SET_HELP = "Override one config key, e.g. --set train.max_steps=50 (repeatable)."
# Existing outputs are refused before any work unless this is given (enfold.output_files).
OVERWRITE_OPT = typer.Option(
    False, "--overwrite", help="Replace output files that already exist (links are replaced, "
    "never written through; inputs are never replaced).")

