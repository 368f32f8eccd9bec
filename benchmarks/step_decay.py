"""Restoration steps beyond the trained K with shrinking step sizes: PSNR against K and decay.

    python benchmarks/step_decay.py                                   # every shipped restorer
    python benchmarks/step_decay.py --tasks gray \\
        --also gray=runs/restore/seeds/gray-seed1 gray=runs/restore/seeds/gray-seed2

Every shipped restorer was trained for K = 1 or 2 steps; a step beyond that reuses the last
learned step size and, for most tasks, makes the image worse (the model cards' PSNR by K).
``enfold export --step-decay d`` makes each step beyond the trained K ``d`` times the one
before. This measures, for each restorer (its run read from the zoo's sidecar; ``--also``
adds other runs of the same task, e.g. other training seeds), held-out PSNR in PyTorch at
K = 1 .. ``--max-steps`` for each decay, on the validation's held-out images with the
validation's corruption (seeded), as ``enfold.export.validate`` scores them. Writes the
``step_decay`` section of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import ROOT, machine, shown
from results_doc import write_section

TASKS = ("noise", "sr", "sr4", "mask", "gray", "shuffle")
DECAYS = (1.0, 0.5, 0.25, 0.1)


def psnr_by_steps(model, cfg, pixels: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                  extras: dict[str, torch.Tensor], max_steps: int, decay: float) -> list[float]:
    """Mean region PSNR (dB) of ``model``'s restorations at K = 1 .. ``max_steps`` with steps
    beyond the trained K shrunk by ``decay``: one run of ``max_steps`` steps, every step kept
    (step k of a K-step restoration is step k of a longer one)."""
    from enfold.data import denormalize, normalize
    from enfold.metrics import region_psnr

    model.set_step_decay(decay)
    x = normalize(pixels, cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        steps = model.restore_steps(x, max_steps, weight=extras.get("mask"),
                                    sigma=extras.get("sigma"))
    return [float(region_psnr(denormalize(s, cfg.data.mean, cfg.data.std).clamp(0, 1), clean,
                              weight).mean()) for s in steps]


def shipped_runs(names: list[str], zoo: Path) -> list[tuple[str, str, Path]]:
    """``(name, task, checkpoint)`` of each shipped restorer in ``names`` (its sidecar: sr4 is
    the sr task at another factor)."""
    out = []
    for name in names:
        meta = json.loads(next((zoo / name).glob("restorer-*.onnx.json")).read_text())
        out.append((name, meta["task"], ROOT / meta["checkpoint"]))
    return out


def score(name: str, task: str, checkpoint: Path, images: int, max_steps: int,
          decays: tuple[float, ...]) -> dict[str, object]:
    """PSNR by K for each decay of one run (``name``: the restorer's) on its held-out images."""
    from enfold.artifact.targets import restorer_inputs
    from enfold.checkpoint.load import load_model, open_checkpoint
    from enfold.export.validate import heldout_pixels, restorer_extras

    opened = open_checkpoint(checkpoint)
    (pixels, clean, weight), cfg = heldout_pixels(opened, "restorer", images, task)
    model = load_model(opened).model.eval()
    # the graph's other inputs as the validation gives them: the true noise level, the holes
    extras = restorer_extras(restorer_inputs(model), pixels, clean, weight)
    rows = {f"{d:g}": psnr_by_steps(model, cfg, pixels, clean, weight, extras, max_steps, d)
            for d in decays}
    return {"task": name, "run": shown(checkpoint.parent), "trained_k": model.num_steps,
            "images": int(pixels.shape[0]), "by_decay": rows}


def table(results: list[dict], max_steps: int) -> list[str]:
    ks = range(1, max_steps + 1)
    lines = ["| task | run | trained K | decay | " + " | ".join(f"K={k}" for k in ks)
             + " | best K | non-decreasing to K=4 |", "|" + " --- |" * (5 + max_steps + 1)]
    for r in results:
        for decay, psnrs in r["by_decay"].items():
            best = max(range(len(psnrs)), key=lambda i: psnrs[i]) + 1
            upto = psnrs[:4]
            rising = all(b >= a - 0.005 for a, b in zip(upto, upto[1:], strict=False))
            lines.append(f"| {r['task']} | `{r['run']}` | {r['trained_k']} | {decay} | "
                         + " | ".join(f"{p:.2f}" for p in psnrs)
                         + f" | {best} | {'yes' if rising else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--also", nargs="*", default=[], metavar="TASK=RUN",
                   help="more runs of a task (their checkpoint-last.pt), e.g. training seeds")
    p.add_argument("--decays", type=float, nargs="+", default=list(DECAYS))
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--zoo", type=Path, default=ROOT / "enfold" / "zoo" / "models")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    p.add_argument("--json", type=Path, default=ROOT / "runs" / "step_decay.json")
    args = p.parse_args(argv)
    t0 = time.time()
    tasks = [t for t in args.tasks.split(",") if t]
    runs = shipped_runs(tasks, args.zoo)
    runs += [(t, "sr" if t == "sr4" else t, Path(r) / "checkpoint-last.pt")
             for t, r in (a.split("=", 1) for a in args.also)]
    results = []
    for name, task, ckpt in runs:
        results.append(score(name, task, ckpt, args.images, args.max_steps,
                             tuple(args.decays)))
        print(json.dumps(results[-1]), flush=True)
    command = "python benchmarks/step_decay.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
    text = "\n".join([
        "## Steps beyond the trained K: shrinking step sizes (every shipped restorer)", "",
        f"Command: `{command.strip()}`. Held-out PSNR (dB) in PyTorch on the validation's "
        f"{results[0]['images']} held-out images with its seeded corruption (the region "
        "PSNR the model cards report), at K = 1 .. "
        f"{args.max_steps}; each step beyond the trained K is `decay` times the one before "
        "(`enfold export --steps K --step-decay decay`; decay 1 is what an export with more "
        f"steps did before). {machine()}; took {(time.time() - t0) / 60:.1f} min.", "",
        *table(results, args.max_steps)])
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    write_section(args.results, "step_decay", text)


if __name__ == "__main__":
    main()
