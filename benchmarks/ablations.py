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

FMNIST_K1 = Study(
    title="Fashion-MNIST, K=1 recipe", pretrain=PRESETS["fmnist"][0], finetune=PRESETS["fmnist"][1],
    # configs/pretrain/fmnist-tiny.yaml as shipped since the first Fashion-MNIST ablation
    reference=("model.energy_head=sqnorm", "model.steps=1", "model.learn_step_sizes=true",
               "model.depth=4", "corrupt.tasks=[mask, noise, sr, shuffle]",
               "corrupt.mask.ratio=0.75", "train.base_lr=8.0e-3", "loss.reduction=pooled"),
    about="`configs/pretrain/fmnist-tiny.yaml` as shipped: sqnorm head, K=1, learned step "
          "sizes, mask 75 % + noise + sr + shuffle, base lr 8e-3",
    variants={
        "reference": ("the shipped K=1 recipe", []),
        "recon head": ("energy head: half the squared distance from x to N(x)",
                       ["model.energy_head=recon"]),
        "lr x2": ("learning rate (base lr 1.6e-2)", ["train.base_lr=1.6e-2"]),
        "lr x4": ("learning rate (base lr 3.2e-2)", ["train.base_lr=3.2e-2"]),
        "mask 90 %": ("mask ratio", ["corrupt.mask.ratio=0.9"]),
        "per-image log loss": ("loss: mean over images of log(error), so easy images weigh as "
                               "much as hard ones", ["loss.reduction=per_image_log"]),
    },
    steps=1000, section="ablations_fmnist_k1", out=common.ROOT / "runs" / "ablations_fmnist_k1",
    fine_tune=True)

STUDIES = {"digits": DIGITS, "fmnist": FMNIST, "fmnist-k1": FMNIST_K1}

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


def variant_dir(root: Path, name: str, seed: int = 0) -> Path:
    """A variant's folder; pretraining seeds other than 0 get their own beside it."""
    base = name.replace(" ", "-").replace("=", "").replace(",", "").replace("'", "").replace(
        "%", "pct")
    return root / (base if seed == 0 else f"{base}-seed{seed}")


def measure(study: Study, name: str, what: str, overrides: list[str], steps: int,
            args: argparse.Namespace, seed: int = 0) -> tuple[dict, bool]:
    """Pretrain one variant (pretraining seed ``seed``) and measure it: ``(result, whether its
    pretraining was read back)``. Finished runs (pretraining and arms) of the same config and
    checkpoint are read back; the result is also written to the variant's ``result.json``."""
    from enfold.config import load_config, to_dict
    from enfold.pipeline.pretrain import run_pretrain
    from enfold.pipeline.progress import read_metrics

    out = variant_dir(args.out, name, seed)
    # the PSNR is always of the mask task (every variant trains on it); seed 0 adds no override,
    # so the runs made before pretraining seeds existed are read back
    seeded = [f"train.seed={seed}"] if seed else []
    cfg = load_config(study.pretrain, [f"train.max_steps={steps}", *study.eval_overrides(steps),
                                       *study.reference, *overrides, *seeded])
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
    result = {"name": name, "what": what, "steps": steps, "pretrain_seeds": [seed],
              "psnr_in": psnr["eval/mask/psnr_input"],
              "psnr_out": psnr["eval/mask/psnr_restored"], "knn": knn, "probe": probe,
              "finetune": finetune, "minutes": minutes}
    (out / "result.json").write_text(json.dumps(
        {"key": {"config": to_dict(cfg), "seeds": args.seeds}, "result": result}, indent=2))
    print(f"{name}: psnr {result['psnr_out']:.2f} knn {knn:.4f} "
          f"linear {statistics.mean(probe):.4f}"
          + (f" fine-tune {finetune[0]:.4f}" if finetune else ""), flush=True)
    return result, reused


def over_seeds(results: list[dict]) -> dict:
    """One row from a variant's runs at several pretraining seeds: each measure becomes the
    list of its per-seed values (the probe's own seeds averaged first), so the table shows the
    mean ± std over pretraining seeds."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    return {**first, "pretrain_seeds": [r["pretrain_seeds"][0] for r in results],
            "psnr_in": statistics.mean(r["psnr_in"] for r in results),
            "psnr_out": statistics.mean(r["psnr_out"] for r in results),
            "knn": [r["knn"] for r in results],
            "probe": [statistics.mean(r["probe"]) for r in results],
            "finetune": [r["finetune"][0] for r in results if r["finetune"]],
            "minutes": statistics.mean(r["minutes"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(STUDIES), default="digits",
                        help="which study: its reference recipe, variants and folders")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretraining steps per variant (default: the study's, 300 for "
                        "digits, 500 for fmnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only")
    parser.add_argument("--confirm", nargs="*", default=[],
                        help="also pretrain these variants at --confirm-seeds (their rows show "
                             "the mean ± std over pretraining seeds)")
    parser.add_argument("--confirm-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="default runs/ablations[_fmnist]")
    parser.add_argument("--results", type=Path, default=common.ROOT / "docs" / "RESULTS.md")
    args = parser.parse_args()
    study = STUDIES[args.data]
    args.out = args.out or study.out
    steps = args.steps or study.steps
    unknown = (set(args.only or ()) | set(args.confirm)) - {*study.variants, EQUAL_TIME}
    if unknown:
        parser.error(f"--only: no variant named {', '.join(sorted(unknown))} in the {args.data} "
                     f"study; choose from {', '.join(study.variants)}")

    t0 = time.time()
    measured = {}
    for name, (what, overrides) in study.variants.items():
        if args.only and name not in args.only:
            continue
        seeds = args.confirm_seeds if name in args.confirm else [0]
        runs = [measure(study, name, what, overrides, steps, args, seed) for seed in seeds]
        measured[name] = (over_seeds([r for r, _ in runs]), all(done for _, done in runs))
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
        f"{steps} pretraining steps (pretraining seed 0 unless the row says more), then kNN "
        f"(seed {args.seeds[0]}), a "
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
        tuned_cell = f" {common.fmt_seeds(r['finetune'])} |" if study.fine_tune else ""
        knn = r["knn"] if isinstance(r["knn"], list) else [r["knn"]]
        seeds = r.get("pretrain_seeds", [0])
        name = r["name"] + (f" (pretraining seeds {', '.join(map(str, seeds))})"
                            if len(seeds) > 1 else "")
        lines.append(f"| {name} | {r['what']} | {r['psnr_in']:.2f} -> {r['psnr_out']:.2f} | "
                     f"{common.fmt_seeds(knn)} | {mean_std(r['probe'])} |"
                     f"{tuned_cell} {r['minutes']:.1f} |")
    if any(len(r.get("pretrain_seeds", [0])) > 1 for r in rows.values()):
        lines += ["", "Rows with several pretraining seeds: each measure is the mean ± std over "
                  "those seeds (the probe's own seeds averaged first); the other rows are "
                  "pretraining seed 0, with the probe's mean ± std over its seeds."]
    return "\n".join(lines)


def mean_std(values: list[float]) -> str:
    """``mean ± std`` of one or more values (std 0 for one)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


if __name__ == "__main__":
    main()
