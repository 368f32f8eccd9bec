"""Ablations that pick enfold's pretraining defaults by measurement, one change at a time.

    python benchmarks/ablations.py                   # digits (configs/pretrain/digits-ssl)
    python benchmarks/ablations.py --data fmnist     # Fashion-MNIST (pretrain/fmnist-tiny)

Each variant changes one thing of its study's reference recipe (spelled out in the study's
``reference`` so the table does not move when the shipped defaults do), is pretrained for
``--steps`` steps (the study's default fits a CPU budget) and is measured by: held-out PSNR of
the masked region after restoration, kNN top-1 on frozen features, linear-probe top-1 with 10
labels per class over ``--seeds``, and (Fashion-MNIST) full fine-tuning on the first seed, all
with the fine-tune recipe of ``benchmarks/ssl_gain.py``. On the digits a last row gives K=2 the
pretraining time K=4 took, to weigh larger K against more steps. Finished runs in ``--out``
(pretraining and arms of the same config and checkpoint) are read back rather than trained
again. Writes the table into docs/RESULTS.md (section ``ablations`` or ``ablations_fmnist``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import common
from results_doc import write_section
from ssl_gain import PRESETS


@dataclass(frozen=True)
class Study:
    """One data set's ablation: its reference recipe, the variants, and where they go."""

    title: str  # the data set, as the section heading names it
    pretrain: Path  # the pretraining config every variant starts from
    finetune: Path  # the fine-tune config of the arms
    reference: tuple[str, ...]  # overrides that spell out the reference recipe
    about: str  # the reference recipe, in words, for the section
    variants: dict[str, tuple[str, list[str]]]  # name -> (what it tests, overrides)
    steps: int  # default pretraining steps per variant
    section: str  # docs/RESULTS.md section
    out: Path  # default run folder
    fine_tune: bool  # also fine-tune the whole network (first seed)
    # one held-out evaluation, at the end: eval.every=0 says so, and so does eval.every=<steps>;
    # each study keeps the spelling its finished runs were made with, so they are read back
    eval_every_zero: bool = False

    def eval_overrides(self, steps: int) -> list[str]:
        """The overrides that give one held-out evaluation, at the end."""
        return ["eval.every=0"] if self.eval_every_zero else [f"eval.every={steps}"]


DIGITS = Study(
    title="digits", pretrain=common.PRETRAIN, finetune=common.FINETUNE,
    # configs/pretrain/digits-ssl.yaml as it was when this ablation ran (mask only). The "mix"
    # variant won and is the shipped digits-ssl recipe since.
    reference=("model.energy_head=sqnorm", "model.steps=2", "model.learn_step_sizes=true",
               "corrupt.tasks=[mask]"),
    about="`configs/pretrain/digits-ssl.yaml` with masking only, as it was before this ablation",
    variants={
        "reference": ("sqnorm head, K=2, learned step sizes, mask only", []),
        "linear head": ("energy head", ["model.energy_head=linear"]),
        "K=1": ("training steps K", ["model.steps=1"]),
        "K=4": ("training steps K", ["model.steps=4"]),
        "fixed step sizes": ("learned vs fixed", ["model.learn_step_sizes=false"]),
        "mix": ("single task vs mix of mask, noise, sr, shuffle",
                ["corrupt.tasks=[mask, noise, sr, shuffle]"]),
    },
    steps=300, section="ablations", out=common.ROOT / "runs" / "ablations", fine_tune=False,
    eval_every_zero=True)

FMNIST = Study(
    title="Fashion-MNIST", pretrain=PRESETS["fmnist"][0], finetune=PRESETS["fmnist"][1],
    # configs/pretrain/fmnist-tiny.yaml as it was when this ablation ran
    reference=("model.energy_head=sqnorm", "model.steps=2", "model.learn_step_sizes=true",
               "model.backprop_steps=all", "model.depth=4",
               "corrupt.tasks=[mask, noise, sr, shuffle]", "corrupt.mask.ratio=0.75"),
    about="`configs/pretrain/fmnist-tiny.yaml` as it was before this ablation",
    variants={
        "reference": ("sqnorm head, K=2, all steps backpropagated, learned step sizes, "
                      "mask 75 % + noise + sr + shuffle", []),
        "backprop last": ("cheaper step: second-order backward through the last step only",
                          ["model.backprop_steps=last"]),
        "K=1": ("training steps K (cheaper step)", ["model.steps=1"]),
        "mask only": ("task mix vs masking alone", ["corrupt.tasks=[mask]"]),
        "mask 50 %": ("mask ratio", ["corrupt.mask.ratio=0.5"]),
        "linear head": ("energy head", ["model.energy_head=linear"]),
        "reconstruction head": ("energy head: half the squared distance from x to N(x)",
                                ["model.energy_head=recon"]),
        "fixed step sizes": ("learned vs fixed", ["model.learn_step_sizes=false"]),
        "depth 6": ("model size", ["model.depth=6"]),
    },
    steps=500, section="ablations_fmnist", out=common.ROOT / "runs" / "ablations_fmnist",
    fine_tune=True)

STUDIES = {"digits": DIGITS, "fmnist": FMNIST}

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


