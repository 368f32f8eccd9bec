"""The training commands: ``enfold pretrain``, ``finetune``, ``evaluate`` and ``visualize``
(registered on the one ``enfold`` app by ``enfold.cli.app``). Heavy imports happen inside the
commands, so ``--help`` is fast."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from enfold.cli.options import OVERWRITE_OPT, SET_HELP, TRAINING_PANEL, FinetuneMode, Task, typed
from enfold.cli.outputs import check_out_dir, check_out_file

commands = typer.Typer()
command = commands.command


def _load(config: Path | None, overrides: list[str], max_steps: int | None, no_compile: bool):
    from enfold.config import load_config

    extra = list(overrides)
    if max_steps is not None:
        extra.append(f"train.max_steps={max_steps}")
    if no_compile:
        extra.append("train.compile=false")
    return load_config(config, extra)


@contextmanager
def _interrupted_run(out: Path) -> Iterator[None]:
    """Ctrl-C during training: say what is left to resume from, exit 130. (Typer turns a
    KeyboardInterrupt that leaves the command into a silent exit 130, so it is caught here.)"""
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            last = out / "checkpoint-last.pt"
            what = (f"{last} is intact: rerun the same command to resume" if last.is_file() else
                    "no checkpoint was written yet: a rerun starts from the beginning")
            typer.secho(f"interrupted; {what}", err=True)
        raise typer.Exit(130) from None


# the options every training stage takes
RUN_OUT_OPT = typer.Option(..., "--out", "-o", help="Run directory (resumed if it holds one).")
MAX_STEPS_OPT = typer.Option(None, min=1, help="Optimizer steps (overrides train.max_steps).")
SET_OPT = typer.Option([], "--set", help=SET_HELP)
NO_COMPILE_OPT = typer.Option(False, "--no-compile", help="Train eagerly.")
RESUME_OPT = typer.Option(False, "--resume", help="Require a checkpoint in --out to resume.")


@command(rich_help_panel=TRAINING_PANEL)
def pretrain(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config (see configs/pretrain)."),
    out: Path = RUN_OUT_OPT,
    max_steps: int | None = MAX_STEPS_OPT,
    set_: list[str] = SET_OPT,
    no_compile: bool = NO_COMPILE_OPT,
    resume: bool = RESUME_OPT,
) -> None:
    """Pretrain an energy ViT: restore corrupted images by descending its energy."""
    from enfold.pipeline.pretrain import run_pretrain

    check_out_dir(out)
    cfg = _load(config, set_, max_steps, no_compile)
    with _interrupted_run(out):
        path = run_pretrain(cfg, out, resume=resume)
    if os.environ.get("RANK", "0") == "0":  # one line per job, not per torchrun process
        typer.echo(f"done: {path}")


@command(rich_help_panel=TRAINING_PANEL)
def finetune(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config (see configs/finetune)."),
    out: Path = RUN_OUT_OPT,
    pretrained: Path | None = typer.Option(
        None, help="checkpoint-last.pt of a pretrain run; without it, train from scratch."),
    mode: FinetuneMode | None = typer.Option(None, help="Overrides finetune.mode."),
    max_steps: int | None = MAX_STEPS_OPT,
    set_: list[str] = SET_OPT,
    no_compile: bool = NO_COMPILE_OPT,
    resume: bool = RESUME_OPT,
) -> None:
    """Fine-tune a classifier (full or linear probe) or score kNN on frozen features."""
    from enfold.pipeline.finetune import run_finetune

    check_out_dir(out)
    extra = [*set_, *([f"finetune.mode={typed(mode)}"] if mode else [])]
    cfg = _load(config, extra, max_steps, no_compile)
    with _interrupted_run(out):
        result = run_finetune(cfg, out, pretrained=pretrained, resume=resume)
    if os.environ.get("RANK", "0") != "0":
        return
    if isinstance(result, dict):
        typer.echo(f"kNN top-1 {result['top1']:.4f} on {result['count']} held-out images")
    else:
        typer.echo(f"done: {result}")


@command(rich_help_panel=TRAINING_PANEL)
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A finetune checkpoint."),
    data: str | None = typer.Option(
        None, help="digits or folder:PATH (default: the data the checkpoint was trained on)."),
    out: Path | None = typer.Option(None, help="Directory for eval.json and confusion.png."),
    overwrite: bool = OVERWRITE_OPT,
) -> None:
    """Top-1, top-5 and per-class accuracy on held-out images, and a confusion matrix."""
    from enfold.output_files import refuse_existing
    from enfold.pipeline.finetune import evaluate_checkpoint

    if out is not None:
        check_out_dir(out)
        refuse_existing([out / "eval.json", out / "confusion.png"], overwrite)
    metrics = evaluate_checkpoint(checkpoint, data, out)
    for key, value in metrics.items():
        if key.startswith("top"):
            typer.echo(f"{key}: {value:.4f}")
    typer.echo("per-class accuracy:")
    for name, acc in metrics["per_class"].items():
        typer.echo(f"  {name}: {'n/a' if acc is None else f'{acc:.4f}'}")
    if out:
        typer.echo(f"wrote {out / 'eval.json'} and {out / 'confusion.png'}")




@command(rich_help_panel=TRAINING_PANEL)
def visualize(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A pretrain checkpoint."),
    task: Task = typer.Option(..., "--task", help="Pretext task."),
    out: Path = typer.Option(..., "--out", help="PNG to write."),
    num: int = typer.Option(8, help="Number of held-out images (rows)."),
    steps: int | None = typer.Option(None, help="Restoration steps (default: the trained K)."),
    seed: int = typer.Option(1234, help="Seed of the corruptions."),
    overwrite: bool = OVERWRITE_OPT,
) -> None:
    """Draw held-out images as corrupted | step 1 .. step K | clean, and print their PSNR."""
    from enfold.output_files import refuse_existing
    from enfold.pipeline.visualize import visualize_checkpoint

    check_out_file(out)
    refuse_existing([out], overwrite)
    metrics = visualize_checkpoint(checkpoint, typed(task), out, num=num, steps=steps, seed=seed)
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.2f} dB")
    typer.echo(f"wrote {out}")


