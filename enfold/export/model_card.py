"""The model card: ``README.md`` beside the exports of a folder, rewritten by every export.

It describes every export in the folder (each artifact's sidecar, or ``config.json`` for timm
weights), grouped by the checkpoint it came from: model details, training data and recipe (the
checkpoint's resolved config), measured numbers (the run's ``metrics.jsonl`` and ``eval.json``,
and each artifact's validation report), limits, and the commands that reproduce it all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enfold.artifact.sidecar import Sidecar
from enfold.errors import EnfoldError, SidecarError
from enfold.output_files import write_output

if TYPE_CHECKING:
    from enfold.checkpoint.load import CheckpointFile

CARD_NAME = "README.md"
MARKER = "<!-- written by enfold export: every export into this folder rewrites this file -->"
VALIDATION_SUFFIX = ".validation.json"
# Sidecar formats of runnable artifacts, and the timm weights' files (timm_weights.py).
TIMM_WEIGHTS, TIMM_CONFIG = "model.safetensors", "config.json"


def check_card_writable(out_dir: str | Path) -> None:
    """Refuse, before any work, to overwrite a README.md that enfold did not write."""
    card = Path(out_dir) / CARD_NAME
    if card.is_file() and MARKER not in card.read_text(errors="replace")[:500]:
        raise EnfoldError(f"{card} exists and was not written by enfold export (its model card "
                          "would replace it): move it away or export into another --out")


def save_validation(artifact: str | Path, report: dict[str, Any] | None) -> None:
    """Keep an artifact's validation report beside it, for this and later cards.

    ``None`` (exported with --no-validate) removes an earlier export's report, which no longer
    describes the file.
    """
    path = Path(str(artifact) + VALIDATION_SUFFIX)
    if report is None:
        path.unlink(missing_ok=True)
    else:
        write_output(path, json.dumps(report, indent=2))


def find_exports(out_dir: Path) -> list[tuple[Path, Sidecar]]:
    """``(artifact, metadata)`` for every export in ``out_dir``, sorted by file name."""
    found = []
    for side in sorted(out_dir.glob("*.json")):
        artifact = side.with_name(side.name[: -len(".json")])
        if artifact.is_file() and not side.name.endswith(VALIDATION_SUFFIX):
            try:
                found.append((artifact, Sidecar.read(artifact)))
            except SidecarError:
                continue  # not a sidecar; the card lists what it can read
    weights, config = out_dir / TIMM_WEIGHTS, out_dir / TIMM_CONFIG
    if weights.is_file() and config.is_file():
        # timm's config.json carries the sidecar of the weights as its "enfold" entry
        try:
            meta = json.loads(config.read_text()).get("enfold")
            found.append((weights, Sidecar.from_dict(meta, f"{config} (its 'enfold' entry)",
                                                     formats=("safetensors",))))
        except (OSError, ValueError, AttributeError, SidecarError):
            pass  # not enfold's timm weights; the card lists what it can read
    return sorted(found, key=lambda item: item[0].name)


def _run_numbers(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last logged value of every metric in ``run/metrics.jsonl`` (with its step), and
    ``run/eval.json``'s scalars."""
    last: dict[str, Any] = {}
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; the others still count
            step = row.get("step")
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    last[key] = (value, step)
    evaluation: dict[str, Any] = {}
    eval_file = run / "eval.json"
    if eval_file.is_file():
        data = json.loads(eval_file.read_text())
        evaluation = {k: v for k, v in data.items() if isinstance(v, (int, float))}
    return last, evaluation


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _export_command(artifact: Path, meta: Sidecar) -> str:
    fmt = meta.format
    parts = [f"enfold export --checkpoint {meta.checkpoint or 'CHECKPOINT'}",
             f"--target {meta.target}", f"--format {fmt}", f"--out {artifact.parent}"]
    if meta.target == "restorer":
        parts.append(f"--steps {meta.steps} --task {meta.task}")
    if (meta.grid_shifts or 1) != 1:
        parts.append(f"--grid-shifts {meta.grid_shifts}")
    if meta.step_decay not in (None, 1):
        parts.append(f"--step-decay {meta.step_decay:g}")
    if meta.batch_profile:
        parts.append("--batch " + ":".join(str(b) for b in meta.batch_profile))
    elif meta.fixed_batch:
        parts.append(f"--batch {meta.fixed_batch}")
    if (meta.precision or "fp32") != "fp32":
        parts.append(f"--precision {meta.precision}")
    return " ".join(parts)