def measure(study: Study, name: str, what: str, overrides: list[str], steps: int,
            args: argparse.Namespace) -> tuple[dict, bool]:
    """Pretrain one variant and measure it: ``(result, whether its pretraining was read back)``.
    Finished runs (pretraining and arms) of the same config and checkpoint are read back; the
    result is also written to the variant's ``result.json``."""
    from enfold.config import load_config, to_dict
    from enfold.pipeline.pretrain import run_pretrain
    from enfold.pipeline.progress import read_metrics

    out = args.out / name.replace(" ", "-").replace("=", "").replace(",", "").replace(
        "'", "").replace("%", "pct")
    # the PSNR is always of the mask task (every variant trains on it)
    cfg = load_config(study.pretrain, [f"train.max_steps={steps}", *study.eval_overrides(steps),
                                       *study.reference, *overrides])
    reused = common.finished_pretraining(out / "pretrain", cfg)
    ckpt = run_pretrain(cfg, out / "pretrain")  # resumes (returns) a finished run
    minutes = training_minutes(read_metrics(out / "pretrain" / "metrics.jsonl"),
                               cfg.data.batch_size)
    psnr = common.last_record(out / "pretrain", "eval/mask/psnr_restored")

    def arm(kind: str, seed: int) -> float:
        return common.finetune_arm(kind, seed, checkpoint=ckpt, out=out,
                                   config=study.finetune).top1

    probe = [arm("linear", s) for s in args.seeds]
    knn = arm("knn", args.seeds[0])
    finetune = [arm("pretrained", args.seeds[0])] if study.fine_tune else []
    result = {"name": name, "what": what, "steps": steps, "psnr_in": psnr["eval/mask/psnr_input"],
              "psnr_out": psnr["eval/mask/psnr_restored"], "knn": knn, "probe": probe,
              "finetune": finetune, "minutes": minutes}
    (out / "result.json").write_text(json.dumps(
        {"key": {"config": to_dict(cfg), "seeds": args.seeds}, "result": result}, indent=2))
    print(f"{name}: psnr {result['psnr_out']:.2f} knn {knn:.4f} "
          f"linear {statistics.mean(probe):.4f}"
          + (f" fine-tune {finetune[0]:.4f}" if finetune else ""), flush=True)
    return result, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(STUDIES), default="digits",
                        help="which study: its reference recipe, variants and folders")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretraining steps per variant (default: the study's, 300 for "
                        "digits, 500 for fmnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only")
    parser.add_argument("--out", type=Path, default=None, help="default runs/ablations[_fmnist]")
    parser.add_argument("--results", type=Path, default=common.ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()
    study = STUDIES[args.data]
    args.out = args.out or study.out
    steps = args.steps or study.steps
    unknown = set(args.only or ()) - {*study.variants, EQUAL_TIME}
    if unknown:
        parser.error(f"--only: no variant named {', '.join(sorted(unknown))} in the {args.data} "
                     f"study; choose from {', '.join(study.variants)}")

    t0 = time.time()
    measured = {name: measure(study, name, what, overrides, steps, args)
                for name, (what, overrides) in study.variants.items()
                if not args.only or name in args.only}
    if {"reference", "K=4"} <= measured.keys() and (not args.only or EQUAL_TIME in args.only):
        # the pretraining-time ratio of K=4 to K=2 measured above sets the number of steps
        ratio = measured["K=4"][0]["minutes"] / measured["reference"][0]["minutes"]
        equal = round(steps * ratio)
        measured[EQUAL_TIME] = measure(study, EQUAL_TIME, f"more steps instead of larger K "
                                       f"({equal} steps)", [], equal, args)
    rows = {name: result for name, (result, _) in measured.items()}
    reused = sum(was_reused for _, was_reused in measured.values())
    text = table(study, rows, steps, reused, time.time() - t0, args)
    print(text)
    write_section(args.results, study.section, text)


def table(study: Study, rows: dict[str, dict], steps: int, reused: int, seconds: float,
          args: argparse.Namespace) -> str:
    """The results section: the command, what each row did, and one row per variant."""
    command = "python benchmarks/ablations.py " + shlex.join(sys.argv[1:])  # names have spaces
    seeds = ", ".join(map(str, args.seeds))
    tuned = f", fine-tuning (seed {args.seeds[0]})" if study.fine_tune else ""
    lines = [
        f"## Ablations ({study.title}, one change at a time)",
        "",
        f"Command: `{command.strip()}`. Each variant: the reference recipe ({study.about}; "
        f"`STUDIES['{args.data}'].reference` in the script) with one change, "
        f"{steps} pretraining steps (pretraining seed 0), then kNN (seed {args.seeds[0]}), a "
        f"linear probe (10 labels per class, seeds {seeds}){tuned}. {common.machine()}; "
        f"took {seconds / 60:.1f} min"
        + (f" ({reused} of {len(rows)} pretraining runs read back from finished runs in "
           f"`{common.shown(args.out)}`; their minutes are from their logs)" if reused else "")
        + ".",
        "",
        "| variant | tests | mask PSNR input -> restored (dB) | kNN top-1 | linear probe top-1 |"
        + (" fine-tune top-1 |" if study.fine_tune else "")
        + " pretraining min (from logged img/s) |",
        "| --- | --- | --- | --- | --- |" + (" --- |" if study.fine_tune else "") + " --- |",
    ]
    for r in rows.values():
        std = statistics.stdev(r["probe"]) if len(r["probe"]) > 1 else 0.0
        tuned_cell = f" {r['finetune'][0]:.3f} |" if study.fine_tune else ""
        lines.append(f"| {r['name']} | {r['what']} | {r['psnr_in']:.2f} -> {r['psnr_out']:.2f} | "
                     f"{r['knn']:.3f} | {statistics.mean(r['probe']):.3f} ± {std:.3f} |"
                     f"{tuned_cell} {r['minutes']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
