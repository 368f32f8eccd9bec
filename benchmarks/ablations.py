"""Ablations that pick enfold's defaults by measurement, on digits.

    python benchmarks/ablations.py

Each variant changes one thing of ``configs/pretrain/digits-ssl.yaml`` (the reference recipe is
spelled out in ``REFERENCE``; pretrained for ``--steps`` steps, 300 by default to fit a CPU
budget) and is measured by: held-out PSNR of the masked region after restoration, kNN top-1 on
frozen features, and linear-probe top-1 with 10 labels per class over 3 seeds (the fine-tune
recipe of ``benchmarks/ssl_gain.py``). A last row gives K=2 the pretraining time K=4 took, to
weigh larger K against more steps. Finished runs in ``--out`` (pretraining and arms of the same
config and checkpoint) are read back rather than trained again. Writes
the table into docs/RESULTS.md (section ``ablations``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import common
from results_doc import write_section

# The recipe every variant starts from, spelled out so the table does not move when the shipped
# defaults do: configs/pretrain/digits-ssl.yaml as it was when this ablation ran (mask only). The
# "mix" variant won and is the shipped digits-ssl recipe since.
REFERENCE = ["model.energy_head=sqnorm", "model.steps=2", "model.learn_step_sizes=true",
             "corrupt.tasks=[mask]"]

# name -> (what it tests, overrides of the reference recipe)
VARIANTS = {
    "reference": ("sqnorm head, K=2, learned step sizes, mask only", []),
    "linear head": ("energy head", ["model.energy_head=linear"]),
    "K=1": ("training steps K", ["model.steps=1"]),
    "K=4": ("training steps K", ["model.steps=4"]),
    "fixed step sizes": ("learned vs fixed", ["model.learn_step_sizes=false"]),
    "mix": ("single task vs mix of mask, noise, sr, shuffle",
            ["corrupt.tasks=[mask, noise, sr, shuffle]"]),
}

# Run after "reference" and "K=4": K=2 for as many steps as fit in K=4's pretraining time.
EQUAL_TIME = "K=2, K=4's time"


def training_minutes(records: list[dict], batch: int) -> float:
    """Pretraining time from the throughput the run logged (one step's images/s every
    ``log_every`` steps), so a finished run read back reports the time it took when it ran.
    Leaves out compilation and evaluation."""
    total, prev = 0.0, 0
    for r in records:
        if "images_per_s" in r:
            total += (r["step"] - prev) * batch / r["images_per_s"]
            prev = r["step"]
    return total / 60


def measure(name: str, what: str, overrides: list[str], steps: int, args: argparse.Namespace
            ) -> tuple[dict, bool]:
    """Pretrain one variant and measure it: ``(result, whether its pretraining was read back)``.
    Finished runs (pretraining and arms) of the same config and checkpoint are read back; the
    result is also written to the variant's ``result.json``."""
    from enfold.config import load_config, to_dict
    from enfold.pipeline.pretrain import run_pretrain
    from enfold.pipeline.progress import read_metrics

    out = args.out / name.replace(" ", "-").replace("=", "").replace(",", "").replace("'", "")
    # eval.every=0: one held-out evaluation at the end; the PSNR is always of the mask task
    cfg = load_config(common.PRETRAIN, [f"train.max_steps={steps}", "eval.every=0",
                                          *REFERENCE, *overrides])
    reused = common.finished_pretraining(out / "pretrain", cfg)
    ckpt = run_pretrain(cfg, out / "pretrain")  # resumes (returns) a finished run
    minutes = training_minutes(read_metrics(out / "pretrain" / "metrics.jsonl"),
                               cfg.data.batch_size)
    psnr = common.last_record(out / "pretrain", "eval/mask/psnr_restored")
    probe = [common.finetune_arm("linear", s, checkpoint=ckpt, out=out).top1 for s in args.seeds]
    knn = common.finetune_arm("knn", args.seeds[0], checkpoint=ckpt, out=out).top1
    result = {"name": name, "what": what, "steps": steps, "psnr_in": psnr["eval/mask/psnr_input"],
              "psnr_out": psnr["eval/mask/psnr_restored"], "knn": knn, "probe": probe,
              "minutes": minutes}
    (out / "result.json").write_text(json.dumps(
        {"key": {"config": to_dict(cfg), "seeds": args.seeds}, "result": result}, indent=2))
    print(f"{name}: psnr {result['psnr_out']:.2f} knn {knn:.4f} "
          f"linear {statistics.mean(probe):.4f}", flush=True)
    return result, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per variant")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only")
    parser.add_argument("--out", type=Path, default=common.ROOT / "runs" / "ablations")
    parser.add_argument("--results", type=Path, default=common.ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()

    t0 = time.time()
    measured = {name: measure(name, what, overrides, args.steps, args)
                for name, (what, overrides) in VARIANTS.items()
                if not args.only or name in args.only}
    if {"reference", "K=4"} <= measured.keys() and (not args.only or EQUAL_TIME in args.only):
        # the pretraining-time ratio of K=4 to K=2 measured above sets the number of steps
        ratio = measured["K=4"][0]["minutes"] / measured["reference"][0]["minutes"]
        steps = round(args.steps * ratio)
        measured[EQUAL_TIME] = measure(EQUAL_TIME, f"more steps instead of larger K ({steps} "
                                       "steps)", [], steps, args)
    rows = {name: result for name, (result, _) in measured.items()}
    reused = sum(was_reused for _, was_reused in measured.values())

    command = "python benchmarks/ablations.py " + " ".join(sys.argv[1:])
    lines = [
        "## Ablations (digits, one change at a time)",
        "",
        f"Command: `{command.strip()}`. Each variant: the reference recipe (`configs/pretrain/"
        "digits-ssl.yaml` with masking only, as it was before this ablation; `REFERENCE` in the "
        f"script) with one change, {args.steps} pretraining steps (pretraining seed 0), then "
        f"kNN (seed {args.seeds[0]}) and a linear probe (10 labels per class, seeds "
        f"{', '.join(map(str, args.seeds))}). {common.machine()}; "
        f"took {(time.time() - t0) / 60:.1f} min"
        + (f" ({reused} of {len(rows)} pretraining runs read back from finished runs in "
           f"`{common.shown(args.out)}`; their minutes are from their logs)" if reused else "")
        + ".",
        "",
        "| variant | tests | mask PSNR input -> restored (dB) | kNN top-1 | linear probe top-1 |"
        " pretraining min (from logged img/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.values():
        std = statistics.stdev(r["probe"]) if len(r["probe"]) > 1 else 0.0
        lines.append(f"| {r['name']} | {r['what']} | {r['psnr_in']:.2f} -> {r['psnr_out']:.2f} | "
                     f"{r['knn']:.3f} | {statistics.mean(r['probe']):.3f} ± {std:.3f} | "
                     f"{r['minutes']:.1f} |")
    text = "\n".join(lines)
    print(text)
    write_section(args.results, "ablations", text)


if __name__ == "__main__":
    main()