def _io(meta: Sidecar) -> str:
    c, s = meta.in_chans, meta.img_size
    out = {"classifier": f"logits (B, {len(meta.class_names or [])})",
           "encoder": "features (B, D)", "energy": "energy (B,)",
           "restorer": f"restored (B, {c}, {s}, {s})"}[meta.target]
    extra = {"sigma": ", sigma (B,)", "mask": f", mask (B, 1, {s}, {s})"}
    inputs = "".join(extra[name] for name in meta.restorer_inputs or [])
    return f"images (B, {c}, {s}, {s}){inputs} -> {out}"


def _checkpoint_section(ckpt: str, exports: list[tuple[Path, Sidecar]],
                        opened: CheckpointFile | None = None) -> list[str]:
    """Data, recipe, numbers and reproduction for the exports of one checkpoint (``opened``:
    a checkpoint the caller has read already, used when it is this one)."""
    lines = [f"## From `{ckpt}`", ""]
    state, cfg, notice = _read_checkpoint(ckpt, exports[0][1], opened)
    if state is None or cfg is None:
        return lines + notice
    path = Path(ckpt)
    return (lines + _model_details(state, cfg, exports[0][1]) + _training_data(state, cfg)
            + _recipe(cfg, path) + _measured_numbers(state, path) + _validations(exports)
            + _reproduce(state, path, exports))


def _read_checkpoint(ckpt: str, meta0: Sidecar, opened: CheckpointFile | None = None
                     ) -> tuple[dict[str, Any] | None, Any, list[str]]:
    """``(state, config, [])`` of the checkpoint, or ``(None, None, lines)`` saying why the
    card cannot describe it (gone from this machine, or written by another enfold)."""
    from enfold.checkpoint.store import load_checkpoint
    from enfold.config import config_from_checkpoint

    path = Path(ckpt)
    state: dict[str, Any] | None = None
    if opened is not None and opened.path == path:
        state = opened.state  # the export's own checkpoint, read once already
    elif path.is_file():
        try:
            state = load_checkpoint(path)
        except EnfoldError:
            state = None
    if state is None:
        return None, None, [
            f"The checkpoint is not at `{ckpt}` on this machine any more (its sha256 was "
            f"`{meta0.checkpoint_sha256}`), so its recipe and training numbers "
            "are not shown.", ""]
    try:
        cfg = config_from_checkpoint(state["config"])
    except EnfoldError as exc:  # a checkpoint from another enfold version: say so, keep going
        return None, None, [f"The checkpoint's config cannot be read by this enfold ({exc}), "
                            "so its recipe and training numbers are not shown.", ""]
    return state, cfg, []


def _model_details(state: dict[str, Any], cfg: Any, meta0: Sidecar) -> list[str]:
    """The card's "Model details": stage, architecture, head, libraries."""
    stage, m = state.get("stage"), cfg.model
    return ["### Model details", "",
            f"- Stage: {stage}, step {state.get('step')}; sha256 "
            f"`{meta0.checkpoint_sha256}`",
            f"- Architecture: timm `{m.arch}` at {m.img_size}x{m.img_size} pixels, "
            f"{m.in_chans} channels, patch {m.patch_size}, depth {m.depth or 'as the arch'}, "
            f"width {m.embed_dim or 'as the arch'}, {m.num_heads or 'arch default'} heads",
            _restorer_line(m)
            + (f"; fine-tuning mode `{state.get('finetune_mode')}`"
               if stage == "finetune" else ""),
            f"- Libraries at training: {json.dumps(state.get('versions', {}))}", ""]


def _restorer_line(m: Any) -> str:
    """The energy head and K, or what a learned peer is instead."""
    if getattr(m, "restorer", "energy") != "energy":
        return (f"- Restorer: the learned peer `{m.restorer}`, one forward pass predicting the "
                "residual (no energy, no steps)")
    return f"- Energy head `{m.energy_head}`, K = {m.steps} restoration steps"


