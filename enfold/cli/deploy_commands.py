"""The deployment commands: ``enfold export``, ``validate``, ``models``, ``predict``,
``restore``, ``score``, ``serve`` and ``bench`` (registered on the one ``enfold`` app by
``enfold.cli.app``). Heavy imports happen inside the commands, so ``--help`` is fast and works
without optional libraries."""

from __future__ import annotations

from pathlib import Path

import typer

from enfold.artifact.formats import is_format
from enfold.cli.options import (
    DEPLOYMENT_PANEL,
    OVERWRITE_OPT,
    Backend,
    Device,
    ExportFormat,
    Precision,
    Provider,
    RestoreTask,
    Target,
    Task,
    typed,
)
from enfold.cli.outputs import check_out_dir, check_out_file
from enfold.errors import EnfoldError

commands = typer.Typer()
command = commands.command


@command(rich_help_panel=DEPLOYMENT_PANEL)
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A pretrain or finetune checkpoint."),
    target: Target = typer.Option(..., help="What to export."),
    format_: ExportFormat = typer.Option(ExportFormat("onnx"), "--format",
                                         help="safetensors: the encoder as timm weights."),
    out: Path = typer.Option(..., "--out", help="Directory for the artifact and its sidecar."),
    steps: int | None = typer.Option(None, help="Restorer steps K (default: the trained K)."),
    task: Task | None = typer.Option(None, help="Restorer task (default: the first trained)."),
    grid_shifts: int | None = typer.Option(
        None, "--grid-shifts", help="Restorer and energy: average the energy over 1 patch grid "
        "(default) or 4 (shifted by half a patch: fewer block seams, 4x the compute)."),
    step_decay: float | None = typer.Option(
        None, "--step-decay", help="Restorer: each step beyond the trained K is this times the "
        "one before, in (0, 1] (default 1: all of them the last trained step; the model card's "
        "PSNR by K shows which K and decay help)."),
    batch: str = typer.Option("1:8:32", help="MIN:OPT:MAX batch (TensorRT profile; the "
                              "TorchScript restorer is traced at OPT)."),
    precision: Precision = typer.Option(Precision("fp32"),
                                        help="fp16: mixed, norms and I/O in fp32."),
    validate: bool = typer.Option(True, "--validate/--no-validate",
                                  help="Compare with PyTorch on held-out images."),
    triton_repo: Path | None = typer.Option(
        None, "--triton-repo", help="Also write a Triton model repository entry here "
        "(DIR/<name>/config.pbtxt, DIR/<name>/1/model.*)."),
    overwrite: bool = OVERWRITE_OPT,
) -> None:
    """Export a classifier, encoder, energy or unrolled K-step restorer; write a model card."""
    from enfold.export.export import export_artifact

    check_out_dir(out)
    if triton_repo is not None:
        check_out_dir(triton_repo, "--triton-repo")
    result = export_artifact(str(checkpoint), typed(target), typed(format_), out, steps,
                             typed(task), batch, typed(precision), validate, triton_repo,
                             grid_shifts, overwrite=overwrite, step_decay=step_decay)
    typer.echo(f"wrote {result['artifact']} (+ {Path(result['sidecar']).name}, "
               f"model card {result['card']})")
    if "triton" in result:
        typer.echo(f"wrote Triton entry {result['triton']['config']} and "
                   f"{result['triton']['model']}")
    if "validation" in result:
        _print_report(result["validation"])


@command("validate", rich_help_panel=DEPLOYMENT_PANEL)
def validate_cmd(
    artifact: Path = typer.Argument(..., help="An exported .onnx, .ts or .engine file, "
                                    "model.safetensors (timm weights), or a shipped model's name "
                                    "(enfold models)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint",
                                           help="The checkpoint it came from."),
    reference: Path | None = typer.Option(
        None, "--reference", help="Recorded outputs on a fixed input (.reference.npz), instead "
        "of the checkpoint (default for a shipped model: its own)."),
    tolerance: float | None = typer.Option(None, help="Max abs error (default: by precision)."),
    batches: str = typer.Option("1,3,8", help="Batch sizes to check against the checkpoint, "
                                "comma-separated."),
) -> None:
    """Run PyTorch and the artifact on held-out images, or the artifact on a fixed input against
    its recorded outputs; fail beyond the tolerance."""
    from enfold.export.validate import validate_artifact
    from enfold.runtime.bench import parse_batches

    sizes = tuple(parse_batches(batches, "--batches"))
    if checkpoint is None:
        _validate_recorded(artifact, reference, tolerance)
        return
    if reference is not None:
        raise EnfoldError("pass --checkpoint or --reference, not both")
    artifact = _model_file(artifact)
    if is_format(artifact, "safetensors"):  # timm weights: timm's own loader vs enfold
        from enfold.export.timm_weights import validate_timm_weights

        _print_report(validate_timm_weights(artifact.parent, str(checkpoint)))
        return
    _print_report(validate_artifact(artifact, str(checkpoint), sizes, tolerance=tolerance))


