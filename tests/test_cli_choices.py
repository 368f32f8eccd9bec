"""The CLI's fixed choices and its two command groups: every choice listed by ``--help`` and
checked by Typer, the choices the same as the tables and registries they come from, and every
command line the documentation shows still parsed as it is written."""

from __future__ import annotations

import re
import shlex
import typing

import pytest
from conftest import ROOT

try:  # typer >= 0.20 vendors click; older ones use click itself
    from typer._click.exceptions import MissingParameter
except ImportError:
    from click.exceptions import MissingParameter
from typer.main import get_command
from typer.testing import CliRunner

from enfold.artifact.formats import BACKENDS, EXPORT_FORMATS, PRECISIONS
from enfold.artifact.ort import ORT_PROVIDERS
from enfold.artifact.target_table import TARGETS
from enfold.cli import options
from enfold.cli.app import app

TRAINING = {"pretrain", "finetune", "evaluate", "visualize"}
DEPLOYMENT = {"export", "validate", "models", "predict", "restore", "score", "serve", "bench"}


def _values(choice) -> list[str]:
    return [member.value for member in choice]


def test_the_choices_are_the_tables_and_registries():
    from enfold.config import FinetuneConfig
    from enfold.corrupt import available
    from enfold.runtime.restore import TASKS

    assert _values(options.Target) == list(TARGETS)
    assert _values(options.ExportFormat) == list(EXPORT_FORMATS)
    assert _values(options.Precision) == list(PRECISIONS)
    assert _values(options.Backend) == ["auto", *BACKENDS]
    assert _values(options.Provider) == list(ORT_PROVIDERS)
    assert sorted(_values(options.Task)) == sorted(TASKS) == available()
    mode = typing.get_type_hints(FinetuneConfig)["mode"]
    assert _values(options.FinetuneMode) == list(typing.get_args(mode))


def test_restore_takes_every_shipped_restorers_task():
    from enfold.zoo import list_models

    restorers = {m.task for m in list_models() if m.target == "restorer"}
    assert set(_values(options.Task)) | restorers <= set(_values(options.RestoreTask))


def test_a_choice_is_the_string_the_user_typed():
    assert options.typed(options.Backend("onnxruntime")) == "onnxruntime"
    assert isinstance(options.Backend("torch"), str)
    assert options.typed(None) is None and options.typed("cpu") == "cpu"


@pytest.mark.parametrize(("args", "option"), [
    (["export", "--checkpoint", "c.pt", "--target", "segmenter", "--out", "x"], "--target"),
    (["export", "--checkpoint", "c.pt", "--target", "energy", "--format", "tflite", "--out",
      "x"], "--format"),
    (["export", "--checkpoint", "c.pt", "--target", "energy", "--precision", "int8", "--out",
      "x"], "--precision"),
    (["predict", "a.png", "-m", "m.onnx", "--backend", "openvino"], "--backend"),
    (["score", "a.png", "-m", "m.onnx", "--device", "tpu"], "--device"),
    (["serve", "-m", "m.onnx", "--provider", "rocm"], "--provider"),
    (["restore", "a.png", "--task", "deblur", "--out", "x"], "--task"),
    (["finetune", "-c", "c.yaml", "-o", "x", "--mode", "lora"], "--mode"),
])
def test_a_bad_choice_is_refused_by_typer_naming_the_choices(args, option, tmp_path):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output
    choice = {"--target": options.Target, "--format": options.ExportFormat,
              "--precision": options.Precision, "--backend": options.Backend,
              "--device": options.Device, "--provider": options.Provider,
              "--task": options.RestoreTask, "--mode": options.FinetuneMode}[option]
    assert all(f"'{v}'" in result.output for v in _values(choice))


def test_help_lists_the_choices():
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "|".join(EXPORT_FORMATS) in result.output and "|".join(TARGETS) in result.output


def test_every_command_is_top_level_in_its_panel():
    group = get_command(app)
    assert set(group.commands) == TRAINING | DEPLOYMENT
    for name, command in group.commands.items():
        assert command.rich_help_panel == ("Training" if name in TRAINING else "Deployment")
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = result.output
    assert result.exit_code == 0 and text.index("Training") < text.index("Deployment")
    assert all(re.search(rf"\b{name}\b", text) for name in TRAINING | DEPLOYMENT)


def _documented_commands() -> list[str]:
    """Every ``enfold ...`` line of the code blocks of README.md and docs/*.md, continuation
    lines joined, optional ``[...]`` parts dropped."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        in_code, pending = False, ""
        for line in doc.read_text().splitlines():
            if line.lstrip().startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if not in_code:
                continue
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text.startswith("enfold "):
                found.append(re.sub(r"\[[^\]]*\]", "", text))
    return found


def test_every_documented_command_line_still_parses():
    group = get_command(app)
    lines = _documented_commands()
    assert len(lines) > 20
    for line in lines:
        _, name, *args = shlex.split(line, comments=True)
        if "--help" in (name, *args):
            continue
        assert name in group.commands, line
        # parses the options and checks every choice, without running the command; a line
        # that elides some options ("...") may miss a required one
        try:
            group.commands[name].make_context(name, list(args))
        except MissingParameter:
            assert "..." in args, line