def _training_data(state: dict[str, Any], cfg: Any) -> list[str]:
    """The card's "Training data": source, normalisation, classes or pretext tasks."""
    from enfold.config import to_dict

    d = cfg.data
    lines = ["### Training data", "",
             f"- Source `{d.source}`, normalised with mean {list(d.mean)} and std {list(d.std)}"]
    if state.get("stage") == "finetune":
        classes = list(state.get("classes", []))
        lines.append(f"- {len(classes)} classes: {', '.join(classes[:20])}"
                     + (" ..." if len(classes) > 20 else "")
                     + (f"; {d.labels_per_class} labels per class" if d.labels_per_class
                        else "; all labels"))
        lines.append(f"- Pretrained from `{state.get('pretrained') or 'nothing (scratch)'}`")
    else:
        tasks = to_dict(cfg.corrupt)
        lines.append(f"- Pretext tasks (corruptions): {', '.join(cfg.corrupt.tasks)}; settings "
                     + "; ".join(f"{k} {tasks[k]}" for k in cfg.corrupt.tasks if k in tasks))
    return lines


def _recipe(cfg: Any, path: Path) -> list[str]:
    """The card's "Recipe": optimiser settings and where the full config is."""
    d, t = cfg.data, cfg.train
    return ["", "### Recipe", "",
            f"- {t.max_steps} steps of AdamW, batch {d.batch_size} x {t.accum_steps} "
            f"accumulation per process, base lr {t.base_lr} per {t.lr_batch_base} images, "
            f"warmup {t.warmup_steps}, weight decay {t.weight_decay}, seed {t.seed}, "
            f"{'bf16' if t.bf16 else 'fp32'}",
            f"- Full resolved config: `{path.parent / 'config.yaml'}`", ""]


def _measured_numbers(state: dict[str, Any], path: Path) -> list[str]:
    """The card's "Measured numbers": the run's last metrics and its eval.json, as a table."""
    last, evaluation = _run_numbers(path.parent)
    lines = ["### Measured numbers", ""]
    shown = {k: v for k, v in last.items() if k.startswith("eval/") or k in ("loss",)}
    if shown or evaluation:
        lines += ["| metric | value | at step |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} | {s} |" for k, (v, s) in sorted(shown.items())]
        lines += [f"| eval.json {k} | {_fmt(v)} | {state.get('step')} |"
                  for k, v in sorted(evaluation.items())]
    else:
        lines.append(f"No metrics.jsonl beside the checkpoint ({path.parent}).")
    lines.append("")
    return lines


def _validations(exports: list[tuple[Path, Sidecar]]) -> list[str]:
    """One line per export: its validation report against PyTorch, or that it has none."""
    lines = []
    for artifact, meta in exports:
        report_path = Path(str(artifact) + VALIDATION_SUFFIX)
        if report_path.is_file():
            report = json.loads(report_path.read_text())
            keys = [k for k in ("images", "max_abs_error", "mean_abs_error", "tolerance",
                                "top1_agreement", "psnr_artifact_vs_clean",
                                "psnr_pytorch_vs_clean", "psnr_input_vs_clean", "passed")
                    if k in report]
            lines.append(f"- Validation of `{artifact.name}` against PyTorch on held-out "
                         "images: " + ", ".join(f"{k} {_fmt(report[k])}" for k in keys))
            by_k = report.get("psnr_pytorch_by_steps")
            decayed = meta.step_decay not in (None, 1)
            decay = f" --step-decay {meta.step_decay:g}" if decayed else ""
            if by_k:
                lines.append(
                    "- Restoration steps K on the same images (PSNR in PyTorch, dB): "
                    + ", ".join(f"K={k} {v:.2f}" for k, v in by_k.items())
                    + (f" (each step beyond the trained K = {meta.trained_steps} "
                       f"{meta.step_decay:g} times the one before)" if decayed else "")
                    + f"; best K = {report['best_steps']} (`enfold export --steps "
                    f"{report['best_steps']}{decay}`), this export has K = {meta.steps}")
        else:
            lines.append(f"- `{artifact.name}` was exported with --no-validate: not compared "
                         "with PyTorch")
    return lines


