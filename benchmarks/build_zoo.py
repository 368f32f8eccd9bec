"""Build the model zoo that ships inside the package, from finished training runs.

    python benchmarks/build_zoo.py                       # every model of SHIPPED -> enfold/zoo/
    python benchmarks/build_zoo.py --only restore-sr     # refresh one entry, keep the others

For each model: export its checkpoint to ONNX (validated against PyTorch on held-out images),
in fp32 and in fp16; measure the held-out number of each through the runtime
(``enfold.zoo.heldout``: PSNR on fixed held-out photo crops for restorers, top-1 on a fixed
Fashion-MNIST test subset for the classifier, kNN top-1 for the encoder) and keep fp16 only where
it stays within ``enfold.zoo.checks.TOLERANCE`` of fp32 (0.05 dB, 0.2 points); the encoder also
ships as timm weights. Beside each artifact: its sidecar, the model card, the run's resolved
config and a fixed input with its recorded outputs. Then ``enfold/zoo/registry.json`` (name,
task, sizes, held-out number and data set, bytes, sha256, the commands that reproduce it) and the
README's "Shipped models" table between ``<!-- zoo:start -->`` and ``<!-- zoo:end -->``.

A run that is missing is an error before any work; a model whose export this enfold refuses (a
noise-level restorer, whose graph would need the level as a second input) is skipped with the
reason, and the others are built. ``make models`` trains every run first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import write_section  # noqa: E402

from enfold.errors import EnfoldError  # noqa: E402

SIZE_BUDGET_MB = 32.0  # the shipped models together; the build fails above it
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class ModelSpec:
    """One shipped model: where its run is and how it is exported."""

    name: str
    task: str  # what `enfold restore --task` / enfold.zoo.for_task names it by
    target: str  # restorer | classifier | encoder
    run: str  # run directory (relative to the repository, or absolute)
    config: str  # the config the run was trained from
    train: tuple[str, ...]  # the commands that train the run from nothing
    description: str
    grid_shifts: int | None = None
    steps: int | None = None  # a restorer's K, default the trained K
    step_decay: float | None = None  # steps beyond the trained K shrink by it (--step-decay)
    timm: bool = False  # the encoder also as timm weights (model.safetensors + config.json)
    try_fp16: bool = True
    metric_args: dict[str, Any] = field(default_factory=dict)  # count, bank_per_class


def _restorer(task: str, what: str, grid_shifts: int | None = None,
              recipe: str | None = None, steps: int | None = None,
              step_decay: float | None = None) -> ModelSpec:
    """The shipped restorer of ``task``, trained from configs/pretrain/restore-<recipe>.yaml
    (``recipe`` defaults to the task) into runs/restore/<recipe>, exported with ``steps``
    and ``step_decay`` when given."""
    recipe = recipe or task
    run, config = f"runs/restore/{recipe}", f"configs/pretrain/restore-{recipe}.yaml"
    return ModelSpec(task, task, "restorer", run, config,
                     (f"enfold pretrain --config {config} --out {run}",),
                     f"restores {what} in colour photos (32x32 tiles)", grid_shifts, steps,
                     step_decay)


# the encoder of 16 epochs at twice fmnist-tiny's learning rate (configs/pretrain/fmnist-16ep.yaml):
# fine-tuned from 10 labels per class it beats the 1-epoch one by about 10 points and the 16-epoch
# one at fmnist-tiny's learning rate by 1 (docs/RESULTS.md, learning curves)
FMNIST_PRE = "runs/zoo/fmnist-pretrain-16ep"
FMNIST_FT = "runs/zoo/fmnist-finetune-16ep"
FMNIST_PRE_CONFIG = "configs/pretrain/fmnist-16ep.yaml"
FMNIST_TRAIN = (f"enfold pretrain --config {FMNIST_PRE_CONFIG} --out {FMNIST_PRE}",)
SHIPPED = (
    # noise: one model for sigma 0.02 to 0.2, sigma a second input of the graph; one patch
    # grid: the runtime's blended overlapping tiles already average over tile positions, at a
    # quarter of the cost of 4 grid shifts
    _restorer("noise", "Gaussian noise of a given or estimated level (sigma 0.02 to 0.2)"),
    _restorer("sr", "detail lost to 2x downscaling"),
    _restorer("sr4", "detail lost to 4x downscaling"),
    # trained on free-form holes (strokes, blobs, boxes) half the time and 4x4 patches otherwise
    _restorer("mask", "holes of any shape given by a mask", recipe="mask-freeform"),
    _restorer("gray", "colour in grayscale photos"),
    _restorer("shuffle", "shuffled 4x4 patches"),
    ModelSpec("fmnist-encoder", "features", "encoder", FMNIST_PRE, FMNIST_PRE_CONFIG, FMNIST_TRAIN,
              "Fashion-MNIST features (28x28 gray), pretrained without labels", timm=True),
    ModelSpec("fmnist-classifier", "classify", "classifier", FMNIST_FT,
              "configs/finetune/fmnist-tiny.yaml",
              (*FMNIST_TRAIN, "enfold finetune --config configs/finetune/fmnist-tiny.yaml "
               f"--pretrained {FMNIST_PRE}/checkpoint-last.pt --out {FMNIST_FT}"),
              "Fashion-MNIST classes (28x28 gray), fine-tuned from 10 labels per class"),
)


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (what the sidecars,
    cards and registry record), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _checkpoint(spec: ModelSpec, runs_root: Path) -> Path:
    run = Path(spec.run)
    return (run if run.is_absolute() else runs_root / run) / "checkpoint-last.pt"


class Skipped(Exception):
    """This model cannot be built by this enfold; the reason says why."""


def _export(spec: ModelSpec, ckpt: str, out: Path, precision: str) -> dict[str, Any]:
    from enfold.export.export import export_artifact

    return export_artifact(ckpt, spec.target, "onnx", out, precision=precision,
                           grid_shifts=spec.grid_shifts, steps=spec.steps,
                           step_decay=spec.step_decay)


def _drop(artifact: Path) -> None:
    """Remove an export and what travels with it (sidecar, validation report)."""
    from enfold.artifact.sidecar import sidecar_path
    from enfold.export.model_card import VALIDATION_SUFFIX

    for path in (artifact, sidecar_path(artifact), Path(str(artifact) + VALIDATION_SUFFIX)):
        path.unlink(missing_ok=True)


def export_candidates(spec: ModelSpec, ckpt: str, out: Path, config: Path, log
                      ) -> tuple[Path, dict[str, Any], dict[str, float | None]]:
    """Export in fp32 (and fp16), measure each, keep one: ``(artifact, metric, by precision)``."""
    from enfold.export.validate import ValidationError
    from enfold.zoo.checks import TOLERANCE
    from enfold.zoo.heldout import measure

    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for precision in PRECISIONS if spec.try_fp16 else PRECISIONS[:1]:
        t0 = time.time()
        try:
            artifact = Path(_export(spec, ckpt, out, precision)["artifact"])
        except ValidationError as exc:
            if precision == "fp32":  # an fp32 export that disagrees with PyTorch is a bug
                raise
            log(f"  fp16 failed validation, keeping fp32: {exc}")
            continue
        except EnfoldError as exc:  # this enfold refuses to export the checkpoint
            if precision == "fp32":
                raise Skipped(str(exc)) from exc
            log(f"  fp16 export failed, keeping fp32: {exc}")
            continue
        metric = measure(artifact, config, **spec.metric_args)
        found[precision] = (artifact, metric)
        log(f"  {precision}: {artifact.name}, {metric['label']} {metric['value']:.3f} "
            f"{metric['unit']} ({time.time() - t0:.0f} s)")
    values = {p: found[p][1]["value"] if p in found else None for p in PRECISIONS}
    keep = "fp32"
    if "fp16" in found:
        unit = found["fp32"][1]["unit"]
        if abs(values["fp16"] - values["fp32"]) <= TOLERANCE[unit]:
            keep = "fp16"
        log(f"  keeping {keep}: fp16 is {values['fp16'] - values['fp32']:+.3f} {unit} from fp32 "
            f"(kept within {TOLERANCE[unit]})")
    for precision, (artifact, _) in found.items():
        if precision != keep:
            _drop(artifact)
    artifact, metric = found[keep]
    return artifact, metric, values


def _rel(path: Path, zoo: Path) -> str:
    """``path`` as the registry records it: relative to the zoo folder."""
    return Path(path).resolve().relative_to(zoo.resolve()).as_posix()


def _files(zoo: Path, folder: Path) -> dict[str, dict[str, Any]]:
    from enfold.zoo.registry import file_sha256

    return {_rel(p, zoo): {"size_bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def export_command(spec: ModelSpec, ckpt: str, precision: str) -> str:
    parts = [f"enfold export --checkpoint {ckpt} --target {spec.target} --format onnx"]
    if spec.grid_shifts:
        parts.append(f"--grid-shifts {spec.grid_shifts}")
    if spec.steps:
        parts.append(f"--steps {spec.steps}")
    if spec.step_decay:
        parts.append(f"--step-decay {spec.step_decay:g}")
    if precision != "fp32":
        parts.append(f"--precision {precision}")
    return " ".join([*parts, f"--out exports/{spec.name}"])


def build_model(spec: ModelSpec, zoo: Path, runs_root: Path, log=print) -> dict[str, Any]:
    """Build ``zoo/models/<name>/`` from the run of ``spec``; returns its registry entry.
    Raises :class:`Skipped` when this enfold refuses to export the checkpoint."""
    from enfold.artifact.sidecar import read_sidecar
    from enfold.export.model_card import write_model_card
    from enfold.zoo.heldout import reference_input
    from enfold.zoo.reference import record_reference, reference_path
    from enfold.zoo.registry import MODELS_DIR, file_sha256

    ckpt_path = _checkpoint(spec, runs_root)
    ckpt = shown(ckpt_path)
    out = Path(shown(zoo / MODELS_DIR / spec.name))  # relative: reports and cards ship
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = out / "config.yaml"
    shutil.copyfile(ckpt_path.parent / "config.yaml", config)  # the held-out data, for CI
    try:
        artifact, metric, values = export_candidates(spec, ckpt, out, config, log)
    except Skipped:
        shutil.rmtree(out)
        raise
    meta = read_sidecar(artifact)
    artifacts = [artifact]
    if spec.timm:
        from enfold.export.export import export_artifact

        artifacts.append(Path(export_artifact(ckpt, "encoder", "safetensors", out)["artifact"]))
    write_model_card(out)  # once more: the card describes only the exports kept
    fixed = reference_input(artifact, config)
    references = {a.name: _rel(record_reference(a, fixed), zoo) for a in artifacts}
    assert all(reference_path(a).is_file() for a in artifacts)
    precision = meta.precision or "fp32"
    commands = [*spec.train, export_command(spec, ckpt, precision)]
    if spec.timm:
        commands.append(f"enfold export --checkpoint {ckpt} --target encoder --format "
                        f"safetensors --out exports/{spec.name}")
    commands.append(f"python benchmarks/build_zoo.py --only {spec.name}")
    for path in out.iterdir():  # atomic writes leave 0600 files; an install reads them as 0644
        path.chmod(0o644)
    metric = {**metric, "fp32_value": values["fp32"], "fp16_value": values["fp16"]}
    entry = {
        "name": spec.name, "task": spec.task, "target": spec.target,
        "description": spec.description,
        "corruption": meta.task if spec.target == "restorer" else None,
        "img_size": meta.img_size, "in_chans": meta.in_chans, "precision": precision,
        "artifact": _rel(artifact, zoo), "size_bytes": artifact.stat().st_size,
        "sha256": file_sha256(artifact), "metric": metric, "reproduce": commands,
        "config": spec.config, "run_config": _rel(config, zoo),
        "checkpoint_sha256": meta.checkpoint_sha256, "references": references,
        "files": _files(zoo, out),
    }
    return entry


def _versions() -> dict[str, str]:
    from enfold.checkpoint.store import library_versions

    return library_versions()


def write_registry(zoo: Path, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``zoo/registry.json`` with ``entries``, in the order given, and the total size."""
    from enfold.zoo.registry import REGISTRY_NAME, REGISTRY_VERSION

    total = sum(f["size_bytes"] for e in entries for f in e["files"].values())
    doc = {"version": REGISTRY_VERSION, "built_with": _versions(), "total_bytes": total,
           "models": entries}
    (zoo / REGISTRY_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def readme_table(doc: dict[str, Any], budget_mb: float) -> str:
    """The README's generated part: one row per shipped model and the size budget line."""
    from enfold.zoo.registry import model_from_entry

    models = [model_from_entry(e, Path(".")) for e in doc["models"]]
    lines = ["| name | task | input | held-out | precision | size | sha256 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        size = f"{m.img_size}x{m.img_size}x{m.in_chans}"
        lines.append(f"| `{m.name}` | {m.task} | {size} | {m.describe_metric()} | "
                     f"{m.precision} | {mib(m.total_bytes)} | `{m.sha256[:12]}` |")
    if not models:
        lines.append("| (none built yet: `make models`) | | | | | | |")
    lines += ["", f"Size budget: the shipped models take {mib(doc['total_bytes'])} of the "
              f"{budget_mb:g} MiB budget (`benchmarks/build_zoo.py` fails above it); "
              "`enfold models` lists them with their full sha256 and the commands that "
              "reproduce each."]
    return "\n".join(lines)


def build(specs: list[ModelSpec], zoo: Path, runs_root: Path = ROOT,
          readme: Path | None = None, merge: bool = False, budget_mb: float = SIZE_BUDGET_MB,
          log=print) -> tuple[dict[str, Any], dict[str, str]]:
    """Build ``specs`` into ``zoo``: ``(registry document, {skipped name: reason})``. With
    ``merge`` the registry's other entries are kept (``--only``); without it the zoo holds
    exactly what was built."""
    from enfold.zoo.registry import MODELS_DIR, REGISTRY_NAME, read_registry

    missing = [f"{s.name}: {_checkpoint(s, runs_root)}" for s in specs
               if not _checkpoint(s, runs_root).is_file()]
    if missing:
        raise EnfoldError("missing training runs (make models trains them):\n  "
                          + "\n  ".join(missing))
    zoo.mkdir(parents=True, exist_ok=True)
    old = ({e["name"]: e for e in read_registry(zoo)["models"]}
           if merge and (zoo / REGISTRY_NAME).is_file() else {})
    built: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        t0 = time.time()
        log(f"{spec.name}: {spec.target} from {_checkpoint(spec, runs_root)}")
        try:
            built[spec.name] = build_model(spec, zoo, runs_root, log)
        except Skipped as exc:
            skipped[spec.name] = str(exc)
            log(f"  skipped {spec.name}: {exc}")
            continue
        log(f"  built {spec.name} in {time.time() - t0:.0f} s")
    names = [s.name for s in specs]
    entries = [built[n] for n in names if n in built]
    if merge:  # the other entries in their old order, then the new ones; a skipped model's
        # folder is gone, so its old entry goes too
        entries = [built.get(n, e) for n, e in old.items() if n not in skipped]
        entries += [e for n, e in built.items() if n not in old]
    else:  # a model folder no entry names is left from an earlier build
        keep = {e["name"] for e in entries}
        for folder in (zoo / MODELS_DIR).glob("*"):
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)
    doc = write_registry(zoo, entries)
    if doc["total_bytes"] > budget_mb * 2**20:
        raise EnfoldError(f"the zoo takes {mib(doc['total_bytes'])}, above the "
                          f"{budget_mb:g} MiB budget: ship fewer or smaller models, or raise "
                          "--budget-mb")
    if readme is not None:
        write_section(readme, "zoo", readme_table(doc, budget_mb))
    return doc, skipped


def main(argv: list[str] | None = None) -> int:
    from enfold.zoo.registry import SHIPPED_ZOO

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated names to rebuild; the other entries stay "
                   f"(names: {', '.join(s.name for s in SHIPPED)})")
    p.add_argument("--zoo", type=Path, default=SHIPPED_ZOO,
                   help="zoo folder (default: the package's own, enfold/zoo)")
    p.add_argument("--runs-root", type=Path, default=ROOT,
                   help="where the runs/ folders of the models are (default: the repository)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md",
                   help="README whose zoo section is rewritten")
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    p.add_argument("--budget-mb", type=float, default=SIZE_BUDGET_MB,
                   help="most MiB the shipped models may take together")
    args = p.parse_args(argv)
    specs = list(SHIPPED)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in SHIPPED}]
        if unknown:
            p.error(f"unknown --only {', '.join(unknown)}; names: "
                    f"{', '.join(s.name for s in SHIPPED)}")
        specs = [s for s in SHIPPED if s.name in wanted]
    t0 = time.time()
    try:
        doc, skipped = build(specs, args.zoo, args.runs_root,
                             None if args.no_readme else args.readme, merge=bool(args.only),
                             budget_mb=args.budget_mb)
    except EnfoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.zoo / 'registry.json'}: {len(doc['models'])} models, "
          f"{mib(doc['total_bytes'])}, in {time.time() - t0:.0f} s")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