def _validate_recorded(artifact: Path, reference: Path | None,
                       tolerance: float | None) -> None:
    """``enfold validate`` without a checkpoint: every artifact of a shipped model, or one file,
    against recorded outputs."""
    from enfold.zoo import get
    from enfold.zoo.reference import check_reference, reference_path

    if artifact.exists():
        pairs = [(artifact, reference or reference_path(artifact))]
        if reference is None and not pairs[0][1].is_file():
            raise EnfoldError(f"{artifact}: pass --checkpoint (the checkpoint it came from) or "
                              "--reference (its recorded outputs, .reference.npz)")
    else:
        _model_file(artifact)  # a missing file or an unknown name: the error says which
        model = get(str(artifact))  # a shipped model: each of its artifacts, its own references
        if reference is not None:
            raise EnfoldError(f"{model.name} is a shipped model, checked against its own "
                              "recorded outputs: drop --reference")
        pairs = [(model.folder / name, ref) for name, ref in model.references.items()]
    for path, ref in pairs:
        typer.echo(f"{path} against {ref}:")
        _print_report(check_reference(path, ref, tolerance))


def _print_report(report: dict) -> None:
    for key, value in report.items():
        if key in ("onnx_ops",):
            value = ", ".join(value)
        elif key == "max_abs_by_batch":
            value = ", ".join(f"batch {b}: {v:.3g}" for b, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.6g}"
        typer.echo(f"  {key}: {value}")