def _reproduce(state: dict[str, Any], path: Path,
               exports: list[tuple[Path, Sidecar]]) -> list[str]:
    """The card's "Reproduce": the training command and the export commands."""
    # a new run directory: the run's own --out would resume the finished run, not retrain it
    again = f"{path.parent}-again"
    lines = ["", "### Reproduce", "", "```bash"]
    if state.get("stage") == "finetune":
        pre = state.get("pretrained")
        lines.append(f"enfold finetune --config {path.parent / 'config.yaml'} "
                     + (f"--pretrained {pre} " if pre else "") + f"--out {again}")
    else:
        lines.append(f"enfold pretrain --config {path.parent / 'config.yaml'} --out {again}")
    lines += [_export_command(a, m) for a, m in exports]
    lines += ["```", "", f"The training command retrains into `{again}` from the run's resolved "
              "config; the export commands are the ones that wrote these files.", ""]
    return lines


def render_card(out_dir: Path, exports: list[tuple[Path, Sidecar]],
                opened: CheckpointFile | None = None) -> str:
    """The card's Markdown for ``exports`` (see :func:`find_exports`); ``opened``: the
    checkpoint the caller has read already, not read again."""
    targets = sorted({m.target for _, m in exports})
    lines = [f"# enfold exports: {', '.join(targets)}", "", MARKER, "",
             "A vision transformer trained as an energy model: its forward pass gives one energy "
             "per image, and K gradient steps down that energy restore corrupted images. The "
             "encoder and classifier are plain timm ViTs."
             + (" A restorer whose sidecar names a learned peer (`restorer`: direct_vit, dncnn) "
                "is no energy model: its one forward pass predicts the residual."
                if any((m.restorer or "energy") != "energy" for _, m in exports) else ""), "",
             "| file | target | format | precision | tensors |", "| --- | --- | --- | --- | --- |"]
    for artifact, meta in exports:
        lines.append(f"| `{artifact.name}` | {meta.target} | {meta.format} | "
                     f"{meta.precision or 'fp32'} | {_io(meta)} |")
    lines += ["", "Inputs are pixels in [0, 1] normalised with the mean and std below: "
              "`enfold.runtime.load(file)` does that for the runnable artifacts, timm's "
              "`resolve_data_config` for timm weights (docs/deployment.md).", "",
              "## Intended use", ""]
    uses = {"classifier": "classify images like the fine-tuning data into its classes",
            "encoder": "features for fine-tuning, linear probes or retrieval (timm weights: "
                       "`timm.create_model` with this folder's config.json)",
            "energy": "score images: a low energy means like the training data, a high one "
                      "unlike it (a novelty score, not a calibrated probability)",
            "restorer": "restore images degraded by the pretext task it was trained on"}
    lines += [f"- {target}: {uses[target]}" for target in targets] + [""]
    by_checkpoint: dict[str, list[tuple[Path, Sidecar]]] = {}
    for artifact, meta in exports:
        by_checkpoint.setdefault(meta.checkpoint or "unknown", []).append((artifact, meta))
    for ckpt, group in by_checkpoint.items():
        lines += _checkpoint_section(ckpt, group, opened)
    lines += ["## Limits", "",
              "- Fixed input size: each export takes only the image size and channel count in "
              "the table; other images are centre-cropped and resized first (`preprocess` in "
              "each sidecar).",
              "- The restorer undoes the corruption it was trained on (its `task`), at the "
              "strength in the training config; other degradations are outside its training.",
              "- The numbers above come from the held-out split of the training source only; "
              "images from elsewhere may score lower.",
              "- A TorchScript restorer runs at the one batch size it was traced at; fp16 exports "
              "are checked with a relative tolerance of 1e-2, fp32 ones with 1e-4.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, opened: CheckpointFile | None = None) -> Path:
    """Write ``out_dir/README.md`` describing every export there; returns its path.
    ``opened``: the checkpoint an export has just read, so the card does not read it again."""
    from enfold.checkpoint.store import atomic_write_bytes

    out_dir = Path(out_dir)
    check_card_writable(out_dir)
    exports = find_exports(out_dir)
    if not exports:
        raise EnfoldError(f"no enfold exports in {out_dir} to describe")
    card = out_dir / CARD_NAME
    text = render_card(out_dir, exports, opened)
    atomic_write_bytes(card, lambda f: f.write(text.encode()))
    return card
