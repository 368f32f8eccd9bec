"""What one pretraining step costs, where its time goes, and what makes it cheaper.

    python benchmarks/step_cost.py                  # configs/pretrain/fmnist-tiny.yaml, batch 64
    python benchmarks/step_cost.py --config configs/pretrain/digits-ssl.yaml

On real batches of the config's data and pretext task, eager, in one process and interleaved
(every round times each variant once, so a busy machine slows them alike):

  profile   the shipped step split into its parts: energy forward alone, the K restoration
            steps without a parameter graph (inference), the training forward (restoration with
            the graph kept for the second-order backward), the backward, the optimizer update
  variants  time per full training step (forward, backward, clip, AdamW) for the shipped
            config and for each cheaper switch: backprop through the last restoration step only
            (model.backprop_steps=last), bf16 autocast on the CPU (train.bf16), both, K=1; and
            the MAE baseline's step (transformers' ViTMAEForPreTraining with the same encoder,
            vs_mae's decoder) on the same images, when transformers is installed

Prints a table with the ratio of each variant to the MAE step and writes its section of
docs/RESULTS.md (``step_cost``). Accuracy at equal epochs of the switches is measured by
``benchmarks/ssl_gain.py`` runs, not here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import ROOT, machine, shown
from results_doc import write_section

FMNIST = ROOT / "configs" / "pretrain" / "fmnist-tiny.yaml"
VARIANTS: dict[str, list[str]] = {
    "shipped": [],
    "backprop last step only": ["model.backprop_steps=last"],
    "bf16 autocast": ["train.bf16=true"],
    "backprop last + bf16": ["model.backprop_steps=last", "train.bf16=true"],
    "K=1": ["model.steps=1"],
}


def batches(cfg, count: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """``count`` normalised ``(corrupted, clean, weight)`` training batches of the config."""
    from enfold.corrupt import CorruptionContext, build_corruption, corrupt_batch
    from enfold.data import build_source, normalize

    source = build_source(cfg.data.source, "train", cfg.model, cfg.data)
    corruption = build_corruption(cfg.corrupt, CorruptionContext.from_config(cfg))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        idx = torch.randint(0, len(source), (cfg.data.batch_size,), generator=gen).tolist()
        corrupted, clean, weight = corrupt_batch(corruption, [source.image(j) for j in idx],
                                                 seed + i)
        out.append((normalize(corrupted, cfg.data.mean, cfg.data.std),
                    normalize(clean, cfg.data.mean, cfg.data.std), weight))
    return out


def enfold_step(cfg) -> Callable[[tuple[torch.Tensor, ...]], None]:
    """One full training step of the energy model of ``cfg``, as the trainer does it."""
    from enfold.model import build_energy_model

    torch.manual_seed(0)
    model = build_energy_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.bf16)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        with autocast:
            loss, _ = model(*batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def mae_step_fn(cfg) -> Callable[[tuple[torch.Tensor, ...]], None] | None:
    """The MAE baseline's training step on the clean images, or None without transformers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    from vs_mae import mae_model

    torch.manual_seed(0)
    model = mae_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        loss = model(pixel_values=batch[1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def profile(cfg, data: list[tuple[torch.Tensor, ...]], rounds: int) -> dict[str, float]:
    """Median seconds of each part of the shipped step."""
    from enfold.model import build_energy_model

    torch.manual_seed(0)
    model = build_energy_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    parts: dict[str, list[float]] = {k: [] for k in (
        "energy forward", "restoration, no graph", "training forward", "backward",
        "clip + AdamW")}
    for r in range(rounds + 1):
        corrupted, clean, weight = data[r % len(data)]
        t0 = time.perf_counter()
        with torch.no_grad():
            model.energy(corrupted)
        t1 = time.perf_counter()
        model.restore(corrupted)
        t2 = time.perf_counter()
        loss, _ = model(corrupted, clean, weight)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if r:  # the first round warms up
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                               strict=True):
                parts[key].append(dt)
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=FMNIST)
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every variant")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()

    from enfold.config import load_config

    t0 = time.time()
    base = load_config(args.config, [*args.set, "train.compile=false"])
    data = batches(base, 4, seed=0)
    steps: dict[str, Callable] = {
        name: enfold_step(load_config(args.config, [*args.set, *extra]))
        for name, extra in VARIANTS.items()
    }
    mae = mae_step_fn(base)
    if mae is not None:
        steps["MAE (same encoder)"] = mae
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds + 1):
        for name, step in steps.items():
            s = time.perf_counter()
            step(data[r % len(data)])
            if r:  # round 0 warms every variant up
                times[name].append(time.perf_counter() - s)
    median = {name: statistics.median(v) for name, v in times.items()}
    parts = profile(base, data, max(3, args.rounds // 2))

    mae_s = median.get("MAE (same encoder)")
    rows = ["| variant | s / step | vs shipped | vs MAE step |", "| --- | --- | --- | --- |"]
    for name, sec in median.items():
        vs_mae = f"{sec / mae_s:.2f}x" if mae_s else "transformers not installed"
        rows.append(f"| {name} | {sec:.3f} | {sec / median['shipped']:.2f}x | {vs_mae} |")
    total = sum(parts.values())
    prof = ["| part of the shipped step | s | share |", "| --- | --- | --- |"]
    for name, sec in parts.items():
        prof.append(f"| {name} | {sec:.3f} | {100 * sec / total:.0f} % |")
    command = "python benchmarks/step_cost.py " + " ".join(sys.argv[1:])
    m = base.model
    text = "\n".join([
        "## What a pretraining step costs (CPU)",
        "",
        f"Command: `{command.strip()}`. `{shown(args.config)}`: {m.depth}-block "
        f"{m.embed_dim}-wide ViT, {m.img_size}x{m.img_size} input, patch {m.patch_size}, "
        f"K={m.steps}, batch {base.data.batch_size}, tasks {', '.join(base.corrupt.tasks)}; "
        f"eager, {args.rounds} interleaved steps per variant (median). {machine()}; took "
        f"{(time.time() - t0) / 60:.1f} min.",
        "",
        *rows,
        "",
        "Where the shipped step's time goes (\"restoration, no graph\" is what inference pays; "
        "the training forward keeps the graph of every input gradient for the second-order "
        "backward):",
        "",
        *prof,
    ])
    print(text)
    write_section(args.results, "step_cost", text)


if __name__ == "__main__":
    main()