@command(rich_help_panel=DEPLOYMENT_PANEL)
def models(
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the trained models shipped with enfold: name, task, input, held-out number, size,
    sha256 and the commands that reproduce each. Pass a name wherever --model takes a file."""
    import json

    from enfold.zoo import list_models, zoo_dir

    shipped = list_models()
    if json_:
        typer.echo(json.dumps([{**m.entry, "artifact": str(m.artifact),
                                "total_bytes": m.total_bytes} for m in shipped], indent=2))
        return
    if not shipped:
        typer.echo(f"no models ship in {zoo_dir()} yet (make models builds them)")
        return
    rows = [("name", "task", "input", "precision", "size", "held-out")]
    rows += [(m.name, m.task, f"{m.img_size}x{m.img_size}x{m.in_chans}", m.precision,
              f"{m.total_bytes / 2**20:.2f} MiB", m.describe_metric()) for m in shipped]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for i, row in enumerate(rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  "
                   + row[-1])
        if i:
            m = shipped[i - 1]
            typer.echo(f"    sha256 {m.sha256}  {m.artifact}")
            typer.echo(f"    reproduce: {' && '.join(m.reproduce)}")
    total = sum(m.total_bytes for m in shipped)
    typer.echo(f"{len(shipped)} models, {total / 2**20:.2f} MiB in {zoo_dir()}")


# ----------------------------------------------------------------------------- inference

MODEL_HELP = ("An artifact from `enfold export` (.onnx, .ts, .engine), a checkpoint (.pt), or "
              "a shipped model's name (enfold models).")
BACKEND_HELP = "auto: the fastest that loads this model here."
DEVICE_HELP = "Default: cuda when a GPU is visible."
PROVIDER_HELP = "onnxruntime execution provider (default: best available)."


# Options shared by predict, restore, score, serve and bench (typer copies them per command).
IMAGES_ARG = typer.Argument(..., help="Image files or directories.")
MODEL_OPT = typer.Option(..., "--model", "-m", help=MODEL_HELP)
BACKEND_OPT = typer.Option(Backend("auto"), help=BACKEND_HELP)
DEVICE_OPT = typer.Option(None, help=DEVICE_HELP)
PROVIDER_OPT = typer.Option(None, help=PROVIDER_HELP)
JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of text.")
# The work budget of one image, checked from its header before decoding (enfold.runtime.budget).
MAX_PIXELS_OPT = typer.Option(20_000_000, "--max-pixels", min=1,
                              help="Most pixels an image may decode to.")
MAX_ASPECT_OPT = typer.Option(20.0, "--max-aspect", min=1.0,
                              help="Largest ratio of an image's longer to shorter side.")
MAX_TILES_OPT = typer.Option(1024, "--max-tiles", min=1,
                             help="Most model-sized tiles one restoration may run.")


def _budget(max_pixels: int, max_aspect: float, max_tiles: int):
    from enfold.runtime.budget import WorkBudget

    return WorkBudget(max_pixels=max_pixels, max_aspect=max_aspect, max_tiles=max_tiles)


def _report(results: list[dict], as_json: bool, line) -> None:
    """Results as one JSON document, or one text line each."""
    import json

    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            typer.echo(line(r))


def _model_file(model: Path) -> Path:
    """What --model names: an existing path, else a shipped model's artifact (enfold models);
    anything else is an error listing the shipped names."""
    from enfold.zoo import resolve

    return resolve(model)


def _serve_specs(models: list[str], all_models: bool) -> list[str]:
    """serve's --model values as ``NAME=PATH`` where a shipped model's name was given (so it
    is served under that name), plus every shipped model with --all."""
    from enfold.runtime.repository import split_spec
    from enfold.zoo import list_models

    if not models and not all_models:
        raise EnfoldError("pass --model (an artifact or a shipped model's name; repeatable) or "
                          "--all to serve every shipped model (enfold models lists them)")
    specs = []
    for spec in models:
        name, path = split_spec(spec)
        if name is None and not path.exists():  # a shipped model's name
            name = str(path)
        specs.append(f"{name}={_model_file(path)}" if name else str(path))
    if all_models:
        specs += [f"{m.name}={m.artifact}" for m in list_models()]
        if not specs:
            raise EnfoldError("--all: no models ship with this install yet; pass --model")
    return specs


def _restore_model(model: Path | None, task: str | None) -> tuple[Path, str | None]:
    """restore's --model and --task: without --model, the shipped model of --task, which then
    restores its own corruption (sr4 is the sr corruption at x4)."""
    if model is not None:
        return _model_file(model), task
    if task is None:
        raise EnfoldError("pass --model (an artifact or a shipped model's name), or --task to "
                          "use the shipped model of that task (enfold models lists them)")
    from enfold.zoo import for_task

    return for_task(task).artifact, None


def _session(model: Path, backend: Backend, device: Device | None, provider: Provider | None):
    from enfold.runtime import load

    path = _model_file(model)
    session = load(path, backend=typed(backend), device=typed(device), provider=typed(provider))
    shown = model if path == model else f"{model} ({path})"
    typer.echo(f"model: {shown} on {session.describe()}", err=True)
    return session


def _finish(errors: dict[str, str]) -> None:
    """Report unreadable inputs after every readable one has its result; exit 1 if any."""
    for path, why in errors.items():
        typer.secho(f"skipped {path}: {why}", fg=typer.colors.YELLOW, err=True)
    if errors:
        raise typer.Exit(1)


@command(rich_help_panel=DEPLOYMENT_PANEL)
def predict(
    images: list[Path] = IMAGES_ARG,
    model: Path = MODEL_OPT,
    top_k: int = typer.Option(5, "--top-k", min=1, help="Labels to show per image."),
    json_: bool = JSON_OPT,
    backend: Backend = BACKEND_OPT,
    device: Device | None = DEVICE_OPT,
    provider: Provider | None = PROVIDER_OPT,
    max_pixels: int = MAX_PIXELS_OPT,
    max_aspect: float = MAX_ASPECT_OPT,
) -> None:
    """Classify images: the top-k labels and their probabilities."""
    from enfold.runtime.commands import predict_files
    from enfold.runtime.images import list_images

    budget = _budget(max_pixels, max_aspect, 1)
    session = _session(model, backend, device, provider)
    results, errors = predict_files(session, list_images(images), top_k, budget)
    _report(results, json_, lambda r: f"{r['file']}: {r['label']}   (" + "  ".join(
        f"{t['label']} {t['score']:.3f}" for t in r["top_k"]) + ")")
    _finish(errors)


# `enfold restore` runs on the user's own files, so its limits fit camera photos (a 50 MP
# image at 8-pixel tiles); `enfold serve` keeps the stricter defaults above for uploads.
RESTORE_MAX_PIXELS_OPT = typer.Option(50_000_000, "--max-pixels", min=1,
                                      help="Most pixels an image may decode to.")
RESTORE_MAX_TILES_OPT = typer.Option(4_000_000, "--max-tiles", min=1,
                                     help="Most model-sized tiles one restoration may run.")


def _tile_bar(path: Path):
    """A tqdm bar of the tiles restored, for images of more than a few batches."""
    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            from tqdm import tqdm

            state["bar"] = (tqdm(total=total, desc=path.name, unit="tile", leave=False,
                                 dynamic_ncols=True) if total > 256 else None)
        bar = state["bar"]
        if bar is not None:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

    return update


@command(rich_help_panel=DEPLOYMENT_PANEL)
def restore(
    images: list[Path] = IMAGES_ARG,
    model: Path | None = typer.Option(
        None, "--model", "-m", help=MODEL_HELP + " Default: the shipped model of --task."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the PNGs."),
    task: RestoreTask | None = typer.Option(
        None, help="What the photos suffer from (default: the restorer's task; sr4, without "
                   "--model: the shipped x4 sr restorer)."),
    sigma: float | None = typer.Option(
        None, "--sigma", help="noise: the noise level in pixel units in (0, 1) (0.05 is 13 of "
                              "255), for noise-level restorers; estimated from each image when "
                              "not given."),
    passes: int | None = typer.Option(
        None, "--passes", min=1, max=4,
        help="noise: restore this many times, each pass given the noise level estimated from "
             "the one before (default: 2, or 1 at the lowest noise levels)."),
    scale: int | None = typer.Option(
        None, "--scale", help="sr: the inputs are low-resolution; write them 2 or 4 times "
                              "larger (the restorer's factor, or a power of it: an x2 "
                              "restorer runs twice for 4)."),
    mask: Path | None = typer.Option(
        None, "--mask", help="mask: an image of the inputs' size, white where pixels are "
                             "missing (any shape)."),
    tile_stride: int | None = typer.Option(
        None, "--tile-stride", min=1,
        help="Pixels between overlapping tiles' corners, up to the tile size (default: about "
             "2/3 of a tile, off the patch grid; sr: a multiple of the factor; shuffle, mask: "
             "of the patch size). Larger: fewer tiles, faster, less blending."),
    simulate: bool = typer.Option(
        False, "--simulate", help="Inputs are clean: corrupt them with --task first (seeded by "
                                  "--seed), restore, and report PSNR."),
    degraded: bool = typer.Option(False, "--degraded", hidden=True,
                                  help="Accepted and ignored, for old scripts: inputs are "
                                       "degraded by default now."),
    seed: int = typer.Option(0, min=0, help="Seed of the --simulate corruption."),
    keep_known: bool = typer.Option(
        True, help="Keep the pixels known exactly (outside the holes of a mask) instead of "
                   "the model's version of them."),
    backend: Backend = BACKEND_OPT,
    device: Device | None = DEVICE_OPT,
    provider: Provider | None = PROVIDER_OPT,
    max_pixels: int = RESTORE_MAX_PIXELS_OPT,
    max_aspect: float = MAX_ASPECT_OPT,
    max_tiles: int = RESTORE_MAX_TILES_OPT,
    overwrite: bool = OVERWRITE_OPT,
) -> None:
    """Restore degraded photos at full resolution (overlapping tiles, blended without seams);
    write restored PNGs and panels (never over an input: names are made unique; never over
    other files without --overwrite)."""
    from enfold.output_files import refuse_existing
    from enfold.runtime.commands import restore_files, restore_outputs
    from enfold.runtime.images import list_images

    check_out_dir(out)
    budget = _budget(max_pixels, max_aspect, max_tiles)
    files = list_images(images)
    model, task_name = _restore_model(model, typed(task))
    refuse_existing(restore_outputs(files, out), overwrite)  # before the model loads
    session = _session(model, backend, device, provider)
    results, errors = restore_files(session, files, out, task_name, seed, simulate, keep_known,
                                    budget, sigma=sigma, scale=scale, mask=mask,
                                    progress=_tile_bar, overwrite=overwrite, stride=tile_stride,
                                    passes=passes)
    for r in results:
        psnr = (f"  PSNR on the {r['task']} region: input {r['psnr_input']:.2f} dB -> restored "
                f"{r['psnr_restored']:.2f} dB" if "psnr_input" in r else "")
        noise = (f"  sigma {r['sigma']:.4f} ({r['sigma_source']})" if "sigma" in r else "")
        if r.get("passes", 1) > 1:
            noise += ", then " + ", ".join(f"{s:.4f}" for s in r["sigma_passes"][1:]) + (
                " (estimated after each pass)")
        typer.echo(f"{r['file']} -> {r['restored']}{noise}{psnr}")
    typer.echo(f"wrote {out / 'restore.json'}")
    _finish(errors)


@command(rich_help_panel=DEPLOYMENT_PANEL)
def score(
    images: list[Path] = IMAGES_ARG,
    model: Path = MODEL_OPT,
    json_: bool = JSON_OPT,
    backend: Backend = BACKEND_OPT,
    device: Device | None = DEVICE_OPT,
    provider: Provider | None = PROVIDER_OPT,
    max_pixels: int = MAX_PIXELS_OPT,
    max_aspect: float = MAX_ASPECT_OPT,
) -> None:
    """Print each image's energy (low: like the training data)."""
    from enfold.runtime.commands import score_files
    from enfold.runtime.images import list_images

    budget = _budget(max_pixels, max_aspect, 1)
    session = _session(model, backend, device, provider)
    results, errors = score_files(session, list_images(images), budget)
    _report(results, json_, lambda r: f"{r['file']}: {r['energy']:.6g}")
    _finish(errors)


@command(rich_help_panel=DEPLOYMENT_PANEL)
def serve(
    model: list[str] = typer.Option(
        [], "--model", "-m",
        help=MODEL_HELP + " Repeat for several models side by side, each under its name "
        "(NAME=PATH names one; default: a shipped model's name, the artifact's own name, a "
        "checkpoint's file stem)."),
    all_models: bool = typer.Option(
        False, "--all", help="Serve every shipped model (enfold models) under its name."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    max_batch: int = typer.Option(16, "--max-batch", min=1,
                                  help="Most images run in one batch."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0,
                                      help="Longest wait for a batch to fill."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Upload size limit (MiB)."),
    max_pixels: int = MAX_PIXELS_OPT,
    max_aspect: float = MAX_ASPECT_OPT,
    max_tiles: int = MAX_TILES_OPT,
    request_timeout: float = typer.Option(
        30.0, "--request-timeout", help="Seconds a request may run before it gets a 504."),
    drain: float = typer.Option(
        5.0, "--drain", help="Seconds running requests get to finish after SIGTERM; the rest "
        "get a 503."),
    max_connections: int = typer.Option(
        1000, "--max-connections", min=1,
        help="Most open connections (lowered to fit ulimit -n); at the cap the connection "
        "idle longest is closed."),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout",
        help="Seconds a connection may stay open without a request running (a request head "
        "must arrive within it)."),
    keep_alive: float = typer.Option(
        5.0, "--keep-alive", help="Seconds an idle kept-alive connection stays open."),
    max_json_depth: int = typer.Option(
        32, "--max-json-depth", min=1, help="Deepest nesting of a /v2 JSON body."),
    max_json_elements: int | None = typer.Option(
        None, "--max-json-elements", min=1,
        help="Most values in a /v2 JSON body (default: twice the model's largest batch of "
        "values, plus 4096)."),
    backend: Backend = BACKEND_OPT,
    device: Device | None = DEVICE_OPT,
    provider: Provider | None = PROVIDER_OPT,
) -> None:
    """Serve classify, restore and energy over HTTP (one model or several), batching
    concurrent requests."""
    from enfold.runtime.connections import ConnectionLimits
    from enfold.runtime.server import serve as run_server

    specs = _serve_specs(model, all_models)
    run_server(specs, backend=typed(backend), device=typed(device), provider=typed(provider),
               host=host, port=port,
               max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb,
               budget=_budget(max_pixels, max_aspect, max_tiles),
               request_timeout_s=request_timeout, drain_s=drain,
               connections=ConnectionLimits(max_connections, header_timeout, keep_alive),
               max_json_depth=max_json_depth, max_json_elements=max_json_elements)


@command(rich_help_panel=DEPLOYMENT_PANEL)
def bench(
    model: Path = MODEL_OPT,
    backends: str | None = typer.Option(
        None, help="Comma-separated backends (default: every one that loads)."),
    batch: str = typer.Option("1,8,32", help="Batch sizes, comma-separated."),
    seconds: float = typer.Option(3.0, help="Timed seconds per backend and batch size."),
    device: Device | None = DEVICE_OPT,
    out: Path | None = typer.Option(None, help="JSON report (default: MODEL.bench.json)."),
    overwrite: bool = OVERWRITE_OPT,
) -> None:
    """Latency p50/p95 and images/s of every available backend, and each one's speedup vs
    PyTorch eager."""
    import json

    from enfold.output_files import refuse_existing, write_output
    from enfold.runtime.bench import bench as run_bench
    from enfold.runtime.bench import format_table, parse_batches

    path = _model_file(model)
    # a shipped model's report goes to the working directory, not into the installed package
    default = (model if path == model else Path(model.name)).with_name(model.name + ".bench.json")
    out = check_out_file(out or default)
    refuse_existing([out], overwrite)
    names = [b.strip() for b in backends.split(",")] if backends else None
    report = run_bench(path, names, parse_batches(batch), seconds, typed(device))
    typer.echo(format_table(report))
    write_output(out, json.dumps(report, indent=2))
    typer.echo(f"wrote {out}")

